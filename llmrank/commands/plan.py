from __future__ import annotations

from llmrank.recipe import load_recipe

NAME = "plan"
HELP = ("Before a run: validate a recipe, resolve its models, and estimate memory per device, teacher prompts and "
        "tokens, time and outputs (llmrank.plan).")


def add_arguments(p) -> None:
    p.add_argument("recipe", help="recipe YAML (see recipes/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, as for llmrank run (repeatable)")
    p.add_argument("--gpu-memory", type=float, default=80.0, metavar="GIB",
                   help="memory of one GPU in GiB (default 80: an H100/A100 80GB)")
    p.add_argument("--rate", type=float, default=None, metavar="TOKENS_PER_S",
                   help="the teacher's prompt tokens/s (measure: python -m eval.bench_throughput --parts d); "
                        "default: FLOPs at --tflops")
    p.add_argument("--gen-rate", type=float, default=None, metavar="TOKENS_PER_S",
                   help="the teacher's generated tokens/s (with --rate)")
    p.add_argument("--tflops", type=float, default=None,
                   help="effective TFLOP/s when no rate is given (default: 400 on a GPU, ~40%% of an H100's bf16 "
                        "peak; 0.2 on a CPU)")
    p.add_argument("--device", choices=("gpu", "cpu"), default=None,
                   help="where the recipe runs (default: gpu when its training asks for bf16, else cpu)")


def run(args) -> int:
    import sys

    from llmrank.plan import build_plan, format_plan
    from llmrank.recipe import check_inputs

    recipe = load_recipe(args.recipe, args.overrides)
    check_inputs(recipe, args.recipe)
    plan = build_plan(recipe, args.recipe, gpu_gib=args.gpu_memory, rate=args.rate, gen_rate=args.gen_rate,
                      tflops=args.tflops, gpu=None if args.device is None else args.device == "gpu")
    print(format_plan(plan, recipe))
    for p in plan["problems"]:
        print(f"llmrank plan: error: {p}", file=sys.stderr)
    return 2 if plan["problems"] else 0
