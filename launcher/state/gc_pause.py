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
# True once `StartupHeap.settle` froze the start's objects (until `thaw`). `gc.get_freeze_count()`
# walks every frozen object (CPython 3.12), millions after a large start: too dear per `gc_paused`.
_heap_frozen = False


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
            if not _heap_frozen and gc.get_freeze_count() in (0, _FROZEN_AT_IMPORT):  # nobody froze objects
                # Everything allocated during the pause sits in the youngest generation, and the
                # next young collection would walk all of it (~20 ms per 10k orders). Loaded
                # state is long-lived: move it to the oldest generation at once (freeze +
                # unfreeze splice the generation lists; the interpreter's own few hundred
                # start-up tuples end up there too). Skipped if the process froze objects itself.
                gc.freeze()
                gc.unfreeze()
            gc.enable()


class StartupHeap:
    """
    The cyclic garbage collector off while a start builds the node's state, then everything
    alive frozen (``gc.freeze``: moved where no later collection walks it).

    A start with a large state builds hundreds of thousands of long-lived objects (the decoded
    events, the node's orders and positions); each full collection meanwhile walks all of them
    (0.3-0.5 s at 100k orders, two before RUNNING), and each one later walks them again while
    the node trades. `pause` before the load; `settle` once the node is RUNNING: the collector
    comes back on for what trading allocates only. Frozen objects
    are still freed when their last reference goes; only garbage in a reference cycle at that
    moment is kept for good (measured: ~1,500 objects, ~160 kB, from composing the config), so
    start-up code must not leave large cycles (``EventDecoder`` keeps none).
    """

    def __init__(self) -> None:
        self._paused = False
        self._was_enabled = True

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> StartupHeap:
        if not self._paused:
            self._was_enabled = gc.isenabled()
            gc.disable()
            self._paused = True
        return self

    def settle(self) -> int:
        """Freeze what the start built and turn the collector back on (once; no collection); how many are frozen."""
        global _heap_frozen
        if self._paused:
            gc.freeze()
            _heap_frozen = True
            self.resume()
        return gc.get_freeze_count()

    def thaw(self) -> None:
        """Unfreeze what `settle` froze (a process that goes on after its node, such as a test run)."""
        global _heap_frozen
        gc.unfreeze()
        _heap_frozen = False

    def resume(self) -> None:
        """Collector back on, nothing frozen (a start that failed or stopped early)."""
        if self._paused:
            self._paused = False
            if self._was_enabled:
                gc.enable()
