from __future__ import annotations

import json
import sys

from llmrank.checks import dtype_name
from llmrank.serve.export import check_hub, export_student, push_to_hub

NAME = "export"
HELP = "Merge a student's LoRA and write what vLLM needs to serve it (/rerank for pointwise students)."


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="a student folder: runs/<name>/distill/adapter or …/merged")
    p.add_argument("-o", "--output", required=True,
                   help="export folder: created, or replaced when it is an earlier llmrank export (never a folder "
                        "of yours, nor one holding the student)")
    p.add_argument("--dtype", type=dtype_name, default="bfloat16",
                   help="dtype of the exported weights (bfloat16 | float32)")
    p.add_argument("--push-to-hub", metavar="REPO", default=None,
                   help="also upload the export (weights, tokenizer, serve info, model card) to this hub repository "
                        "(owner/name); the hub and credentials are checked before any work")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output even if it is not an llmrank export (it must still not hold the student)")


def run(args) -> int:
    if args.push_to_hub:
        check_hub(args.push_to_hub)
    info = export_student(args.checkpoint, args.output, args.dtype, overwrite=args.overwrite)
    print(json.dumps(info, indent=1))
    if args.push_to_hub:
        print(f"pushed {args.output} to {args.push_to_hub}: {push_to_hub(args.output, args.push_to_hub, args.private)}",
              file=sys.stderr)
    return 0
