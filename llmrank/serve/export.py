"""Export a student so that vLLM serves it: the LoRA merged into the base, saved in the export dtype, with
``llmrank_serve.json`` (how to run it) and ``llmrank_student.json`` (what it is).

What the server needs besides the weights is the student kind's business
(:meth:`llmrank.students.base.Student.export`): a pointwise student becomes a reranker on ``/rerank`` and
``/score`` (vLLM's ``from_2_way_softmax`` over its own yes/no token pair, and a chat template made from the
one prompt builder); a reasoning student is exported for generation with the parse rule it was trained with.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SERVE_FILE = "llmrank_serve.json"
SCORE_TEMPLATE = "score_template.jinja"


def export_student(student_dir: str | Path, out_dir: str | Path, dtype: str = "bfloat16", overwrite: bool = False) -> dict:
    """Merge LoRA into the base, save safetensors + tokenizer + the vLLM serving config under ``out_dir``.

    ``out_dir`` is built beside itself and renamed into place; an existing ``out_dir`` is replaced only
    when it is an llmrank export (or ``overwrite``), never when it holds or lies inside the student."""
    from llmrank.backends.hf import resolve_dtype
    from llmrank.outputs import check_output, publish_dir, temp_dir
    from llmrank.students import STUDENT_FILE, get_student, load_student_model, read_meta

    src, out = Path(student_dir), Path(out_dir)
    resolve_dtype(dtype)
    student = get_student(read_meta(src).get("kind", "pointwise"))
    check_output(out, "export", overwrite=overwrite, inputs=[src])
    model, tok, meta = load_student_model(src, "float32")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model = model.to(resolve_dtype(dtype))
    tmp = temp_dir(out)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.copy(src / STUDENT_FILE, tmp / STUDENT_FILE)
        info: dict = {"kind": student.kind, "model_dir": str(out), "dtype": dtype,
                      "max_doc_tokens": meta.get("max_doc_tokens")}
        info.update(student.export(src, tmp, meta, model, tok))
        (tmp / SERVE_FILE).write_text(json.dumps(info, indent=1))
        publish_dir(tmp, out, "export")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info
