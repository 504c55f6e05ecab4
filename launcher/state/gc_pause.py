"""
`gc_paused`: the cyclic garbage collector paused while a bulk load builds long-lived objects
(the resilient backend's loads, and the launcher's verify pass).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


# Objects the interpreter itself keeps frozen (CPython 3.12 freezes some at start-up; 0 once
# `gc_paused` moved them).
_FROZEN_AT_IMPORT = gc.get_freeze_count()


@contextmanager
def gc_paused() -> Iterator[None]:
    """
    Pause the cyclic garbage collector during a bulk load: it builds tens of thousands of
    long-lived, acyclic objects, and the generation-0 collections their allocations trigger
    scan an ever larger heap (about a third of the load time otherwise).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() in (0, _FROZEN_AT_IMPORT):  # nobody else froze objects
                # Everything allocated during the pause sits in the youngest generation, and the
                # next young collection would walk all of it (~20 ms per 10k orders). Loaded
                # state is long-lived: move it to the oldest generation at once (freeze +
                # unfreeze splice the generation lists; the interpreter's own few hundred
                # start-up tuples end up there too). Skipped if the process froze objects itself.
                gc.freeze()
                gc.unfreeze()
            gc.enable()
