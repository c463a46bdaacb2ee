"""Eval suites: named lists of eval datasets (``eval.suite: beir``), and the eval dataset entry they and a
recipe's ``eval.datasets`` are made of.

A suite is a YAML file (``llmrank/assets/suites/<name>.yaml``, linked from ``eval/<name>.yaml`` at the top of
the repository, or any path) with a ``datasets`` list and optionally other named lists under ``variants``
(``suite: bright:reasoning``). It is validated like a recipe (:mod:`llmrank.config.loader`): a bad entry names
the suite file, its line and the key. The recipe (:mod:`llmrank.recipe`) builds its ``eval`` section on these.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from llmrank.assets import asset_dir
from llmrank.config.loader import Section, _described, _fix_path, _format_error, _interpolate, _line_map, _read_yaml
from llmrank.errors import LlmrankError

SUITES_DIR = asset_dir("suites")
"""Where ``eval.suite: <name>`` is looked up: the suites shipped in the package (``llmrank/assets/suites``,
linked from ``eval/<name>.yaml`` at the top of the repository)."""


class EvalDataset(Section):
    dataset: str = Field(description="dataset path")
    split: str = Field("test", description="split or BRIGHT task")
    name: str | None = Field(None, description="label in the report (default: <folder>-<split>)")
    queries: int | None = Field(None, ge=1, description="first N queries only")
    query_field: str = Field("query", description="BRIGHT: the query text: 'query' (original), an LLM reasoning "
                                                  "configuration ('gpt4_reason', … : the published reasoning rows) or "
                                                  "'human-reasoning' (the examples' annotator-written field, used in no "
                                                  "published experiment)")
    documents: Literal["short", "long"] = Field("short", description="BRIGHT: 'long' reads long_documents and judges "
                                                                     "against gold_ids_long")

    @field_validator("query_field")
    @classmethod
    def _bright_query_field(cls, v):
        from llmrank.data.bright import query_source

        try:
            query_source(v)
        except LlmrankError as e:
            raise ValueError(str(e)) from None
        return v

    def label(self) -> str:
        """The dataset's name in the report and under ``eval/``."""
        if self.name:
            return self.name
        base = f"{Path(self.dataset).name}-{self.split}"
        base = base if self.query_field == "query" else f"{base}-{self.query_field}"
        return base if self.documents == "short" else f"{base}-long"


class EvalSuite(Section):
    """An eval suite file (``eval/*.yaml``): a ``datasets`` list of eval entries, and optionally other named
    lists under ``variants`` (``suite: bright:reasoning`` picks ``variants.reasoning``)."""

    description: str | None = Field(None, description="what the suite is")
    datasets: list[EvalDataset] = Field(description="the suite's eval datasets")
    variants: dict[str, list[EvalDataset]] = Field(default_factory=dict,
                                                   description="other named dataset lists (suite: NAME:VARIANT)")


def suite_location(suite: str, base: Path | None = None, where: str = "eval suite") -> tuple[Path, str | None]:
    """``name``, ``name:variant``, ``path.yaml`` or ``path.yaml:variant`` -> (existing file, variant)."""
    ref, variant = suite, None
    head, sep, tail = suite.rpartition(":")
    if sep and re.fullmatch(r"[A-Za-z0-9_\-]+", tail) and head:
        ref, variant = head, tail
    if not Path(ref).suffix:
        cands = [SUITES_DIR / f"{ref}.yaml"]
    else:
        p = Path(ref)
        cands = [p] if p.is_absolute() else [p, *( [base / p] if base else []), SUITES_DIR / p.name]
    for c in cands:
        if c.is_file():
            return c.resolve(), variant
    names = sorted(f.stem for f in SUITES_DIR.glob("*.yaml")) if SUITES_DIR.is_dir() else []
    raise LlmrankError(f"{where}: eval suite '{suite}' not found (looked for {', '.join(str(c) for c in cands)}"
                       + (f"; suites in {SUITES_DIR}: {', '.join(names)}" if names else "") + ")")


def load_suite(suite: str, base: Path | None = None) -> tuple[Path, list[EvalDataset]]:
    """The datasets of an eval suite (``eval/<name>.yaml``, a path, either with ``:variant``), validated
    like a recipe's ``eval.datasets``: a bad entry names the suite file, its line and the key."""
    path, variant = suite_location(suite, base)
    raw, text = _read_yaml(path, "the eval suite")
    if not isinstance(raw, dict):
        got = "the file is empty" if raw is None else f"got {_described(raw)}"
        raise LlmrankError(f"{path}: an eval suite is a mapping with a 'datasets' list ({got})")
    raw = _interpolate(raw, (), str(path), EvalSuite)
    try:
        parsed = EvalSuite.model_validate(raw)
    except ValidationError as e:
        raise LlmrankError(_format_error(e, str(path), _line_map(text), None, EvalSuite)) from None
    if variant is None:
        entries = parsed.datasets
    elif variant in parsed.variants:
        entries = parsed.variants[variant]
    else:
        raise LlmrankError(f"{path}: eval suite has no variant '{variant}'"
                           f" (variants: {', '.join(parsed.variants) or 'none'})")
    # a shipped suite's relative paths (../shared/data) are read from the repository root of a checkout
    bases = [path.parent, Path(__file__).resolve().parents[2]] if path.parent == SUITES_DIR else [path.parent]
    for d in entries:
        d.dataset = _fix_path(d.dataset, bases)
    return path, entries


def eval_entries(ev, where: str = "eval") -> list[EvalDataset]:
    """The datasets of a recipe's ``eval`` section (``ev.datasets``) followed by its suite's (``ev.suite``),
    each with a unique label (its report name)."""
    entries = list(ev.datasets)
    if ev.suite:
        entries += load_suite(ev.suite)[1]
    seen: dict[str, EvalDataset] = {}
    for d in entries:
        label = d.label()
        if label in seen:
            raise LlmrankError(f"{where}: key 'eval.datasets': two eval datasets are both named '{label}' "
                               f"({seen[label].dataset} split {seen[label].split} and {d.dataset} split {d.split}); "
                               "give each a distinct 'name'")
        seen[label] = d
    return entries
