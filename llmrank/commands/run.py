from __future__ import annotations

from llmrank.recipe import load_recipe
from llmrank.runner import STAGES, Runner

NAME = "run"
HELP = "Carry out a recipe (teach → distill → refine → eval → export), skipping stages already done."


def add_arguments(p) -> None:
    p.add_argument("recipe", help="recipe YAML (see recipes/)")
    p.add_argument("--stage", choices=STAGES, default=None, help="run only this stage")
    p.add_argument("--out", default="runs", help="output root (default: runs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set distill.training.max_steps=10 (repeatable)")


def run(args) -> int:
    Runner(load_recipe(args.recipe, args.overrides), args.out).run(args.stage)
    return 0
