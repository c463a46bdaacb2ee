from __future__ import annotations

import json

from llmrank.serve.export import export_student

NAME = "export"
HELP = "Merge a student's LoRA and write what vLLM needs to serve it (/rerank for pointwise students)."


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="a student folder: runs/<name>/distill/adapter or …/merged")
    p.add_argument("-o", "--output", required=True, help="export folder")
    p.add_argument("--dtype", default="bfloat16", help="dtype of the exported weights (bfloat16 | float32)")


def run(args) -> int:
    info = export_student(args.checkpoint, args.output, args.dtype)
    print(json.dumps(info, indent=1))
    return 0
