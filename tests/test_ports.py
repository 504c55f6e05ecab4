"""The tests' port claims (tests/support/ports.py): two processes never hold the same port."""

from __future__ import annotations

import subprocess
import sys

from launcher.servers import redis_process
from tests.support import ports
from tests.support.launcher_cli import launcher_env


HOLDER = """
import sys
from tests.support import ports
ports._next = int(sys.argv[2])
print(" ".join(str(ports.free_port()) for _ in range(int(sys.argv[1]))), flush=True)
sys.stdin.read()  # hold the claims until the test closes stdin
ports.release_ports()
"""


def test_servers_take_their_ports_from_the_claims():
    assert redis_process.free_port is ports.free_port


def test_a_port_claimed_by_another_process_is_never_handed_out_and_ports_stay_below_the_ephemeral_range():
    # Both start at the same port, as two processes' random starts may: without the claims both would take the same 300.
    start = ports.free_port() + 1
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "300", str(start)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=launcher_env())
    try:
        theirs = {int(p) for p in holder.stdout.readline().split()}
        assert len(theirs) == 300
        ports._next = start
        ours = {ports.free_port() for _ in range(300)}
        assert len(ours) == 300 and not ours & theirs
        assert max(ours | theirs) < ports._ephemeral_low() and min(ours | theirs) >= ports.FIRST
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    # Released at the holder's end: its lock files are gone.
    assert not any((ports.LOCK_DIR / str(p)).exists() for p in theirs)
