"""llmrank's benchmarks: one module per measurement, run from the repository root with ``python -m``
(``python -m eval.bench_throughput --parts d``). They use llmrank's public API only; what several share
lives here (:mod:`eval.refine_common`). The eval suites (``*.yaml``) beside them are data, not code."""
