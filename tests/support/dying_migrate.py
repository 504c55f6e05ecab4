"""
``python -m tests.support.dying_migrate [overrides...]``: ``python -m launcher`` whose
``mode=migrate`` SIGKILLs its own process before copying chunk ``DIE_AT_CHUNK`` (env, 1-based;
chunks of ``CHUNK_KEYS`` keys): a migration that dies part-way, with no chance to clean up.
"""

from __future__ import annotations

import os
import signal

from launcher.bootstrap import migrate
from launcher.cli import App
from launcher.cli import main
from launcher.config.compose import CONFIG_NAME
from launcher.config.compose import to_settings
from launcher.config.schema import register


def _dying_copy(copy):
    def wrapped(source, target, keys, renamed, replica_acks, check_leases):
        chunks = []

        def check() -> None:
            chunks.append(1)
            if len(chunks) == int(os.environ["DIE_AT_CHUNK"]):
                os.kill(os.getpid(), signal.SIGKILL)
            check_leases()

        return copy(source, target, keys, renamed, replica_acks, check)

    return wrapped


def _execute(settings) -> int:
    from launcher.session import execute

    return execute(settings)


if __name__ == "__main__":
    migrate.CHUNK = int(os.environ.get("CHUNK_KEYS", "5"))
    migrate._copy = _dying_copy(migrate._copy)
    main(App(CONFIG_NAME, register, to_settings, _execute))
