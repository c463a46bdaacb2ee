"""Many queries in flight: the scheduler that drives ranking algorithms written as step generators.

A :class:`StepReranker` writes its algorithm once, as a generator ``steps(query, docs, cost)`` that yields
the request it needs next (a :class:`~llmrank.backends.base.ScoreRequest` or
:class:`~llmrank.backends.base.GenerateRequest`: all pairs of a pointwise query, one comparison of a heap,
one listwise window …), receives its answer, and finally returns the :class:`Ranking`. ``cost`` is a
Counter the driver fills with the backend counters that the query's requests caused, before each answer is
sent, so the generator builds its cost exactly as a one-query-at-a-time loop would.

- :func:`drive` runs one query alone (``Reranker.rerank``);
- :func:`run_in_flight` keeps up to ``in_flight`` queries going and, wave after wave, sends the backend the
  union of their pending requests in one :meth:`~llmrank.backends.base.Backend.run_requests` call (hf:
  length-bucketed batches mixing queries, prefix KV kept per request; vLLM offline: one engine call per
  wave; OpenAI-compatible: concurrent HTTP requests across queries). A query that finishes is replaced by
  the next one at once, so the wave stays full.

Because each query's generator sees exactly the answers it would get alone, rankings and comparison counts
do not depend on how many queries are in flight (up to the float noise of batch composition). A teacher run
then holds up to ``in_flight`` queries in progress: a killed run loses those, and resumes them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable

from llmrank.rerankers.base import Ranking, Reranker

log = logging.getLogger(__name__)

Steps = Generator[object, object, Ranking]


class StepReranker(Reranker):
    """A reranker whose algorithm is the step generator :meth:`steps`; ``rerank`` drives it alone and
    ``rerank_all`` in flight with other queries."""

    backend = None

    def steps(self, query, docs, cost: Counter) -> Steps:  # pragma: no cover - abstract
        raise NotImplementedError

    def rerank(self, query, docs) -> Ranking:
        return drive(self, query, docs)

    def _steps_are_the_algorithm(self) -> bool:
        """False for a subclass that overrides ``rerank`` without ``steps`` (it is then run one query at a time)."""
        for klass in type(self).__mro__:
            if "steps" in klass.__dict__:
                return True
            if "rerank" in klass.__dict__:
                return False
        return False

    def _rank_jobs(self, jobs, done) -> None:
        n = self.in_flight or getattr(self.backend, "default_in_flight", 1) or 1
        if n > 1 and len(jobs) > 1 and self._steps_are_the_algorithm():
            run_in_flight(self, jobs, n, done)
        else:
            super()._rank_jobs(jobs, done)


def _send(gen: Steps, answer):
    if isinstance(answer, BaseException):
        return gen.throw(answer)
    return gen.send(answer)


def drive(reranker: StepReranker, query, docs) -> Ranking:
    """One query's steps, each request answered by the backend as it comes."""
    cost: Counter = Counter()
    gen = reranker.steps(query, docs, cost)
    try:
        request = next(gen)
        while True:
            (answer, c), = reranker.backend.run_requests([request])
            cost.update(c)
            request = _send(gen, answer)
    except StopIteration as stop:
        return stop.value


def run_steps(steps: Steps, backend) -> object:
    """Run any step generator (not a whole query: e.g. one comparison) against ``backend``; its return value."""
    try:
        request = next(steps)
        while True:
            (answer, _), = backend.run_requests([request])
            request = _send(steps, answer)
    except StopIteration as stop:
        return stop.value


class _Job:
    __slots__ = ("key", "gen", "cost", "request", "t0")

    def __init__(self, key, gen, cost):
        self.key, self.gen, self.cost, self.request, self.t0 = key, gen, cost, None, time.perf_counter()


def run_in_flight(reranker: StepReranker, jobs: Iterable[tuple[object, object, list]], in_flight: int,
                  on_done: Callable[[object, Ranking], None]) -> dict[str, float]:
    """Rank every ``(key, query, docs)`` of ``jobs`` with up to ``in_flight`` queries at a time.

    ``on_done(key, ranking)`` is called as each query finishes (in finishing order). Returns wave
    statistics: ``waves``, ``requests``, ``prompts`` and the mean ``prompts_per_wave``.
    """
    backend = reranker.backend
    queue = iter(jobs)
    active: list[_Job] = []
    stats = Counter()

    def finish(job: _Job, ranking: Ranking) -> None:
        if not ranking.cost.get("seconds"):
            ranking.cost["seconds"] = time.perf_counter() - job.t0
        on_done(job.key, ranking)

    def step(job: _Job, answer) -> None:
        try:
            job.request = next(job.gen) if answer is _START else _send(job.gen, answer)
            active.append(job)
        except StopIteration as stop:
            finish(job, stop.value)

    exhausted = False
    while True:
        while not exhausted and len(active) < in_flight:
            try:
                key, query, docs = next(queue)
            except StopIteration:
                exhausted = True
                break
            cost: Counter = Counter()
            step(_Job(key, reranker.steps(query, docs, cost), cost), _START)
        if not active:
            break
        wave, active = active, []
        answers = backend.run_requests([j.request for j in wave])
        stats["waves"] += 1
        stats["requests"] += len(wave)
        stats["prompts"] += sum(len(j.request.prompts) for j in wave)
        for job, (answer, c) in zip(wave, answers):
            job.cost.update(c)
            step(job, answer)
    out = {k: float(v) for k, v in stats.items()}
    out["prompts_per_wave"] = stats["prompts"] / max(1, stats["waves"])
    log.debug("scheduler: %s", out)
    return out


_START = object()
