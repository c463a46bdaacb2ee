"""Export a student so that vLLM serves it: the LoRA merged into the base, saved in the export dtype, with
``llmrank_serve.json`` (how to run it) and ``llmrank_student.json`` (what it is).

What the server needs besides the weights is the student kind's business
(:meth:`llmrank.students.base.Student.write_export`, :meth:`~llmrank.students.base.Student.export`): a pointwise student becomes a reranker on ``/rerank`` and
``/score`` (vLLM's ``from_2_way_softmax`` over its own yes/no token pair, and a chat template made from the
one prompt builder); a reasoning student is exported for generation with the parse rule it was trained with.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llmrank.serve.model_card import write_model_card

SERVE_FILE = "llmrank_serve.json"
SCORE_TEMPLATE = "score_template.jinja"


def export_student(student_dir: str | Path, out_dir: str | Path, dtype: str = "bfloat16", overwrite: bool = False) -> dict:
    """Merge LoRA into the base, save safetensors + tokenizer + the vLLM serving config under ``out_dir``.

    ``out_dir`` is built beside itself and renamed into place; an existing ``out_dir`` is replaced only
    when it is an llmrank export (or ``overwrite``), never when it holds or lies inside the student."""
    from llmrank.backends.hf import resolve_dtype
    from llmrank.outputs import check_output, publish_dir, temp_dir
    from llmrank.students import get_student, read_meta, student_kind

    src, out = Path(student_dir), Path(out_dir)
    resolve_dtype(dtype)
    student = get_student(student_kind(src))
    check_output(out, "export", overwrite=overwrite, inputs=[src])
    tmp = temp_dir(out)
    try:
        info = student.write_export(src, tmp, out, dtype)
        (tmp / SERVE_FILE).write_text(json.dumps(info, indent=1))
        write_model_card(tmp, src, read_meta(src), info)
        publish_dir(tmp, out, "export")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def check_hub(repo: str, timeout: float = 10.0) -> str:
    """Before any export work: ``repo`` is an ``owner/name`` id, a hub is reachable and a token is there;
    returns the account name. Anything else is one clear :class:`LlmrankError`."""
    import os

    from llmrank.errors import LlmrankError

    if repo.count("/") != 1 or not all(repo.split("/")):
        raise LlmrankError(f"--push-to-hub {repo!r}: expected a hub repository id, owner/name")
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    if constants.HF_HUB_OFFLINE:
        raise LlmrankError(f"--push-to-hub {repo}: the hub is switched off here (HF_HUB_OFFLINE is set); export "
                           "without --push-to-hub and push the folder from a machine that reaches the hub")
    import httpx

    try:
        httpx.head(endpoint, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as e:
        raise LlmrankError(f"--push-to-hub {repo}: no hub reachable at {endpoint} ({type(e).__name__}: {e}); export "
                           "without --push-to-hub and push the folder from a machine that reaches the hub (or set "
                           "HF_ENDPOINT)") from None
    from huggingface_hub import HfApi

    token = os.environ.get("HF_TOKEN") or None
    try:
        who = HfApi(endpoint=endpoint, token=token).whoami()
    except Exception as e:  # noqa: BLE001 - no token, or a token the hub refuses
        raise LlmrankError(f"--push-to-hub {repo}: {endpoint} is reachable but refuses the credentials ({e}); log in "
                           "with `hf auth login` or set HF_TOKEN") from None
    return str(who.get("name") or "")


def push_to_hub(folder: str | Path, repo: str, private: bool = False) -> str:
    """Upload an export folder (weights, tokenizer, serve info, model card) to the hub repository ``repo``
    (created when missing); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                               commit_message="llmrank export")
    return str(getattr(commit, "commit_url", commit))
