"""What every student kind shares: the fields a recipe sets, the training defaults, saving and loading.

A student kind (:mod:`llmrank.students.pointwise`, :mod:`llmrank.students.reasoning`) is a
:class:`Student` subclass with:

- ``fields``: a light dataclass of what the student *is* (base model, prompt, LoRA, document length …).
  The recipe's ``distill`` section is made from it (:func:`section_model`), and so are the
  ``llmrank distill`` flags: the fields, their defaults and help exist once.
- ``base_config``: the library config its training loop runs on (transformers' ``TrainingArguments`` or
  trl's ``SFTConfig``); the recipe's ``distill.training`` holds its fields and is checked at recipe load
  (:func:`llmrank.configs.check_fields`, read from source: no import of transformers). ``training_defaults``
  are llmrank's defaults for them (a CPU quickstart should not inherit trl's ``bf16=True``).
- ``config_class()``: ``fields`` + ``base_config`` as one dataclass (``PointwiseStudentConfig(TrainingArguments)``,
  ``ReasoningStudentConfig(SFTConfig)``), the way trl's ``GRPOConfig`` extends ``TrainingArguments``; the
  trainer receives it whole.
- ``build_examples``, ``train``, ``zero_shot`` (the ``student_before`` row), ``reranker`` (a saved
  student), ``export`` (for vLLM) and ``refine_methods`` (which refinement fits it).

A saved student is a folder (``adapter/`` or ``merged/``) with ``llmrank_student.json``: its kind, base
model, prompt and how it scores. Everything that loads a student reads that file, so a student is scored
the way it was trained wherever it is used.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from llmrank.errors import LlmrankError

STUDENT_FILE = "llmrank_student.json"
FINETUNE_MODES = ("lora", "full")
"""How a student's weights are trained: LoRA adapters on a frozen base, or every weight."""

LORA_KEYS = {"r": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout", "target_modules": "target_modules"}
"""The recipe's ``lora:`` mapping -> the config's fields."""


@dataclass
class StudentFields:
    """What every student is: its base model, LoRA and how documents are cut. Kinds add their own fields."""

    model: str = field(default="smollm2-135m", metadata={"help": "student base model: alias, local path or hub id"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank", "ge": 1})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling = alpha / r)", "ge": 1})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout", "ge": 0.0, "lt": 1.0})
    target_modules: Any = field(default="all-linear", metadata={"help": "peft target modules ('all-linear' or a list of module names)"})
    dtype: str = field(default="float32", metadata={"help": "base weights dtype: float32 | bfloat16 | auto"})
    merge: bool = field(default=True, metadata={"help": "also save the LoRA-merged model under <output>/merged"})
    global_batch_size: int | None = field(default=None, metadata={
        "help": "examples (pointwise: query groups) per optimizer step over all processes; when set, "
                "gradient_accumulation_steps = global_batch_size / (per_device_train_batch_size x processes), so "
                "the recipe trains the same way on 1 or N processes", "ge": 1})
    finetune: str = field(default="lora", metadata={"help": "lora: train LoRA adapters on the frozen base (saved as "
                                                           "adapter/, merged into merged/); full: train every layer "
                                                           "(token embeddings stay frozen; saved as merged/; keep "
                                                           "dtype float32)"})


def freeze_embeddings(model) -> None:
    """Full fine-tuning (``finetune: full``, both student kinds) trains every transformer layer but not the
    token embeddings (nor the LM head when it is tied to them): a step need not update a vocabulary-sized
    matrix (28M of SmolLM2-135M's 135M weights), and the yes/no scorer reads two rows of the head."""
    model.get_input_embeddings().weight.requires_grad_(False)
    head = model.get_output_embeddings()
    if head is not None and head.weight is model.get_input_embeddings().weight:
        head.weight.requires_grad_(False)


def build_config_class(fields_cls, base_cls, name: str, module: str, doc: str) -> type:
    """``@dataclass class <name>(fields_cls, base_cls)``, the config a kind's trainer receives, made on first
    use (``base_cls`` comes from transformers or trl, which the kind's module does not import at import
    time) and published in ``module`` under ``name``, so a checkpoint's pickled arguments load by name.
    Built once: later calls return the published class."""
    import sys

    mod = sys.modules[module]
    if isinstance(mod.__dict__.get(name), type):
        return mod.__dict__[name]
    cls = dataclasses.dataclass(type(name, (fields_cls, base_cls), {"__doc__": doc, "__module__": module,
                                                                     "__qualname__": name}))
    setattr(mod, name, cls)
    return cls


def own_fields(fields_cls) -> list[dataclasses.Field]:
    return list(dataclasses.fields(fields_cls))


def fields_kwargs(fields_cls, section) -> dict:
    """The student fields of a recipe section (or any object with those attributes)."""
    out = {}
    for f in own_fields(fields_cls):
        if f.name in LORA_KEYS.values() and hasattr(section, "lora"):
            continue
        if hasattr(section, f.name):
            out[f.name] = getattr(section, f.name)
    lora = getattr(section, "lora", None) or {}
    for k, v in lora.items():
        out[LORA_KEYS[k]] = v
    return out


class Student:
    """One student kind. Subclasses set the class attributes and implement the methods."""

    kind: ClassVar[str] = ""
    fields: ClassVar[type] = StudentFields
    base_config: ClassVar[str] = "TrainingArguments"
    # llmrank's defaults under the recipe's ``training`` (a few logged steps, one checkpoint kept, no hub reports)
    training_defaults: ClassVar[dict] = {"per_device_train_batch_size": 1, "learning_rate": 1e-4, "max_steps": 50,
                                         "logging_steps": 5, "save_steps": 25, "save_total_limit": 1, "report_to": []}
    refine_methods: ClassVar[tuple[str, ...]] = ()
    needs_rationales: ClassVar[bool] = False  # learns from the teacher's explanations (a rationale teacher)
    description: ClassVar[str] = ""

    # -- configuration ---------------------------------------------------------------------------------
    @classmethod
    def config_class(cls):
        """``fields`` + the library config, one dataclass (imports transformers/trl)."""
        raise NotImplementedError

    @classmethod
    def make_config(cls, section, output_dir: str | Path, seed: int = 0, training: dict | None = None, **extra):
        """The whole training config from a recipe section (student fields + ``training``) and llmrank's
        defaults; ``training`` replaces the section's ``training`` when given."""
        import torch

        given = dict(getattr(section, "training", None) or {}) if training is None else dict(training)
        defaults = dict(cls.training_defaults)
        if "num_train_epochs" in given and "max_steps" not in given:  # a default max_steps would override epochs
            defaults.pop("max_steps", None)
        kw = {**defaults, "seed": seed, "use_cpu": not torch.cuda.is_available()}
        kw.update(given)
        kw.update(fields_kwargs(cls.fields, section))
        kw.update(extra)
        kw["output_dir"] = str(output_dir)
        if kw.get("global_batch_size"):
            kw["gradient_accumulation_steps"] = accumulation_steps(kw["global_batch_size"],
                                                                   kw.get("per_device_train_batch_size", 8))
        try:
            return cls.config_class()(**kw)
        except (ValueError, TypeError) as e:
            raise LlmrankError(f"distill ({cls.kind} student): {e}") from None

    # -- what a kind does ------------------------------------------------------------------------------
    @classmethod
    def check_section(cls, section) -> list[tuple[str, str]]:
        """Problems of a recipe section beyond types (e.g. an unknown loss): ``[(key, message)]``. Kinds
        extend it (``super().check_section(section) + …``)."""
        from llmrank.checks import DTYPE_NAMES

        problems = []
        if section.dtype not in DTYPE_NAMES:
            problems.append(("dtype", f"unknown dtype {section.dtype!r} (one of {', '.join(DTYPE_NAMES)})"))
        if section.finetune not in FINETUNE_MODES:
            problems.append(("finetune", f"unknown fine-tuning mode {section.finetune!r} (one of "
                                         f"{', '.join(FINETUNE_MODES)})"))
        elif section.finetune == "full" and getattr(section, "qlora", False):
            problems.append(("qlora", "a 4-bit base cannot be fully fine-tuned: qlora needs finetune: lora"))
        if getattr(section, "global_batch_size", None) and "gradient_accumulation_steps" in (section.training or {}):
            problems.append(("training.gradient_accumulation_steps", "set global_batch_size or "
                             "gradient_accumulation_steps, not both (global_batch_size decides the accumulation)"))
        return problems

    @classmethod
    def build_examples(cls, data, teacher_records: dict, cfg, seed: int = 0) -> list[dict]:
        raise NotImplementedError

    @classmethod
    def train(cls, cfg, examples: list[dict], resume: bool | str | None = None, callbacks=None) -> Path:
        raise NotImplementedError

    @classmethod
    def zero_shot(cls, section, dtype: str | None = None, **backend_options):
        """The untrained base model as this student scores (the ``student_before`` row)."""
        raise NotImplementedError

    @classmethod
    def reranker(cls, model, tokenizer, meta: dict, path: Path, dtype: str, **backend_options):
        """A saved student (already loaded) as the Reranker it was trained to be."""
        raise NotImplementedError

    @classmethod
    def export(cls, src: Path, tmp: Path, meta: dict, model, tokenizer) -> dict:
        """Write what a server needs besides the merged weights into ``tmp``; returns the serve info."""
        raise NotImplementedError

    @classmethod
    def cli_fields(cls) -> list[str]:
        """The library config fields ``llmrank distill`` offers as flags (the rest: ``--set training.X=V``)."""
        return ["max_steps", "num_train_epochs", "learning_rate", "per_device_train_batch_size",
                "gradient_accumulation_steps", "warmup_steps", "logging_steps", "save_steps", "bf16"]


# -- saving and loading -----------------------------------------------------------------------------------

def accumulation_steps(global_batch_size: int, per_device: int, processes: int | None = None) -> int:
    """``gradient_accumulation_steps`` that make ``global_batch_size`` examples per optimizer step over
    ``processes`` (default: ``WORLD_SIZE``, which ``accelerate launch`` and ``torchrun`` set) of
    ``per_device`` each; a size they do not divide is an error naming the key."""
    import os

    processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
    per_step = per_device * processes
    if global_batch_size % per_step:
        raise LlmrankError(f"distill.global_batch_size: {global_batch_size} is not a multiple of "
                           f"per_device_train_batch_size ({per_device}) x processes ({processes}) = {per_step}")
    return global_batch_size // per_step


def write_student(model, tokenizer, out: Path, meta: dict, merge: bool) -> None:
    """Save ``out/adapter`` (LoRA) and, with ``merge``, ``out/merged``, each with ``llmrank_student.json``.
    A fully fine-tuned model (no adapter) is saved as ``out/merged`` whatever ``merge`` says; ``out/adapter``
    then holds only the training logs the caller writes there."""
    text = json.dumps(meta, indent=1, default=str)
    adapter = out / "adapter"
    if not hasattr(model, "merge_and_unload"):
        adapter.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
        (out / "merged" / STUDENT_FILE).write_text(text)
        return
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    (adapter / STUDENT_FILE).write_text(text)
    if merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
        (out / "merged" / STUDENT_FILE).write_text(text)


def config_dict(cfg, fields_cls) -> dict:
    """The student fields of a config, for the saved metadata."""
    return {f.name: getattr(cfg, f.name) for f in own_fields(fields_cls)}


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    meta_file = path / STUDENT_FILE
    if not meta_file.is_file() and path.name == "adapter" and (path.parent / "merged" / STUDENT_FILE).is_file():
        raise LlmrankError(f"{path}: a fully fine-tuned student has no adapter; give {path.parent / 'merged'}")
    if not meta_file.is_file():
        raise LlmrankError(f"{path}: not an llmrank student (no {STUDENT_FILE}); give the adapter or merged "
                           "folder of a distill run, or an export")
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError as e:
        raise LlmrankError(f"{meta_file}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise LlmrankError(f"{meta_file}: expected a JSON object")
    return meta


def is_student_dir(path: str | Path) -> bool:
    return (Path(path) / STUDENT_FILE).is_file()
