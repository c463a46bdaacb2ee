from __future__ import annotations

import json

from llmrank.checks import dtype_name
from llmrank.serve.export import export_student

NAME = "export"
HELP = "Merge a student's LoRA and write what vLLM needs to serve it (/rerank for pointwise students)."


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="a student folder: runs/<name>/distill/adapter or …/merged")
    p.add_argument("-o", "--output", required=True,
                   help="export folder: created, or replaced when it is an earlier llmrank export (never a folder "
                        "of yours, nor one holding the student)")
    p.add_argument("--dtype", type=dtype_name, default="bfloat16",
                   help="dtype of the exported weights (bfloat16 | float32)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output even if it is not an llmrank export (it must still not hold the student)")


def run(args) -> int:
    info = export_student(args.checkpoint, args.output, args.dtype, overwrite=args.overwrite)
    print(json.dumps(info, indent=1))
    return 0
