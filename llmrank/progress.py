"""Periodic progress lines for long per-query loops (evaluation, refinement), for logs (stderr not a terminal,
where tqdm is off).

``ProgressLines(label, total)`` is an ``on_ranking(qid, ranking)`` callback for ``Reranker.rerank_all``: it
prints ``[eval] scifact-test student: 12/40 queries, 1.9 s/query, about 53 s left`` to stderr at most every
``every_s`` seconds, and always for the first and the last query, so a log shows the loop is alive and when
it will end.
"""

from __future__ import annotations

import sys
import time


class ProgressLines:
    def __init__(self, label: str, total: int, every_s: float = 30.0, stream=None, clock=time.monotonic):
        self.label, self.total, self.every_s = label, total, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.start = clock()
        self.done = 0
        self._last: float | None = None

    def __call__(self, qid=None, ranking=None) -> None:
        self.done += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.every_s and self.done not in (1, self.total):
            return
        self._last = now
        per = (now - self.start) / self.done
        left = per * max(self.total - self.done, 0)
        print(f"{self.label}: {self.done}/{self.total} queries, {per:.1f} s/query"
              + (f", about {left:.0f} s left" if self.done < self.total else ", done"),
              file=self.stream, flush=True)
