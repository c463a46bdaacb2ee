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
    p.add_argument("--rehearse", action="store_true",
                   help="run the whole recipe on this CPU in about a minute: every model replaced by a tiny stand-in, "
                        "a few queries, one training step; outputs under OUT/<name>-REHEARSAL/ (llmrank.rehearse)")


def run(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    if args.rehearse:
        import sys

        from llmrank.rehearse import rehearsal_recipe

        recipe, replaced = rehearsal_recipe(recipe)
        print(f"REHEARSAL of {args.recipe}: {len(replaced)} replacements", file=sys.stderr)
        for line in replaced:
            print(f"  {line}", file=sys.stderr)
    Runner(recipe, args.out, where=args.recipe).run(args.stage)
    return 0
