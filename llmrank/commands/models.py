from __future__ import annotations

from llmrank.models import list_models, prepare_model

NAME = "models"
HELP = "List the embedded default models, or prepare one (GGUF → cached safetensors checkpoint)."


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="show the aliases, whether installed and prepared, and where")
    prep = sub.add_parser("prepare", help="convert an embedded GGUF model once into a transformers/vLLM checkpoint")
    prep.add_argument("name", help="alias, e.g. smollm2-135m or gemma3-270m")
    prep.add_argument("--force", action="store_true", help="prepare again even if cached")


def run(args) -> int:
    if args.action == "list":
        rows = list_models()
        width = max(len(r["alias"]) for r in rows)
        for r in rows:
            state = "prepared" if r["prepared"] else ("installed" if r["installed"] else "not installed")
            print(f"{r['alias']:<{width}}  {state:<13}  {r['description']}  {r['path'] if r['prepared'] else ''}")
        return 0
    print(prepare_model(args.name, force=args.force))
    return 0
