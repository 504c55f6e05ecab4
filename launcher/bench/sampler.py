"""
A small statistical profiler for every Python thread of this process (the resilient backend's
writer thread included, which cProfile does not see): every `interval_s` it looks at each
thread's current frame and counts the innermost function ("self") and every function on the
stack ("total"); threads blocked in a ``wait`` (idle, waiting for work) are left out. The
result names what dominates a phase, for the backend's owner to act on.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Any


_IDLE = ("(wait)", "(_wait_for_tstate_lock)", "(select)")


class Sampler:
    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.samples = 0
        self.idle = 0
        self.self_counts: collections.Counter[str] = collections.Counter()
        self.total_counts: collections.Counter[str] = collections.Counter()
        self.thread_counts: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @staticmethod
    def _name(code) -> str:
        filename = code.co_filename
        for marker in ("site-packages/", "/launcher/", "/strategies/"):
            if marker in filename:
                filename = filename.split(marker, 1)[1] if marker == "site-packages/" else marker.strip("/") + "/" + filename.split(marker, 1)[1]
                break
        return f"{filename}:{code.co_firstlineno}({code.co_name})"

    def _run(self) -> None:
        me = threading.get_ident()
        names = {}
        while not self._stop.wait(self.interval_s):
            for ident, frame in sys._current_frames().items():  # noqa: SLF001
                if ident == me:
                    continue
                if ident not in names:
                    names = {t.ident: t.name for t in threading.enumerate()}
                leaf = self._name(frame.f_code)
                if leaf.endswith(_IDLE):
                    self.idle += 1  # a thread waiting for work is not where time goes
                    continue
                self.samples += 1
                self.thread_counts[names.get(ident, str(ident))] += 1
                self.self_counts[leaf] += 1
                seen = set()
                while frame is not None:
                    name = self._name(frame.f_code)
                    if name not in seen:
                        self.total_counts[name] += 1
                        seen.add(name)
                    frame = frame.f_back

    def top(self, n: int = 10) -> dict[str, Any]:
        total = max(1, self.samples)
        return {
            "samples": self.samples,
            "idle_samples": self.idle,
            "threads": {k: round(v / total, 3) for k, v in self.thread_counts.most_common()},
            "self": [{"function": k, "share": round(v / total, 3)} for k, v in self.self_counts.most_common(n)],
            "total": [{"function": k, "share": round(v / total, 3)} for k, v in self.total_counts.most_common(n)],
        }


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0
