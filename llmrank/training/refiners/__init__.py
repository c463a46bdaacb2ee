"""Refinement methods: what trains a distilled student further, one module per method, and a registry.

==========  ==============================================  ==========================================
method      refiner                                         fits
==========  ==============================================  ==========================================
grpo        :class:`~llmrank.training.refiners.grpo.GRPORefiner`  students that build GRPO prompts (reasoning)
dpo         :class:`~llmrank.training.refiners.dpo.DPORefiner`    students that build DPO pairs (pointwise, reasoning)
==========  ==============================================  ==========================================

A :class:`Refiner` declares what a recipe's ``refine`` section holds for it — the library config of
``refine.training`` (checked field by field at recipe load) and llmrank's defaults for it, its
``refine.options`` (by default the dataclass the student kind declares in ``Student.refine_options``),
whether it takes ``refine.rewards`` — and does the work: ``fits(student)``, ``build_rows`` (by default the
student's own ``refine_rows`` hook: the kind-specific data) and ``train``. A new method is a new module plus
one line in :data:`REFINERS`, or, from outside the package, :func:`register_refiner`. The runner and the
recipe ask this registry and never switch on the method.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any, ClassVar

from llmrank.errors import LlmrankError

REFINERS: dict[str, Any] = {
    "grpo": "llmrank.training.refiners.grpo:GRPORefiner",
    "dpo": "llmrank.training.refiners.dpo:DPORefiner",
}
"""method -> its :class:`Refiner` subclass, as ``"module:Class"`` (imported when asked for) or the class."""

__all__ = ["REFINERS", "Refiner", "fitting_methods", "get_refiner", "register_refiner"]


class Refiner:
    """One refine method. Subclasses set the class attributes and implement ``train`` (and ``build_rows`` when
    the rows do not come from the student's ``refine_rows`` hook)."""

    method: ClassVar[str] = ""
    description: ClassVar[str] = ""
    trainer_config: ClassVar[Any] = "TrainingArguments"
    """The library config ``refine.training`` holds (a short name of :mod:`llmrank.configs`, ``"module:Class"``
    or a class); checked at recipe load, built by :meth:`make_args`."""
    training_defaults: ClassVar[dict] = {"per_device_train_batch_size": 1, "max_steps": 50, "logging_steps": 5,
                                         "save_steps": 25, "save_total_limit": 1, "report_to": [],
                                         "gradient_checkpointing": False}
    uses_rewards: ClassVar[bool] = False
    """Whether ``refine.rewards`` means anything to this method."""
    rows_file: ClassVar[str | None] = None
    """A file under the refine folder where rows that are costly to build (they need the student) are kept,
    built once by the main process; None: rows are rebuilt by every process."""
    rows_name: ClassVar[str] = "rows"
    """What a row is called in the stage's manifest (``prompts``, ``pairs``)."""
    curves: ClassVar[list[tuple[str, str]]] = []
    """What the report plots against step: (key of the trainer's logged rows, its label)."""

    # -- what fits, what the recipe may say ------------------------------------------------------------
    @classmethod
    def fits(cls, student) -> bool:
        """Whether this method can refine a student of this kind (by default: the kind builds its rows)."""
        return cls.method in getattr(student, "refine_options", {})

    @classmethod
    def unfit_reason(cls, student) -> str:
        """Why it does not fit (appended to the error), or ""."""
        return ""

    @classmethod
    def options(cls, student):
        """The dataclass of ``refine.options`` for a student of this kind (None: takes none)."""
        return getattr(student, "refine_options", {}).get(cls.method)

    @classmethod
    def check_options(cls, student, values: dict | None) -> list[tuple[tuple, str]]:
        """Problems of ``refine.options`` for this student: ``[(key path under options, message)]``."""
        from llmrank.config.options import check_options, dataclass_options

        spec = cls.options(student)
        what = f"{cls.method} for a {student.kind} student"
        if spec is None:
            return [((k,), f"not an option of {what} (it takes none)") for k in values or {}]
        specs, open_ = dataclass_options(spec)
        return check_options(specs, dict(values or {}), what, open_)

    @classmethod
    def check_section(cls, section) -> list[tuple[tuple, str]]:
        """Problems of the ``refine`` section beyond options and ``training`` fields: ``[(key path, msg)]``;
        here: each reward exists and takes its options (a method that uses rewards), or rewards are refused."""
        from llmrank.training.rewards import build_reward

        problems = []
        for i, spec in enumerate(section.rewards if cls.uses_rewards else ()):
            try:
                build_reward(spec.name, "reward", **spec.options)
            except LlmrankError as e:
                problems.append((("refine", "rewards", i), str(e).removeprefix("reward: ")))
        if section.rewards and not cls.uses_rewards:
            takers = [m for m in REFINERS if get_refiner(m).uses_rewards]
            problems.append((("refine", "rewards"), f"rewards are for method {' or '.join(repr(m) for m in takers)}; "
                             f"{cls.method} does not take them (see refine.options)"))
        return problems

    # -- the trainer's config --------------------------------------------------------------------------
    @classmethod
    def training_args(cls, section, out: Path, seed: int, cuda: bool) -> dict:
        """llmrank's defaults, then the recipe's ``refine.training``, then the output folder."""
        return {**cls.training_defaults, "seed": seed, "use_cpu": not cuda, "bf16": cuda, **section.training,
                "output_dir": str(out)}

    @classmethod
    def make_args(cls, values: dict, where: str = "refine.training"):
        """The library config object; its own checks (``__post_init__``) become an error naming the section."""
        from llmrank.configs import current_names, import_class

        klass = import_class(cls.trainer_config)
        try:
            return klass(**current_names(klass, values))
        except (TypeError, ValueError) as e:
            raise LlmrankError(f"{where}: {klass.__module__.split('.')[0]}.{klass.__name__} rejects these settings: "
                               f"{e}") from None

    # -- the work --------------------------------------------------------------------------------------
    @classmethod
    def build_rows(cls, student, student_dir: Path, data, teacher_records: dict, options: dict, *, out: Path,
                   dtype: str = "float32", seed: int = 0, progress: bool = False) -> tuple[list[dict], dict]:
        """``(rows, stats)`` to train on: by default the student kind's own data (``refine_rows``)."""
        return student.refine_rows(cls.method, Path(student_dir), data, teacher_records, dict(options or {}),
                                   out=Path(out), dtype=dtype, seed=seed, progress=progress)

    @classmethod
    def train(cls, student, student_dir: Path, rows: list[dict], args, section, dtype: str = "float32",
              resume: str | None = None, stats: dict | None = None) -> Path:
        """Train the refined student into ``args.output_dir`` (``adapter/`` + ``merged/``)."""
        raise NotImplementedError

    @classmethod
    def manifest(cls, rows: list[dict], stats: dict) -> dict:
        """What the stage's manifest records besides its inputs."""
        return {}


def register_refiner(refiner: type[Refiner] | str, method: str | None = None) -> None:
    """Register a refine method: a :class:`Refiner` subclass (its ``method`` names it) or ``"module:Class"``
    with ``method``. Recipes may then say ``refine: {method: <method>, …}``."""
    if isinstance(refiner, str):
        if not method or ":" not in refiner:
            raise LlmrankError(f"register_refiner({refiner!r}): give 'module:Class' and the method it registers")
    else:
        if not (isinstance(refiner, type) and issubclass(refiner, Refiner)):
            raise LlmrankError(f"register_refiner: {refiner!r} is not a Refiner subclass")
        if method is not None and method != refiner.method:
            raise LlmrankError(f"register_refiner: {refiner.__name__}.method is {refiner.method!r}, not {method!r}")
        method = refiner.method
    if not method or not method.isidentifier():
        raise LlmrankError(f"register_refiner: a refine method is a name such as 'dpo' (got {method!r})")
    REFINERS[method] = refiner


def get_refiner(method: str) -> type[Refiner]:
    """The refiner registered as ``method``."""
    if method not in REFINERS:
        close = difflib.get_close_matches(str(method), list(REFINERS), n=1)
        raise LlmrankError(f"unknown refine method '{method}'" + (f"; did you mean '{close[0]}'?" if close else "")
                           + f" (one of {', '.join(REFINERS)})")
    target = REFINERS[method]
    if isinstance(target, type):
        return target
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def fitting_methods(student) -> list[str]:
    """The refine methods that fit a student kind."""
    return [m for m in REFINERS if get_refiner(m).fits(student)]


def check_fits(method: str, student, where: str = "refine.method") -> type[Refiner]:
    """The refiner of ``method``; an error naming the key when it does not fit the student kind."""
    refiner = get_refiner(method)
    if not refiner.fits(student):
        raise LlmrankError(f"{where}: '{method}' does not fit a {student.kind} student{refiner.unfit_reason(student)}; "
                           f"methods for a {student.kind} student: {', '.join(fitting_methods(student)) or 'none'}")
    return refiner
