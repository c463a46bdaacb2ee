"""``llmrank compare``: prompts × methods × models on the same candidates, with cost, significance, plots
and prompt-injection robustness (see :mod:`llmrank.eval.compare`)."""

from __future__ import annotations

import sys
from pathlib import Path

from llmrank.checks import positive_int, resamples
from llmrank.commands.rerank import add_data_arguments
from llmrank.errors import LlmrankError

NAME = "compare"
HELP = ("Compare prompts, methods and models on one dataset's candidates: nDCG@10, MRR@10, recall, cost, "
        "paired significance against a baseline, plots, and prompt-injection robustness (--attack injection).")


def add_arguments(p) -> None:
    add_data_arguments(p)
    p.set_defaults(dataset=None)
    p.add_argument("--model", action="append", dest="models", default=None, metavar="M",
                   help="model alias, local path or hub id (repeatable; default smollm2-135m)")
    p.add_argument("--models", nargs="+", dest="more_models", default=[], metavar="M", help="several models at once")
    p.add_argument("--methods", nargs="+", default=["pointwise"], metavar="METHOD",
                   help="ranking methods (pointwise, qlm, pairwise, listwise, setwise, rationale, dense)")
    p.add_argument("--prompts", nargs="+", default=[], metavar="PROMPT",
                   help="prompt names or YAML paths; each method runs with the ones that declare it (else its default)")
    p.add_argument("--backend", default="hf", help="hf | vllm | openai, or an http:// base URL of an OpenAI-compatible server")
    p.add_argument("--dtype", default="bfloat16", help="hf/vllm weights dtype (bfloat16, the fast path on CPU and GPU; float32; auto)")
    p.add_argument("--batch-size", type=int, default=None, help="prompts per forward pass (hf)")
    p.add_argument("--in-flight", type=int, default=None,
                   help="queries ranked at once per cell, their prompts sent together (default: sized for the backend)")
    p.add_argument("--served", action="append", default=[], metavar="URL[=MODEL]",
                   help="a student served by `llmrank serve` as one more cell (repeatable); MODEL: its export dir or name")
    p.add_argument("--baseline", default=None, help="row the others are tested against (a row name, or first_stage; default: the first cell)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the markers (after Holm correction)")
    p.add_argument("--attack", choices=["injection"], default=None, help="also run each cell under prompt injection")
    p.add_argument("--attack-variants", nargs="+", default=["plain", "format", "hidden"],
                   choices=["plain", "format", "hidden"], help="which injection variants (default: all three)")
    p.add_argument("--resamples", type=resamples, default=10000, help="randomization-test resamples (exact up to 16 queries)")
    p.add_argument("--rel-threshold", type=positive_int, default=1, help="grade counted relevant by MRR and recall (TREC DL: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the injection targets and the randomization test")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with a recipe: override a key (e.g. --set compare.queries=5)")
    p.add_argument("-o", "--output", required=True, help="output folder (compare.md, compare.json, plots, cells/)")


def _backend_options(backend: str, dtype: str | None, batch_size: int | None, extra: dict | None = None) -> dict:
    opts = dict(extra or {})
    if backend in ("hf", "vllm") and dtype:
        opts.setdefault("dtype", dtype)
    if backend == "hf" and batch_size:
        opts.setdefault("batch_size", batch_size)
    return opts


def _from_recipe(args):
    from llmrank.eval.compare import Cell, CompareSettings
    from llmrank.recipe import load_recipe

    recipe = load_recipe(args.dataset, args.overrides)
    c = recipe.compare
    if c is None:
        raise LlmrankError(f"{args.dataset}: the recipe has no 'compare:' section")
    extra = [Cell(x.method, x.model, x.prompt, x.backend, _backend_options(x.backend, None, None, x.backend_options),
                  dict(x.options)) for x in c.cells]
    settings = CompareSettings(top_k=c.top_k, baseline=c.baseline, alpha=c.alpha, attack=tuple(c.attack),
                               resamples=c.resamples, seed=recipe.seed, rel_threshold=c.rel_threshold)
    opts = _backend_options(c.backend, None, None, c.backend_options)
    return (c.dataset or recipe.data.dataset, c.split, c.queries, c.first_stage_k, c.models, c.methods, c.prompts,
            c.backend, opts, extra, settings)


def run(args) -> int:
    if args.in_flight is not None and args.in_flight < 1:
        raise LlmrankError(f"--in-flight must be at least 1, got {args.in_flight}")
    from llmrank.data import load_dataset
    from llmrank.data.bm25 import ensure_candidates
    from llmrank.eval.compare import Cell, CellRunner, CompareSettings, compare, expand_cells
    from llmrank.eval.compare_report import write_compare_report

    if args.dataset is None:
        raise LlmrankError("give a dataset (or a recipe with a 'compare:' section)")
    if args.dataset.endswith((".yaml", ".yml")):
        dataset, split, queries, fs_k, models, methods, prompts, backend, opts, extra, settings = _from_recipe(args)
    else:
        if args.overrides:
            raise LlmrankError("--set applies to a recipe; give the options directly for a dataset")
        dataset, split, queries, fs_k = args.dataset, args.split, args.queries, args.first_stage_k
        models = list(args.models or []) + list(args.more_models)
        if not models and not args.served:
            models = ["smollm2-135m"]
        methods, prompts, backend = args.methods, args.prompts, args.backend
        opts = _backend_options(backend, args.dtype, args.batch_size)
        extra = []
        for spec in args.served:
            url, _, model = spec.partition("=")
            if not url.startswith(("http://", "https://")):
                raise LlmrankError(f"--served {spec}: give the server's URL, http://HOST:PORT[=MODEL]")
            extra.append(Cell("served", model or None, None, url))
        if args.alpha <= 0 or args.alpha >= 1:
            raise LlmrankError(f"--alpha {args.alpha}: a significance level lies strictly between 0 and 1")
        settings = CompareSettings(top_k=args.top_k, baseline=args.baseline, alpha=args.alpha,
                                   attack=tuple(args.attack_variants) if args.attack else (),
                                   resamples=args.resamples, seed=args.seed, rel_threshold=args.rel_threshold)
    if settings.top_k < 1:
        raise LlmrankError(f"--top-k {settings.top_k}: rerank at least one candidate")
    # everything that can be wrong with the cells is checked before any data or model loads
    cells = expand_cells(models, methods, prompts, backend, opts, extra)
    out = Path(args.output)
    from llmrank.outputs import begin_dir, check_output, record_dir

    if out.exists() and not out.is_dir():
        raise LlmrankError(f"{out}: exists and is not a folder")
    check_output(out, "compare", inputs=[dataset], can_overwrite=False)  # writable, and no file in it but llmrank's, before any scoring
    data = load_dataset(dataset, split).first_queries(queries)
    first = ensure_candidates(data, fs_k, show_progress=sys.stderr.isatty()).subset(data.queries)
    runner = CellRunner(in_flight=args.in_flight)
    begin_dir(out, "compare")
    result = compare(data, first, cells, out, settings, runner)
    print(write_compare_report([result], out))
    record_dir(out, "compare")
    print(f"[compare] {runner.computed_queries} query rankings computed now; the rest came from {out / 'cells'}",
          file=sys.stderr)
    return 0
