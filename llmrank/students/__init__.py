"""Students: the small models llmrank trains. One module per kind, and a registry.

==========  ==========================================  ==============================================
kind        module                                      what it is
==========  ==========================================  ==============================================
pointwise   :mod:`llmrank.students.pointwise`           yes/no scorer trained on ranking losses
reasoning   :mod:`llmrank.students.reasoning`           explanation + verdict, trl SFT on rationales
bi-encoder  :mod:`llmrank.students.biencoder`           sentence-transformers embeddings; also a first stage
cross-      :mod:`llmrank.students.cross_encoder`       BERT-style classifier over (query, document),
encoder                                                 sentence-transformers CrossEncoder layout
==========  ==========================================  ==============================================

A new kind is a new module with a :class:`~llmrank.students.base.Student` subclass plus one line in
:data:`STUDENT_KINDS` — or, from outside the package, one call of :func:`register_student`; the recipe's
``distill`` section of the kind is made from its ``fields`` when the next recipe loads. The runner, eval, export and the CLI ask this layer (:func:`get_student`,
:func:`load_student`) and never switch on the kind themselves.
"""

from __future__ import annotations

import difflib
import json
import importlib
from pathlib import Path

from llmrank.errors import LlmrankError
from llmrank.students.base import STUDENT_FILE, Student, is_student_dir, read_meta

STUDENT_KINDS: dict[str, str | type[Student]] = {
    "pointwise": "llmrank.students.pointwise:PointwiseStudent",
    "reasoning": "llmrank.students.reasoning:ReasoningStudent",
    "bi-encoder": "llmrank.students.biencoder:BiEncoderStudent",
    "cross-encoder": "llmrank.students.cross_encoder:CrossEncoderStudent",
}
"""kind -> its :class:`Student` subclass, as ``"module:Class"`` (imported when asked for) or the class."""

__all__ = ["STUDENT_FILE", "STUDENT_KINDS", "Student", "get_student", "is_student_dir", "load_student",
           "load_student_model", "read_meta", "register_student", "student_kind", "student_reranker"]


def register_student(student: type[Student] | str, kind: str | None = None) -> None:
    """Register a student kind: a :class:`Student` subclass (its ``kind`` names it) or ``"module:Class"``
    with ``kind``. Recipes may then say ``distill: {kind: <kind>, …}``."""
    if isinstance(student, str):
        if not kind or ":" not in student:
            raise LlmrankError(f"register_student({student!r}): give 'module:Class' and the kind it registers")
    else:
        if not (isinstance(student, type) and issubclass(student, Student)):
            raise LlmrankError(f"register_student: {student!r} is not a Student subclass")
        if kind is not None and kind != student.kind:
            raise LlmrankError(f"register_student: {student.__name__}.kind is {student.kind!r}, not {kind!r}")
        kind = student.kind
    if not kind or not kind.replace("-", "_").isidentifier():
        raise LlmrankError(f"register_student: a student kind is a name such as 'pointwise' or 'bi-encoder' (got {kind!r})")
    STUDENT_KINDS[kind] = student


def get_student(kind: str) -> type[Student]:
    """The student class registered as ``kind``."""
    if kind not in STUDENT_KINDS:
        close = difflib.get_close_matches(str(kind), list(STUDENT_KINDS), n=1)
        raise LlmrankError(f"unknown student kind '{kind}'" + (f"; did you mean '{close[0]}'?" if close else "")
                           + f" (one of {', '.join(STUDENT_KINDS)})")
    target = STUDENT_KINDS[kind]
    if isinstance(target, type):
        return target
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def student_kind(path: str | Path) -> str:
    """The kind a saved student's ``llmrank_student.json`` records, checked against :data:`STUDENT_KINDS`
    (an error names the file and the key)."""
    meta = read_meta(path)
    kind = meta.get("kind", "pointwise")
    if kind not in STUDENT_KINDS:
        raise LlmrankError(f"{Path(path) / STUDENT_FILE}: key 'kind': {kind!r} is not a student kind (one of "
                           f"{', '.join(STUDENT_KINDS)}); the file is damaged or was not written by llmrank")
    return kind


def load_student_model(path: str | Path, dtype: str = "float32"):
    """``(model, tokenizer, meta)`` of a saved student: an adapter folder (LoRA on its recorded base) or a
    merged folder (or an export), loaded by its kind (:meth:`Student.load`: a damaged or half-copied student
    is named); anything else is a clear error."""
    return get_student(student_kind(path)).load(path, dtype)


def load_student(path: str | Path, dtype: str = "float32", **backend_options):
    """A saved student (adapter dir, merged dir or export) as the Reranker it was trained to be: the
    same prompt, answer tokens, document length and scoring as in training."""
    student = get_student(student_kind(path))
    model, tok, meta = student.load(path, dtype)
    return student.reranker(model, tok, meta, Path(path), dtype, **backend_options)


def student_meta(student_dir: str | Path) -> tuple[Path, dict]:
    """``(folder, metadata)`` of a saved student: the folder holding ``llmrank_student.json`` — the given one,
    or its ``merged/`` or ``adapter/`` (a distill run's output folder)."""
    p = Path(student_dir)
    for cand in (p, p / "merged", p / "adapter"):
        f = cand / STUDENT_FILE
        if f.is_file():
            return cand, json.loads(f.read_text())
    raise LlmrankError(f"{p}: not an llmrank student (no {STUDENT_FILE} in it, nor in its merged/ or adapter/); "
                       "give the output folder of a distill run")


def start_model(student_dir: str | Path, out: Path, dtype: str = "float32"):
    """``(model, tokenizer, meta, base_path)``: the distilled student as a plain model with its adapter merged
    in (its ``merged/`` folder; an adapter-only student is merged here and saved once to ``<out>/base``)."""
    folder, meta = student_meta(student_dir)
    if (folder / "adapter_config.json").is_file():
        merged = Path(student_dir) / "merged"
        if (merged / STUDENT_FILE).is_file() and not (merged / "adapter_config.json").is_file():
            folder = merged
    student = get_student(meta.get("kind", "pointwise"))
    if (folder / "adapter_config.json").is_file():
        base = out / "base"
        if not (base / STUDENT_FILE).is_file():
            model, tok, meta = student.load(folder, dtype)
            student.save_folder(student.merge(model), tok, base, meta)
        folder = base
    model, tok, meta = student.load(folder, dtype)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok, meta, str(folder.resolve())


def student_reranker(backend=None, prompt=None, model: str | Path | None = None, **options):
    """Method ``student`` of the rerankers registry: the saved student folder ``model`` as the Reranker it
    was trained to be (any kind), so a distilled student can teach another one (``teacher: {method: student,
    model: runs/x/distill/merged}``) or be a ``compare`` cell. Options: ``dtype``, ``batch_size``, ``device``."""
    if prompt is not None:
        raise LlmrankError(f"method 'student' takes no prompt (got '{prompt}'): a student is scored with its own")
    if model is None and isinstance(backend, (str, Path)):
        model = backend
    if model is None or not is_student_dir(model):
        raise LlmrankError(f"method 'student' needs 'model': a saved student folder (distill's merged/ or adapter/, "
                           f"or an export), got {str(model) if model is not None else 'none'}")
    return load_student(model, **options)


student_reranker.uses_backend = False  # type: ignore[attr-defined]
