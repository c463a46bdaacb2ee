"""A YAML config loader that knows nothing of llmrank: it reads a document against any pydantic model.

What it gives a schema built on it (:mod:`llmrank.recipe` is one):

- YAML where ``1e-4`` is a number, and where a key given twice in one mapping is an error;
- ``${VAR}`` / ``${VAR:-default}`` from the environment (:func:`_interpolate`);
- ``--set a.b[0].c=value`` overrides checked against the schema (:func:`apply_override`);
- errors that name ``FILE:LINE``, the key path and what was expected, with "did you mean"
  (:func:`_format_error`, :func:`_at`, :func:`_line_map`).

Sections are :class:`Section` models (unknown keys forbidden); a union of sections told apart by a ``kind``
field (a tagged union) is walked by its tag.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from llmrank.errors import LlmrankError


class Section(BaseModel):
    # numbers are accepted for text fields (``name: ${RUN}`` with RUN=42 is the name "42")
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Loader(yaml.SafeLoader):
    """Safe YAML where ``1e-4`` is a number: PyYAML follows YAML 1.1, which reads a float without a dot
    (``learning_rate: 1e-4``) as a string, and a string learning rate reaches the optimizer."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _construct_mapping(loader, node, deep=False):
    """A mapping where a key given twice is an error (PyYAML keeps the last one silently: a second ``data:``
    section would replace the first without a word)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen.setdefault(key, line)
            except TypeError:  # an unhashable key: PyYAML reports it itself
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice (lines {first} and {line}); a key appears once in a "
                    "mapping", key_node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


def _construct_yaml_map(loader, node):
    data: dict = {}
    yield data
    data.update(_construct_mapping(loader, node))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_yaml_map)


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


# -- key paths and YAML lines ---------------------------------------------------------------------------

def _path_str(loc) -> str:
    """``('teacher', 'members', 0, 'method')`` -> ``teacher.members[0].method``."""
    out = ""
    for tok in loc:
        if isinstance(tok, int):
            out += f"[{tok}]"
        else:
            out += f".{tok}" if out else str(tok)
    return out


def _line_map(text: str) -> dict[tuple, int]:
    """1-based line of every key path in a YAML document (empty when it does not parse)."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple, int] = {}

    def walk(node, path):
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = path + (k.value,)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def _kind(annotation) -> tuple[str, Any]:
    """What a field holds: ``("model", cls)``, ``("list", item annotation)``, ``("dict", value annotation)``
    or ``("scalar", annotation)``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kind(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _kind(args[0])
        inner = [_kind(a) for a in args]
        if all(k == "model" for k, _ in inner):  # a union of sections chosen by a tag (distill: by kind)
            return ("union", [m for _, m in inner])
        return ("scalar", annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("model", annotation)
    if origin is list:
        return ("list", (get_args(annotation) or (Any,))[0])
    if origin is dict:
        return ("dict", (get_args(annotation) or (Any, Any))[-1])
    if annotation is dict or annotation is Any:
        return ("dict", Any)
    return ("scalar", annotation)


def _kind_at(loc, root: type[BaseModel]) -> tuple[str, Any] | None:
    """The kind (:func:`_kind`) at a key path from ``root``, or None inside a free-form mapping."""
    kind: tuple[str, Any] = ("model", root)
    for tok in loc:
        if kind[0] == "union":
            kind = _union_member(kind[1], tok)
            if kind[0] == "model" and _tag_of(kind[1]) == tok:
                continue
        if kind[0] == "model" and isinstance(tok, str) and tok in kind[1].model_fields:
            kind = _kind(kind[1].model_fields[tok].annotation)
        elif (kind[0] == "list" and isinstance(tok, int)) or (kind[0] in ("list", "dict") and kind[1] is not Any):
            kind = _kind(kind[1])
        else:
            return None
    return kind


def _model_at(loc, root: type[BaseModel]) -> type[BaseModel] | None:
    """The section (pydantic model) at a key path, or None inside a free-form mapping."""
    kind = _kind_at(loc, root)
    if kind is not None and kind[0] == "union":
        return kind[1][0]
    return kind[1] if kind is not None and kind[0] == "model" else None


def _union_at(loc, root: type[BaseModel]) -> list:
    """The members of the union of sections at a key path (a tagged section such as ``distill``), or []."""
    kind = _kind_at(loc, root)
    return list(kind[1]) if kind is not None and kind[0] == "union" else []


def _tag_of(model: type[BaseModel]) -> str | None:
    f = model.model_fields.get("kind")
    return f.default if f is not None and isinstance(f.default, str) else None


def _union_member(models: list, tok) -> tuple[str, Any]:
    """In a union of sections: the member a tag names (pydantic's error paths include it), else the first
    member that has the key ``tok``, else the first member."""
    for m in models:
        if _tag_of(m) == tok:
            return ("model", m)
    for m in models:
        if isinstance(tok, str) and tok in m.model_fields:
            return ("model", m)
    return ("model", models[0])


def _clean_loc(loc: tuple, root: type[BaseModel]) -> tuple:
    """A pydantic error path without the tags of tagged unions (``distill.pointwise.loss`` -> ``distill.loss``)."""
    out: list = []
    kind: tuple[str, Any] = ("model", root)
    for tok in loc:
        if kind[0] == "union":
            member = _union_member(kind[1], tok)
            if _tag_of(member[1]) == tok:
                kind = member
                continue
            kind = member
        out.append(tok)
        if kind[0] == "model" and isinstance(tok, str) and tok in kind[1].model_fields:
            kind = _kind(kind[1].model_fields[tok].annotation)
        elif kind[0] in ("list", "dict") and kind[1] is not Any:
            kind = _kind(kind[1])
        else:
            kind = ("any", None)
    return tuple(out)


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _described(value) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


# -- ${ENV} and --set ------------------------------------------------------------------------------------

def _interpolate(value, path: tuple, where: str, root: type[BaseModel]):
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string. A value that is one ``${…}`` alone and sits
    in a free-form mapping (``distill.training``, ``teacher.options`` …, where no field type converts it)
    takes the YAML type of its expansion (``max_steps: ${STEPS:-60}`` is the number 60); in a section the
    field's type converts the text, and an empty expansion there is no value (``queries: ${N:-}``)."""
    if isinstance(value, str):
        def sub(m):
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise LlmrankError(f"{where}: key '{_path_str(path)}': environment variable ${{{name}}} is not set "
                               f"(set it, or write ${{{name}:-default}} for a default)")

        out = _ENV_RE.sub(sub, value)
        if out == value or not _ENV_RE.fullmatch(value):
            return out
        if _model_at(path[:-1], root) is not None:  # a section's field: its type converts the text
            return out if out != "" else None
        try:
            typed = _yaml_load(out)
        except yaml.YAMLError:
            return out
        return typed if typed is None or isinstance(typed, (str, int, float, bool)) else out
    if isinstance(value, dict):
        return {k: _interpolate(v, path + (k,), where, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, path + (i,), where, root) for i, v in enumerate(value)]
    return value


_PART_RE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_@\-]*)((?:\[[0-9]+\])*)")


def _parse_key(key: str, fail) -> list:
    tokens: list = []
    for part in key.split("."):
        m = _PART_RE.fullmatch(part.strip())
        if not m:
            fail(f"'{part}' is not a key (expected KEY.PATH=VALUE with names such as distill.training.max_steps "
                 "or eval.datasets[0].queries)")
        tokens.append(m.group(1))
        tokens += [int(i) for i in re.findall(r"\[([0-9]+)\]", m.group(2))]
    return tokens


def apply_override(raw: dict, assignment: str, where: str, root: type[BaseModel]) -> list:
    """Apply ``a.b.c=value`` (value parsed as YAML; ``list[0]`` indexes a list) to ``raw`` in place and
    return the key path set. The path is checked against the recipe's sections first: an unknown section
    key, or a value (``data.k``) used as a section, is an error naming the key."""

    def fail(why: str):
        raise LlmrankError(f"{where} {assignment!r}: {why}")

    if "=" not in assignment:
        fail("expected KEY.PATH=VALUE, e.g. distill.training.max_steps=10")
    key, value = assignment.split("=", 1)
    if not key.strip():
        fail("nothing before '='; expected KEY.PATH=VALUE")
    tokens = _parse_key(key.strip(), fail)
    try:
        parsed = _yaml_load(value)
    except yaml.YAMLError as e:
        fail(f"the value is not valid YAML ({getattr(e, 'problem', e)})")

    # the schema: each key must exist in its section, and only sections, mappings and lists hold keys
    kind: tuple[str, Any] = ("model", root)
    for j, tok in enumerate(tokens):
        parent = _path_str(tokens[:j]) or "the recipe"
        here = _path_str(tokens[: j + 1])
        if kind[0] == "union":
            kind = _union_member(kind[1], tok)
        if kind[0] == "model":
            fields = kind[1].model_fields
            if isinstance(tok, int):
                fail(f"'{parent}' is a section, not a list")
            if tok not in fields:
                fail(f"unknown key '{here}'{_suggest(tok, fields)} (keys of {parent}: {', '.join(fields)})")
            kind = _kind(fields[tok].annotation)
        elif kind[0] == "list":
            if not isinstance(tok, int):
                fail(f"'{parent}' is a list; pick an item with {parent}[0]")
            kind = _kind(kind[1])
        elif kind[0] == "dict":
            kind = ("any", None) if kind[1] is Any else _kind(kind[1])
        elif kind[0] == "scalar":
            fail(f"'{parent}' is a value ({_type_name(kind[1])}), not a section: write --set {parent}=VALUE")

    # the document: walk (creating missing mappings), then set
    node: Any = raw
    for j, tok in enumerate(tokens[:-1]):
        here = _path_str(tokens[: j + 1])
        nxt = tokens[j + 1]
        if isinstance(tok, int):
            if tok >= len(node):
                fail(f"'{here}': the list has {len(node)} item(s)")
            child = node[tok]
        else:
            child = node.get(tok)
            if child is None:
                if isinstance(nxt, int):
                    fail(f"'{here}' is empty, so it has no item {nxt}")
                child = node[tok] = {}
        if isinstance(nxt, int) and not isinstance(child, list):
            fail(f"'{here}' is not a list (it is {_described(child)})")
        if isinstance(nxt, str) and not isinstance(child, dict):
            fail(f"'{here}' is not a section (it is {_described(child)}): write --set {here}=VALUE")
        node = child
    last = tokens[-1]
    if isinstance(last, int) and last >= len(node):
        fail(f"'{_path_str(tokens)}': the list has {len(node)} item(s)")
    node[last] = parsed
    return tokens


# -- validation errors -----------------------------------------------------------------------------------

def _format_error(e: ValidationError, where: str, lines: dict | None, overrides: list | None,
                  root: type[BaseModel]) -> str:
    """One clause per problem: ``FILE[:LINE]: key 'a.b[0].c': what is wrong (what was expected)``."""
    out = []
    for err in e.errors():
        raw = tuple(err["loc"])
        loc = _clean_loc(raw, root)
        path = _path_str(loc) or "(top level)"
        kind = err["type"]
        if kind == "union_tag_invalid":
            members = _union_at(raw, root)
            tags = [t for t in (_tag_of(m) for m in members) if t]
            noun = getattr(members[0], "tag_noun", "kind") if members else "kind"
            loc = loc + ("kind",)
            path = _path_str(loc)
            tag = (err.get("ctx") or {}).get("tag", "")
            msg = f"unknown {noun} {tag!r}{_suggest(tag, tags)} (one of {', '.join(tags)})"
        elif kind == "extra_forbidden":
            section = _model_at(raw[:-1], root)
            fields = list(section.model_fields) if section else []
            msg = "unknown key" + _suggest(loc[-1], fields)
            if fields:
                msg += f" (keys of {_path_str(loc[:-1]) or 'a recipe'}: {', '.join(fields)})"
        elif kind == "missing":
            field = None
            section = _model_at(raw[:-1], root)
            if section is not None and loc and loc[-1] in section.model_fields:
                field = section.model_fields[loc[-1]]
            msg = "required key is missing" + (f": {field.description}" if field and field.description else "")
        else:
            msg = err["msg"]
            if kind == "value_error" and msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if "input" in err and not (kind == "value_error" and isinstance(err["input"], (dict, list))):
                msg += f" (got {_described(err['input'])})"
        out.append(f"{_at(loc, where, lines, overrides)}: key '{path}': {msg}")
    return "; ".join(out)


def _at(loc: tuple, where: str, lines: dict | None, overrides: list | None) -> str:
    """``FILE:LINE`` of a key path, or ``FILE: --set 'a.b=c'`` when an override set it."""
    at = where
    src = next((o for o in overrides or [] if tuple(o[0][: len(loc)]) == tuple(loc[: len(o[0])])), None)
    if src is not None:
        at += f": --set {src[1]!r}"
    elif lines:
        for n in range(len(loc), 0, -1):
            if tuple(loc[:n]) in lines:
                at += f":{lines[tuple(loc[:n])]}"
                break
    return at


def _read_yaml(path: Path, what: str):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LlmrankError(f"{path}: {what} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        raw = _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark else ""
        col = f", column {mark.column + 1}" if mark else ""
        raise LlmrankError(f"{path}{at}: malformed YAML (line {mark.line + 1 if mark else '?'}{col}: "
                           f"{getattr(e, 'problem', None) or e})") from None
    return raw, text


def _fix_path(p: str, bases: list[Path]) -> str:
    """A relative path as it is when it exists from the working directory, else from the first base
    folder where it exists, else unchanged."""
    if p.startswith(("hf://", "/")) or Path(p).exists():
        return p
    for base in bases:
        cand = base / p
        if cand.exists():
            return str(cand)
    return p
