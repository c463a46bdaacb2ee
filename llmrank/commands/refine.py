from __future__ import annotations

import sys

from llmrank.errors import LlmrankError

NAME = "refine"
HELP = "Refine a recipe's distilled student with GRPO (ranking rewards) or DPO (ranking preferences)."


def add_arguments(p) -> None:
    p.add_argument("recipe", help="a recipe YAML with a 'refine' section: runs its teach, distill and refine stages "
                                  "(each skipped when up to date)")
    p.add_argument("--out", default="runs", help="output root (default: runs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. refine.training.max_steps=20")


def run(args) -> int:
    from llmrank.recipe import load_recipe
    from llmrank.runner import Runner

    runner = Runner(load_recipe(args.recipe, args.overrides), out_dir=args.out)
    if runner.recipe.refine is None:
        raise LlmrankError(f"{args.recipe}: the recipe has no 'refine' section (method: grpo or dpo)")
    for stage in ("teach", "distill", "refine"):
        runner.run(stage)
    print(f"refined student: {runner.stage_dir('refine') / 'adapter'} and {runner.refined_dir()}", file=sys.stderr)
    return 0
