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
  student), ``export`` (for vLLM);
- ``refine_options`` and ``refine_rows``: the refinement data this kind builds (per refine method of
  :mod:`llmrank.training.refiners`: the options dataclass, and the rows); a refiner fits the kinds that
  build its data.
- the model's life: ``model_class`` (the transformers auto class; a causal LM by default),
  ``peft_task_type``, ``load_for_training``, ``lora_config``/``add_lora``, ``load`` (a saved student),
  ``merge``, ``save`` (``adapter/`` + ``merged/``) and ``write_export``. Everything that loads, saves, merges
  or exports a student calls these, so an encoder kind overrides them in its own module.

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

LORA_DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
"""llmrank's LoRA defaults (a distilled student's and a refinement's new adapter)."""


def lora_config(lora: dict | None = None, task_type: str = "CAUSAL_LM"):
    """peft's ``LoraConfig`` from a recipe's ``lora:`` mapping (``r``, ``alpha``, ``dropout``,
    ``target_modules``; a missing key takes :data:`LORA_DEFAULTS`). The one place llmrank builds one."""
    from peft import LoraConfig

    lora = {**LORA_DEFAULTS, **(lora or {})}
    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                      target_modules=lora["target_modules"], task_type=task_type)


def lora_of(cfg) -> dict:
    """The ``lora:`` mapping of a student config (its ``lora_r``, ``lora_alpha`` … fields)."""
    return {key: getattr(cfg, name) for key, name in LORA_KEYS.items() if hasattr(cfg, name)}


@dataclass
class StudentFields:
    """What every student is: its base model, LoRA and how documents are cut. Kinds add their own fields."""

    model: str = field(default="smollm2-135m", metadata={"help": "student base model: alias, local path or hub id"})
    lora_r: int = field(default=LORA_DEFAULTS["r"], metadata={"help": "LoRA rank", "ge": 1})
    lora_alpha: int = field(default=LORA_DEFAULTS["alpha"], metadata={"help": "LoRA alpha (scaling = alpha / r)", "ge": 1})
    lora_dropout: float = field(default=LORA_DEFAULTS["dropout"], metadata={"help": "LoRA dropout", "ge": 0.0, "lt": 1.0})
    target_modules: Any = field(default=LORA_DEFAULTS["target_modules"], metadata={"help": "peft target modules ('all-linear' or a list of module names)"})
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


def loss_problems(loss: str, options: dict) -> list[tuple[str, str]]:
    """``[(key, message)]`` for a student's ``loss`` (a name of :data:`llmrank.losses.LOSS_NAMES`, with "did you
    mean") and its ``loss_options`` (the loss's own keyword arguments)."""
    from llmrank.losses import LOSS_NAMES, loss_option_problems

    if loss not in LOSS_NAMES:
        import difflib

        close = difflib.get_close_matches(loss, LOSS_NAMES, n=1, cutoff=0.5)
        return [("loss", f"unknown loss {loss!r}" + (f"; did you mean '{close[0]}'?" if close else "")
                 + f" (one of {', '.join(LOSS_NAMES)})")]
    return [(".".join(("loss_options", *map(str, key))), msg) for key, msg in loss_option_problems(loss, dict(options))]


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


def lazy_names(**builders):
    """A module's ``__getattr__`` that builds each of ``builders``' names on first use (a kind's config class or
    trainer, which import transformers): ``__getattr__ = lazy_names(PointwiseStudentConfig=…)``, so a pickled
    checkpoint's arguments load by name in a fresh process."""

    def __getattr__(name: str):
        if name in builders:
            return builders[name]()
        raise AttributeError(name)

    return __getattr__


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
    config_name: ClassVar[str] = ""  # the config class's name in the kind's module (default: <Class>Config)
    # llmrank's defaults under the recipe's ``training`` (a few logged steps, one checkpoint kept, no hub reports)
    training_defaults: ClassVar[dict] = {"per_device_train_batch_size": 1, "learning_rate": 1e-4, "max_steps": 50,
                                         "logging_steps": 5, "save_steps": 25, "save_total_limit": 1, "report_to": []}
    # refine method -> the dataclass of the ``refine.options`` this kind's rows for it take (see refine_rows)
    refine_options: ClassVar[dict[str, type]] = {}
    needs_rationales: ClassVar[bool] = False  # learns from the teacher's explanations (a rationale teacher)
    # loss -> the loss_options a section that gives none trains with (defaults follow the loss the recipe names)
    default_loss_options: ClassVar[dict[str, dict]] = {}
    description: ClassVar[str] = ""

    # -- configuration ---------------------------------------------------------------------------------
    @classmethod
    def config_class(cls):
        """``fields`` + the library config ``base_config``, one dataclass (imports transformers/trl), built on
        first use and published in the kind's module as ``config_name`` (:func:`build_config_class`)."""
        from llmrank.configs import import_class

        name = cls.config_name or f"{cls.__name__}Config"
        return build_config_class(cls.fields, import_class(cls.base_config), name, cls.__module__,
                                  f"``{cls.base_config}`` + :class:`{cls.fields.__name__}`: everything a {cls.kind} "
                                  "student's training needs.")

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
        if "loss" in kw and not kw.get("loss_options") and kw["loss"] in cls.default_loss_options:
            kw["loss_options"] = json.loads(json.dumps(cls.default_loss_options[kw["loss"]]))
        kw["output_dir"] = str(output_dir)
        if kw.get("global_batch_size"):
            kw["gradient_accumulation_steps"] = accumulation_steps(kw["global_batch_size"],
                                                                   kw.get("per_device_train_batch_size", 8))
        from llmrank.configs import current_names

        try:
            return cls.config_class()(**current_names(cls.config_class(), kw))
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
        if hasattr(section, "loss"):  # a kind taught by a ranking loss (llmrank.losses)
            options = getattr(section, "loss_options", None) or cls.default_loss_options.get(section.loss, {})
            problems += loss_problems(section.loss, options)
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
    def refine_rows(cls, method: str, student_dir: Path, data, teacher_records: dict, options: dict, *, out: Path,
                    dtype: str = "float32", seed: int = 0, progress: bool = False) -> tuple[list[dict], dict]:
        """``(rows, stats)``: the training rows of refine ``method`` for the student saved in ``student_dir``,
        built with ``options`` (checked against ``refine_options[method]``); ``out`` is the refine folder."""
        raise NotImplementedError(f"a {cls.kind} student builds no rows for refine method '{method}'")

    @classmethod
    def cli_fields(cls) -> list[str]:
        """The library config fields ``llmrank distill`` offers as flags (the rest: ``--set training.X=V``)."""
        return ["max_steps", "num_train_epochs", "learning_rate", "per_device_train_batch_size",
                "gradient_accumulation_steps", "warmup_steps", "logging_steps", "save_steps", "bf16"]

    # -- the model: load, LoRA, merge, save, export --------------------------------------------------------
    # The defaults are a causal LM with peft LoRA (both built-in kinds); an encoder kind overrides
    # ``model_class`` and ``peft_task_type`` (and, where its library saves differently, ``load``/``save_folder``).

    peft_task_type: ClassVar[str] = "CAUSAL_LM"

    @classmethod
    def model_class(cls):
        """The transformers auto class the kind's weights load with."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    @classmethod
    def load_tokenizer(cls, path: str | Path, pad: bool = True):
        """The tokenizer at ``path``; with ``pad``, one without a pad token pads with its end-of-sequence token."""
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        if pad and tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return tok

    @classmethod
    def load_model(cls, path: str | Path, dtype: str = "float32", **kwargs):
        """Plain weights at ``path`` (a base model or a merged student) as :meth:`model_class`."""
        from llmrank.backends.hf import resolve_dtype

        return cls.model_class().from_pretrained(path, dtype=resolve_dtype(dtype), **kwargs)

    @classmethod
    def lora_config(cls, lora: dict | None = None):
        """peft's ``LoraConfig`` for this kind from a ``lora:`` mapping (:func:`lora_config`)."""
        return lora_config(lora, cls.peft_task_type)

    @classmethod
    def add_lora(cls, model, lora: dict | None = None):
        """``model`` with new LoRA adapters attached (peft), the only weights a LoRA student trains."""
        from peft import get_peft_model

        return get_peft_model(model, cls.lora_config(lora))

    @classmethod
    def load_for_training(cls, cfg, attach_lora: bool = True):
        """``(tokenizer, model, resolved base path)`` a kind trains from ``cfg``: the base in ``cfg.dtype``
        (4-bit nf4 when ``cfg.qlora``); with ``cfg.finetune == "full"`` the base itself, every layer
        trainable but the embeddings; otherwise with LoRA attached (``attach_lora``, or left to a trainer
        that takes ``peft_config=cls.lora_config(lora_of(cfg))``)."""
        from llmrank.models import resolve_model

        path = resolve_model(cfg.model)
        tok = cls.load_tokenizer(path)
        kwargs = {}
        qlora = getattr(cfg, "qlora", False)
        if qlora:
            import torch
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                               bnb_4bit_compute_dtype=torch.bfloat16)
        model = cls.load_model(path, cfg.dtype, **kwargs)
        if getattr(cfg, "finetune", "lora") == "full":
            freeze_embeddings(model)
            return tok, model, path
        if qlora:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return tok, (cls.add_lora(model, lora_of(cfg)) if attach_lora else model), path

    @classmethod
    def load(cls, path: str | Path, dtype: str = "float32"):
        """``(model, tokenizer, meta)`` of a saved student folder: an adapter folder (LoRA on its recorded
        base, as a peft model) or a merged folder (or an export)."""
        from llmrank.model_files import check_model_folder

        path = Path(path)
        meta = read_meta(path)
        check_model_folder(path, "student")  # a half-copied or damaged student is named, not a library traceback
        try:
            tok = cls.load_tokenizer(path, pad=False)
            if (path / "adapter_config.json").is_file():
                from peft import PeftModel

                if not isinstance(meta.get("base_model"), str):
                    raise LlmrankError(f"{path / STUDENT_FILE}: key 'base_model' is missing; the adapter's base is unknown")
                return PeftModel.from_pretrained(cls.load_model(meta["base_model"], dtype), path), tok, meta
            return cls.load_model(path, dtype), tok, meta
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            if isinstance(e, LlmrankError):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LlmrankError(f"{path}: the student does not load ({first[:300]}); it is damaged or incomplete") from None

    @classmethod
    def merge(cls, model):
        """The plain model with its LoRA merged in (a model without adapters as it is)."""
        return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model

    @classmethod
    def save_folder(cls, model, tokenizer, folder: str | Path, meta: dict) -> None:
        """Weights (or the adapter alone, for a peft model), tokenizer and ``llmrank_student.json`` in ``folder``."""
        folder = Path(folder)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / STUDENT_FILE).write_text(json.dumps(meta, indent=1, default=str))

    @classmethod
    def save(cls, model, tokenizer, out: str | Path, meta: dict, merge: bool = True) -> None:
        """Save ``out/adapter`` (LoRA) and, with ``merge``, ``out/merged``, each with ``llmrank_student.json``.
        A fully fine-tuned model (no adapter) is saved as ``out/merged`` whatever ``merge`` says;
        ``out/adapter`` then holds only the training logs the caller writes there."""
        out = Path(out)
        if not hasattr(model, "merge_and_unload"):
            (out / "adapter").mkdir(parents=True, exist_ok=True)
            cls.save_folder(model, tokenizer, out / "merged", meta)
            return
        cls.save_folder(model, tokenizer, out / "adapter", meta)
        if merge:
            cls.save_folder(cls.merge(model), tokenizer, out / "merged", meta)

    @classmethod
    def write_export(cls, src: Path, tmp: Path, out: Path, dtype: str) -> dict:
        """The student at ``src`` merged, cast to ``dtype`` and saved into ``tmp`` (published later as
        ``out``) with its ``llmrank_student.json`` and what :meth:`export` adds; returns the serve info."""
        import shutil

        from llmrank.backends.hf import resolve_dtype

        model, tok, meta = cls.load(src, "float32")
        model = cls.merge(model).to(resolve_dtype(dtype))
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.copy(src / STUDENT_FILE, tmp / STUDENT_FILE)
        info: dict = {"kind": cls.kind, "model_dir": str(out), "dtype": dtype, "max_doc_tokens": meta.get("max_doc_tokens")}
        info.update(cls.export(src, tmp, meta, model, tok))
        return info


# -- saving and loading -----------------------------------------------------------------------------------

def group_ranking_loss(ranking_loss, scores, inputs: dict):
    """A ranking loss over each group's student ``scores`` against the batch's teacher scores, teacher ranks,
    graded labels and group mask (what every student kind's distill collator writes)."""
    return ranking_loss(scores.float(), teacher_scores=inputs["teacher_scores"], teacher_ranks=inputs["teacher_ranks"],
                        labels=inputs["labels_graded"], mask=inputs["group_mask"])


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


def write_training_logs(trainer, out: str | Path, info: dict, log_keys: tuple[str, ...] = ("loss",)) -> None:
    """``out/adapter/trainer_log.json`` (the trainer's logged rows: ``step`` and any of ``log_keys``) and
    ``out/adapter/training_info.json`` (processes, optimizer steps, then ``info``): what every student kind and
    refinement writes after training."""
    adapter = Path(out) / "adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    rows = [{"step": e["step"], **{k: e[k] for k in log_keys if k in e}} for e in trainer.state.log_history
            if "step" in e and any(k in e for k in log_keys)]
    (adapter / "trainer_log.json").write_text(json.dumps(rows))
    (adapter / "training_info.json").write_text(json.dumps({"world_size": trainer.accelerator.num_processes,
                                                            "global_step": trainer.state.global_step, **info}))


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
