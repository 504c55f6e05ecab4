"""
Imported first by every ``__main__``: a Ctrl-C while the entry point imports (Hydra, NautilusTrader:
about half a second) ends the process as the signal does (status 130), not with a
``KeyboardInterrupt`` traceback from inside an import. ``cli.main`` hands SIGINT back to Python.
"""

from __future__ import annotations

import signal


# Only Python's own handler is replaced: SIGINT ignored on entry (a background job) stays ignored.
if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
