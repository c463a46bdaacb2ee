"""Whether a saved model folder is whole before a library reads it: the files a student, an export or a
prepared checkpoint needs, and safetensors files whose header and size agree.

A half-copied or damaged folder (no ``config.json``, no tokenizer, a truncated or overwritten weights
file, an adapter without its config or its weights) is named here, with the file and what is wrong,
instead of surfacing as a library traceback or, worse, as a model that loads and scores nonsense.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from llmrank.errors import LlmrankError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def check_safetensors(path: Path) -> None:
    """A safetensors file whose header parses and whose size is exactly what the header describes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise LlmrankError(f"{path}: damaged weights file ({size} bytes, too short for a safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 << 20):
            raise LlmrankError(f"{path}: damaged weights file (not safetensors: the header claims {n} bytes)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise LlmrankError(f"{path}: damaged weights file (its safetensors header is not JSON)") from None
    if not isinstance(header, dict):
        raise LlmrankError(f"{path}: damaged weights file (its safetensors header is not a JSON object)")
    end = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(t["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise LlmrankError(f"{path}: damaged weights file (tensor {name!r} has no data offsets)") from None
    if 8 + n + end != size:
        raise LlmrankError(f"{path}: damaged weights file: {size} bytes, its header describes {8 + n + end} "
                           "(truncated or overwritten; copy or train it again)")


def _weights(folder: Path, stem: str) -> list[Path]:
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise LlmrankError(f"{index}: damaged (no weight_map)") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise LlmrankError(f"{folder}: weights shard {missing[0]} named by {index.name} is missing")
        return [folder / s for s in shards]
    return [p for p in (folder / f"{stem}.safetensors", folder / f"{stem}.bin") if p.is_file()]


def check_model_folder(folder: str | Path, what: str = "model") -> None:
    """A local model folder (a merged student, an export, a plain checkpoint) has its config, a tokenizer
    and whole weights; a LoRA adapter folder has its adapter config and whole adapter weights."""
    folder = Path(folder)
    has_cfg = (folder / "adapter_config.json").is_file()
    adapter_w = _weights(folder, "adapter_model")
    if has_cfg or adapter_w:
        if not has_cfg:
            raise LlmrankError(f"{folder}: a LoRA adapter without adapter_config.json; the {what} is incomplete")
        if not adapter_w:
            raise LlmrankError(f"{folder}: a LoRA adapter without its weights (adapter_model.safetensors); "
                               f"the {what} is incomplete")
        _json(folder / "adapter_config.json")
        weights = adapter_w
    else:
        if not (folder / "config.json").is_file():
            raise LlmrankError(f"{folder}: no config.json; the {what} is incomplete (copied in part?)")
        _json(folder / "config.json")
        weights = _weights(folder, "model") or _weights(folder, "pytorch_model")
        if not weights:
            raise LlmrankError(f"{folder}: no weights (model.safetensors); the {what} is incomplete")
    if not any((folder / t).is_file() for t in TOKENIZER_FILES):
        raise LlmrankError(f"{folder}: no tokenizer (tokenizer.json); the {what} is incomplete")
    for w in weights:
        if w.suffix == ".safetensors":
            check_safetensors(w)


def _json(path: Path) -> None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise LlmrankError(f"{path}: damaged (not JSON)") from None
