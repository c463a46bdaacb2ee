"""Prompt templates as YAML files, and the ONE place a ranking prompt becomes model input.

A prompt file (``prompts/<name>.yaml``, or any path) holds::

    name: yes_no            # how recipes and the CLI refer to it
    version: 1              # bump when the wording changes (it is part of teacher-cache keys)
    methods: [pointwise]    # the ranking methods it fits: pointwise | qlm | pairwise | listwise | setwise | rationale
                            # | first
                            # (``method: pointwise`` is read as ``methods: [pointwise]``)
    system: "…"             # optional system message
    template: "…{{ query }}…{{ document }}…"   # jinja2; fields depend on the method
    answers: {yes: "yes", no: "no"}            # label tokens read from the next-token logits (pointwise)
    output_regex: "…"       # what a generated answer must match (generative methods)

:func:`render_chat` applies the model's chat template when it has one (else joins system and user text),
so training, scoring and serving all see the string built here and nowhere else.

Where prompts are found. The shipped prompts are package data (``llmrank/assets/prompts``, found through
:mod:`importlib.resources`, so an installed wheel has them; the checkout's top-level ``prompts/`` links
there). A name (``yes_no``) is looked up in ``$LLMRANK_PROMPTS`` when set, then among the shipped ones; a
path that exists is read as given (your own files); the documented form ``prompts/<name>.yaml`` that does
not exist from the working directory (a wheel install, another folder) is the shipped ``<name>.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jinja2
import yaml

from llmrank.assets import asset_dir
from llmrank.errors import LlmrankError

SHIPPED_PROMPTS_DIR = asset_dir("prompts")
PROMPTS_DIR = Path(os.environ.get("LLMRANK_PROMPTS") or SHIPPED_PROMPTS_DIR)
METHODS = ("pointwise", "qlm", "pairwise", "listwise", "setwise", "rationale", "first")
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@dataclass(frozen=True)
class PromptTemplate:
    """A validated prompt file."""

    name: str
    methods: tuple[str, ...]
    template: str
    version: int = 1
    system: str = ""
    answers: dict = field(default_factory=dict)
    output_regex: str = ""
    description: str = ""
    path: str = ""

    def render_user(self, **fields) -> str:
        try:
            return _ENV.from_string(self.template).render(**fields)
        except jinja2.UndefinedError as e:
            raise LlmrankError(f"prompt '{self.name}' ({self.path}): template uses a field not given: {e.message}") from None

    def messages(self, **fields) -> list[dict]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": self.render_user(**fields)}]

    @property
    def fields(self) -> frozenset[str]:
        """The names the template reads (``query``, ``document``, ``label`` …)."""
        return _template_fields(self.template)

    @property
    def method(self) -> str:
        """The first method the prompt declares (the one it is written for)."""
        return self.methods[0]

    def check_method(self, method: str) -> None:
        """A clear error naming the file when this prompt does not declare ``method``."""
        if method not in self.methods:
            raise LlmrankError(f"{self.path or self.name}: prompt '{self.name}' is written for "
                               f"{', '.join(self.methods)} (key 'methods'), not for method '{method}'; "
                               f"pick a {method} prompt ({', '.join(prompts_for_method(method)) or 'none shipped'})")

    @property
    def key(self) -> str:
        """Identifies the wording for caches: ``name@version``."""
        return f"{self.name}@{self.version}"


@lru_cache(maxsize=256)
def _template_fields(template: str) -> frozenset[str]:
    from jinja2 import meta

    return frozenset(meta.find_undeclared_variables(_ENV.parse(template)))


_REQUIRED = {"name": str, "template": str}
_OPTIONAL = {"version": int, "system": str, "answers": dict, "output_regex": str, "description": str,
             "methods": list, "method": str}


def prompt_path(name_or_path: str) -> Path:
    """Where a prompt name or path is read from (see the module docstring); the path may not exist."""
    path = Path(name_or_path)
    if not path.suffix:
        for folder in dict.fromkeys([PROMPTS_DIR, SHIPPED_PROMPTS_DIR]):
            if (folder / f"{name_or_path}.yaml").is_file():
                return folder / f"{name_or_path}.yaml"
        return PROMPTS_DIR / f"{name_or_path}.yaml"
    if path.exists():
        return path.resolve()
    if path.parent.name == "prompts" and (SHIPPED_PROMPTS_DIR / path.name).is_file():
        return SHIPPED_PROMPTS_DIR / path.name
    return path


def load_prompt(name_or_path: str | PromptTemplate, method: str | None = None) -> PromptTemplate:
    """Load a prompt by name (``yes_no``) or by path; a malformed file names file and key. With ``method``,
    a prompt that does not declare that method is an error naming the file."""
    prompt = name_or_path if isinstance(name_or_path, PromptTemplate) else _load(str(prompt_path(name_or_path)))
    if method is not None:
        prompt.check_method(method)
    return prompt


@lru_cache(maxsize=64)
def _load(path_str: str) -> PromptTemplate:
    path = Path(path_str)
    if not path.is_file():
        known = ", ".join(available_prompts())
        raise LlmrankError(f"prompt '{path_str}' not found (a file path, or one of: {known})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise LlmrankError(f"{path}: malformed YAML ({e})") from None
    if not isinstance(raw, dict):
        raise LlmrankError(f"{path}: a prompt file is a mapping with keys {sorted(_REQUIRED)}")
    for key, typ in _REQUIRED.items():
        if key not in raw:
            raise LlmrankError(f"{path}: missing required key '{key}'")
    if ("method" in raw) == ("methods" in raw):
        raise LlmrankError(f"{path}: give the methods the prompt fits as 'methods: [pointwise]' "
                           f"({'not both methods and method' if 'method' in raw else 'missing key methods'})")
    for key, value in raw.items():
        typ = _REQUIRED.get(key) or _OPTIONAL.get(key)
        if typ is None:
            raise LlmrankError(f"{path}: unknown key '{key}' (expected {sorted(_REQUIRED) + sorted(_OPTIONAL)})")
        if not isinstance(value, typ):
            raise LlmrankError(f"{path}: key '{key}' should be {typ.__name__}, got {type(value).__name__}")
    methods = raw.pop("methods") if "methods" in raw else [raw.pop("method")]
    if not methods or any(m not in METHODS for m in methods):
        raise LlmrankError(f"{path}: key 'methods': {methods} — each one of {', '.join(METHODS)}")
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in raw.get("answers", {}).items()):
        raise LlmrankError(f"{path}: key 'answers' maps label names to token texts, both quoted strings "
                           "(YAML reads a bare yes/no as a boolean)")
    if "pointwise" in methods and not raw.get("answers"):
        raise LlmrankError(f"{path}: a pointwise prompt needs 'answers' (e.g. {{yes: yes, no: no}})")
    try:
        _ENV.parse(raw["template"])
    except jinja2.TemplateSyntaxError as e:
        raise LlmrankError(f"{path}: key 'template' is not valid jinja2 (line {e.lineno}: {e.message})") from None
    return PromptTemplate(path=str(path), methods=tuple(methods), **raw)


def available_prompts() -> list[str]:
    return sorted({p.stem for d in (PROMPTS_DIR, SHIPPED_PROMPTS_DIR) for p in d.glob("*.yaml")})


def prompts_for_method(method: str) -> list[str]:
    """The names of the available prompts that declare ``method``."""
    out = []
    for name in available_prompts():
        try:
            if method in load_prompt(name).methods:
                out.append(name)
        except LlmrankError:
            continue
    return out


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def template_thinks(tokenizer) -> bool:
    """Whether the tokenizer's chat template has a thinking switch (``enable_thinking``, as Qwen3's does)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = " ".join(str(t) for t in template.values())
    return isinstance(template, str) and "enable_thinking" in template


def close_thinking(text: str) -> str:
    """``text`` that ends inside an open think block (a template that always opens one, as DeepSeek-R1's
    does) with the block closed empty, so the next token is the answer; any other text unchanged."""
    if text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE):
        return text + ("" if text.endswith("\n") else "\n") + "\n" + THINK_CLOSE + "\n\n"
    return text


def split_thinking(text: str) -> tuple[str, str]:
    """``(thought, answer)`` of a generation: the inside of a ``<think>…</think>`` block (the prompt may have
    opened it) and what follows it. A block never closed (the budget ran out while thinking) is all thought
    and no answer; a text without a block is all answer."""
    text = text or ""
    if THINK_CLOSE in text:
        head, _, tail = text.rpartition(THINK_CLOSE)
        return head.split(THINK_OPEN, 1)[-1].strip(), tail
    if text.lstrip().startswith(THINK_OPEN):
        return text.lstrip()[len(THINK_OPEN):].strip(), ""
    return "", text


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = True, thinking: bool = False) -> str:
    """The model-input string for ``messages``: the tokenizer's chat template when it has one, otherwise
    the system and user texts joined by blank lines (base models such as Gemma 3 270M).

    Thinking is off unless ``thinking``: a template with a thinking switch gets ``enable_thinking=False``
    (Qwen3's templates think by default), and a prompt that would end inside an open think block has it closed
    (:func:`close_thinking`), so a scorer reads its label at the answer position. A template without either is
    rendered as it always was."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        extra = {"enable_thinking": thinking} if template_thinks(tokenizer) else {}
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             **extra)
        return close_thinking(text) if add_generation_prompt and not thinking else text
    text = "\n\n".join(m["content"] for m in messages if m["role"] in ("system", "user"))
    return text + ("\n\nAnswer:" if add_generation_prompt else "")
