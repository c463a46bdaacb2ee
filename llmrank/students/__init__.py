"""Students: the small models llmrank trains. One module per kind, and a registry.

==========  ==========================================  ==============================================
kind        module                                      what it is
==========  ==========================================  ==============================================
pointwise   :mod:`llmrank.students.pointwise`           yes/no scorer trained on ranking losses
reasoning   :mod:`llmrank.students.reasoning`           explanation + verdict, trl SFT on rationales
==========  ==========================================  ==============================================

A new kind is a new module with a :class:`~llmrank.students.base.Student` subclass plus one line in
:data:`STUDENT_KINDS`. The runner, eval, export and the CLI ask this layer (:func:`get_student`,
:func:`load_student`) and never switch on the kind themselves.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path

from llmrank.errors import LlmrankError
from llmrank.students.base import STUDENT_FILE, Student, is_student_dir, read_meta

STUDENT_KINDS = {
    "pointwise": "llmrank.students.pointwise:PointwiseStudent",
    "reasoning": "llmrank.students.reasoning:ReasoningStudent",
}

__all__ = ["STUDENT_FILE", "STUDENT_KINDS", "Student", "get_student", "is_student_dir", "load_student",
           "load_student_model", "read_meta"]


def get_student(kind: str) -> type[Student]:
    """The student class registered as ``kind``."""
    if kind not in STUDENT_KINDS:
        close = difflib.get_close_matches(str(kind), list(STUDENT_KINDS), n=1)
        raise LlmrankError(f"unknown student kind '{kind}'" + (f"; did you mean '{close[0]}'?" if close else "")
                           + f" (one of {', '.join(STUDENT_KINDS)})")
    module, cls = STUDENT_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), cls)


def load_student_model(path: str | Path, dtype: str = "float32"):
    """``(model, tokenizer, meta)`` of a saved student: an adapter folder (LoRA on its recorded base) or a
    merged folder (or an export); anything else is a clear error."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrank.backends.hf import resolve_dtype

    path = Path(path)
    meta = read_meta(path)
    tok = AutoTokenizer.from_pretrained(path)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(meta["base_model"], dtype=resolve_dtype(dtype))
        model = PeftModel.from_pretrained(base, path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype))
    return model, tok, meta


def load_student(path: str | Path, dtype: str = "float32", **backend_options):
    """A saved student (adapter dir, merged dir or export) as the Reranker it was trained to be: the
    same prompt, answer tokens, document length and scoring as in training."""
    meta = read_meta(path)
    student = get_student(meta.get("kind", "pointwise"))
    model, tok, meta = load_student_model(path, dtype)
    return student.reranker(model, tok, meta, Path(path), dtype, **backend_options)
