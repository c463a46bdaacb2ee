"""Export a student so that vLLM serves it.

A pointwise student becomes a reranker on ``/rerank`` and ``/score``: its yes/no next-token logits are
turned into a score by vLLM's ``from_2_way_softmax`` (``classifier_from_token: [no, yes]``), which is
exactly sigmoid(logit(yes) − logit(no)) — the student's own score, because the student is trained and
scored on that single token pair. The exported chat template, with ``query`` and ``document`` roles,
renders the very string :func:`llmrank.rerankers.pointwise.build_pointwise_prompt` builds (it is made from
it), so the prompt exists once.

A reasoning student is exported for generation (``/v1/chat/completions``) with its verdict parse rule.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llmrank.errors import LlmrankError

SERVE_FILE = "llmrank_serve.json"
SCORE_TEMPLATE = "score_template.jinja"
_Q, _D = "\x00LLMRANK_QUERY\x00", "\x00LLMRANK_DOCUMENT\x00"


def score_chat_template(prompt, tokenizer) -> str:
    """A jinja chat template over messages with roles ``query`` and ``document`` that renders exactly
    ``build_pointwise_prompt(prompt, tokenizer, query, document)`` (documents already within length)."""
    from llmrank.prompts import render_chat

    text = render_chat(tokenizer, prompt.messages(query=_Q, document=_D))
    if text.count(_Q) != 1 or text.count(_D) != 1:
        raise LlmrankError(f"prompt '{prompt.name}' must use {{{{ query }}}} and {{{{ document }}}} exactly once each to be served")
    out = ["{%- set query = (messages | selectattr('role', 'equalto', 'query') | first)['content'] -%}\n",
           "{%- set document = (messages | selectattr('role', 'equalto', 'document') | first)['content'] -%}\n"]
    rest = text
    while rest:
        iq, id_ = rest.find(_Q), rest.find(_D)
        cut = min(i for i in (iq, id_, len(rest)) if i >= 0)
        if cut:
            out.append("{% raw %}" + rest[:cut] + "{% endraw %}")
        if cut == len(rest):
            break
        if rest.startswith(_Q, cut):
            out.append("{{ query }}")
            rest = rest[cut + len(_Q):]
        else:
            out.append("{{ document }}")
            rest = rest[cut + len(_D):]
    return "".join(out)


def seq_cls_architecture(config) -> str:
    arch = (getattr(config, "architectures", None) or [""])[0]
    if not arch.endswith("ForCausalLM"):
        raise LlmrankError(f"cannot serve architecture '{arch}' as a reranker (expected a *ForCausalLM model)")
    return arch.replace("ForCausalLM", "ForSequenceClassification")


def export_student(student_dir: str | Path, out_dir: str | Path, dtype: str = "bfloat16", overwrite: bool = False) -> dict:
    """Merge LoRA into the base, save safetensors + tokenizer + the vLLM serving config under ``out_dir``.

    ``out_dir`` is built beside itself and renamed into place; an existing ``out_dir`` is replaced only
    when it is an llmrank export (or ``overwrite``), never when it holds or lies inside the student."""
    from llmrank.backends.hf import resolve_dtype
    from llmrank.outputs import check_output, publish_dir, temp_dir
    from llmrank.prompts import load_prompt
    from llmrank.training.distill import STUDENT_FILE, load_student_model

    src, out = Path(student_dir), Path(out_dir)
    resolve_dtype(dtype)
    check_output(out, "export", overwrite=overwrite, inputs=[src])
    model, tok, meta = load_student_model(src, "float32")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    meta_file = src / STUDENT_FILE
    model = model.to(resolve_dtype(dtype))
    tmp = temp_dir(out)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.copy(meta_file, tmp / STUDENT_FILE)
        prompt = load_prompt(meta["prompt"])
        kind = meta.get("kind", "pointwise")
        info: dict = {"kind": kind, "model_dir": str(out), "dtype": dtype, "prompt": prompt.key,
                      "max_doc_tokens": meta.get("max_doc_tokens")}
        if kind == "pointwise":
            from llmrank.backends.base import label_token_ids

            yes_id = label_token_ids(tok, meta["answers"]["yes"], variants=False)[0]
            no_id = label_token_ids(tok, meta["answers"]["no"], variants=False)[0]
            tokens = tok.convert_ids_to_tokens([no_id, yes_id])
            (tmp / SCORE_TEMPLATE).write_text(score_chat_template(prompt, tok))
            info.update({
                "runner": "pooling",
                "hf_overrides": {"architectures": [seq_cls_architecture(model.config)],
                                 "classifier_from_token": tokens, "method": "from_2_way_softmax"},
                "chat_template": SCORE_TEMPLATE,
                "note": (f"served score = P({tokens[1]!r}) / (P({tokens[1]!r}) + P({tokens[0]!r})) of the next token: the one "
                         "token pair this student was trained and is scored on, so /rerank scores equal llmrank's."),
            })
        else:
            info.update({"runner": "generate", "parse": meta.get("parse", {}),
                         "note": "reasoning student: serve for /v1/chat/completions and read the verdict with the parse rule"})
        (tmp / SERVE_FILE).write_text(json.dumps(info, indent=1))
        publish_dir(tmp, out, "export")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info
