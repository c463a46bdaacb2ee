"""The pointwise student: a causal LM scored by its yes/no next-token logit, trained with LoRA on ranking
losses against a teacher's groups.

The student's score of (query, document) is ``logit(yes) - logit(no)`` at the last position of the prompt
built by :func:`llmrank.rerankers.pointwise.build_pointwise_prompt` — exactly one "yes" and one "no" token,
the pair vLLM's ``from_2_way_softmax`` reads when the student is served, so sigmoid(score) is the served
relevance score. Training runs on ``transformers.Trainer`` (:class:`DistillTrainer`): ``accelerate
launch``, gradient accumulation, checkpointing and resume, logging and DeepSpeed/FSDP configs work as usual.

Its config is :class:`PointwiseStudentConfig`, ``transformers.TrainingArguments`` plus
:class:`PointwiseFields`. This module imports no deep-learning library at import time (the recipe reads
the fields to validate a recipe at once); the config and trainer classes are built on first use.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrank.errors import LlmrankError
from llmrank.rerankers.pointwise import DEFAULT_MAX_DOC_TOKENS
from llmrank.students.base import (Student, StudentFields, build_config_class, config_dict, freeze_embeddings,
                                   write_student)

log = logging.getLogger(__name__)
SERVE_TEMPLATE = "score_template.jinja"
_Q, _D = "\x00LLMRANK_QUERY\x00", "\x00LLMRANK_DOCUMENT\x00"


@dataclass
class PointwiseFields(StudentFields):
    """What the pointwise yes/no student is and which ranking loss teaches it."""

    prompt: str = field(default="yes_no", metadata={"help": "pointwise prompt (name or YAML path) the student is trained and served with"})
    loss: str = field(default="listnet", metadata={"help": "ranking loss (llmrank.losses): ranknet, margin_mse, listnet, kl, listmle, pld, cprd, bce, label_ce, combined"})
    loss_options: dict = field(default_factory=dict, metadata={"help": "keyword arguments of the loss (e.g. temperature; weights for combined)"})
    group_size: int = field(default=8, metadata={"help": "candidates per query in one training group", "ge": 2})
    max_doc_tokens: int = field(default=DEFAULT_MAX_DOC_TOKENS, metadata={"help": "documents are truncated to this many tokens (document side only)", "ge": 8})
    qlora: bool = field(default=False, metadata={"help": "load the base in 4-bit nf4 (bitsandbytes) and train LoRA on top"})


def __getattr__(name: str) -> Any:
    """``PointwiseStudentConfig`` and ``DistillTrainer`` are built on first use (they import transformers)."""
    if name == "PointwiseStudentConfig":
        return _config_class()
    if name == "DistillTrainer":
        return _trainer_class()
    raise AttributeError(name)


_CACHE: dict[str, type] = {}


def _config_class():
    from transformers import TrainingArguments

    return build_config_class(PointwiseFields, TrainingArguments, "PointwiseStudentConfig", __name__,
                              "``TrainingArguments`` + :class:`PointwiseFields`: everything a pointwise student's "
                              "training needs.")


class GroupCollator:
    """Flattens B groups of g documents into B*g left-padded prompts and [B, g] teacher tensors."""

    def __init__(self, tokenizer, prompt, max_doc_tokens: int, group_size: int):
        self.tokenizer, self.prompt, self.max_doc_tokens, self.group_size = tokenizer, prompt, max_doc_tokens, group_size

    def __call__(self, groups: list[dict]) -> dict:
        import torch

        from llmrank.rerankers.pointwise import build_pointwise_prompt

        g = self.group_size
        seqs, mask = [], torch.zeros(len(groups), g, dtype=torch.bool)
        ts, tr, lab = (torch.zeros(len(groups), g) for _ in range(3))
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        for b, grp in enumerate(groups):
            n = min(len(grp["docs"]), g)
            for j in range(g):
                if j < n:
                    text, _ = build_pointwise_prompt(self.prompt, self.tokenizer, grp["query"], grp["docs"][j], self.max_doc_tokens)
                    seqs.append(self.tokenizer.encode(text, add_special_tokens=False))
                else:
                    seqs.append([pad_id])  # a padding slot, masked out of the loss
            mask[b, :n] = True
            ts[b, :n] = torch.tensor(grp["teacher_scores"][:n])
            tr[b, :n] = torch.tensor(grp["teacher_ranks"][:n], dtype=torch.float)
            lab[b, :n] = torch.tensor(grp["labels"][:n])
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):  # left padding: every prompt ends at the last column
            ids[r, width - len(s):] = torch.tensor(s)
            att[r, width - len(s):] = 1
        return {"input_ids": ids, "attention_mask": att, "group_mask": mask, "teacher_scores": ts,
                "teacher_ranks": tr.long(), "labels_graded": lab}


def _trainer_class():
    if "trainer" not in _CACHE:
        import torch
        from transformers import Trainer

        class DistillTrainer(Trainer):
            """``Trainer`` whose loss is a ranking loss over each group's yes-minus-no student scores."""

            def __init__(self, *args, ranking_loss=None, answer_ids: tuple[int, int] = (0, 0), **kwargs):
                super().__init__(*args, **kwargs)
                self.ranking_loss = ranking_loss
                self.answer_ids = torch.tensor(answer_ids)

            def student_scores(self, model, inputs) -> torch.Tensor:
                """``logit(yes) - logit(no)`` at each (left-padded) prompt's last position, through the model's
                own forward (so DDP/FSDP wrappers synchronise gradients), with exact positions and only the
                last position's logits computed."""
                mask = inputs["attention_mask"]
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                out = model(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions,
                            logits_to_keep=1, use_cache=False)
                logits = out.logits[:, -1, :].float()[:, self.answer_ids.to(out.logits.device)]
                return (logits[:, 0] - logits[:, 1]).view(inputs["group_mask"].shape)

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                scores = self.student_scores(model, inputs)
                loss = self.ranking_loss(scores.float(), teacher_scores=inputs["teacher_scores"],
                                         teacher_ranks=inputs["teacher_ranks"], labels=inputs["labels_graded"],
                                         mask=inputs["group_mask"])
                return (loss, {"scores": scores}) if return_outputs else loss

        DistillTrainer.__module__ = __name__
        DistillTrainer.__qualname__ = "DistillTrainer"
        _CACHE["trainer"] = DistillTrainer
    return _CACHE["trainer"]


def answer_token_ids(tokenizer, prompt) -> tuple[int, int]:
    """The single "yes" and "no" token ids the student is trained, scored and served with."""
    from llmrank.backends.base import label_token_ids

    return (label_token_ids(tokenizer, prompt.answers["yes"], variants=False)[0],
            label_token_ids(tokenizer, prompt.answers["no"], variants=False)[0])


def load_base(cfg):
    """``(tokenizer, base causal LM with LoRA adapters attached, resolved base path)``; 4-bit nf4 base
    when ``cfg.qlora``; the base itself, every layer trainable, when ``cfg.finetune == "full"``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrank.backends.hf import resolve_dtype
    from llmrank.models import resolve_model

    path = resolve_model(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    kwargs = {"dtype": resolve_dtype(cfg.dtype)}
    if getattr(cfg, "qlora", False):
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if getattr(cfg, "finetune", "lora") == "full":
        freeze_embeddings(model)
        return tok, model, path
    if getattr(cfg, "qlora", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    return tok, get_peft_model(model, lora), path


def student_meta(cfg, base_path: str, prompt) -> dict:
    return {"kind": "pointwise", "base_model": str(base_path), "prompt": prompt.path, "prompt_key": prompt.key,
            "answers": {"yes": prompt.answers["yes"], "no": prompt.answers["no"]}, "variants": False,
            "max_doc_tokens": cfg.max_doc_tokens, "config": config_dict(cfg, PointwiseFields)}


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


class PointwiseStudent(Student):
    kind = "pointwise"
    fields = PointwiseFields
    base_config = "TrainingArguments"
    description = "a yes/no scorer (one forward pass per document) trained on a ranking loss"
    refine_methods = ("dpo",)

    @classmethod
    def config_class(cls):
        return _config_class()

    @classmethod
    def check_section(cls, section) -> list[tuple[str, str]]:
        from llmrank.losses import LOSS_NAMES

        problems = super().check_section(section)
        if section.loss not in LOSS_NAMES:
            import difflib

            close = difflib.get_close_matches(section.loss, LOSS_NAMES, n=1, cutoff=0.5)
            problems.append(("loss", f"unknown loss {section.loss!r}" + (f"; did you mean '{close[0]}'?" if close else "")
                             + f" (one of {', '.join(LOSS_NAMES)})"))
        return problems

    @classmethod
    def build_examples(cls, data, teacher_records: dict, cfg, seed: int = 0) -> list[dict]:
        from llmrank.training.examples import build_groups

        return build_groups(data, teacher_records, cfg.group_size, seed=seed)

    @classmethod
    def train(cls, cfg, examples: list[dict], resume: bool | str | None = None, callbacks=None) -> Path:
        """Train on groups (:func:`llmrank.training.examples.build_groups`); saves ``adapter/`` (and
        ``merged/`` when ``cfg.merge``) under ``cfg.output_dir`` with ``trainer_log.json`` and
        ``training_info.json``."""
        import datasets

        from llmrank.losses import build_loss
        from llmrank.prompts import load_prompt

        prompt = load_prompt(cfg.prompt)
        tok, model, base_path = load_base(cfg)
        cfg.remove_unused_columns = False
        cfg.label_names = []
        loss = build_loss(cfg.loss, **dict(cfg.loss_options))
        trainer = _trainer_class()(
            model=model, args=cfg, train_dataset=datasets.Dataset.from_list(examples),
            data_collator=GroupCollator(tok, prompt, cfg.max_doc_tokens, cfg.group_size),
            ranking_loss=loss, answer_ids=answer_token_ids(tok, prompt), callbacks=callbacks,
        )
        trainer.train(resume_from_checkpoint=resume)
        out = Path(cfg.output_dir)
        if trainer.is_world_process_zero():
            write_student(trainer.model, tok, out, student_meta(cfg, base_path, prompt), cfg.merge)
            log_rows = [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]
            (out / "adapter" / "trainer_log.json").write_text(json.dumps(log_rows))
            info = {"world_size": trainer.accelerator.num_processes, "global_step": trainer.state.global_step,
                    "groups": len(examples), "per_device_train_batch_size": cfg.per_device_train_batch_size,
                    "gradient_accumulation_steps": cfg.gradient_accumulation_steps}
            (out / "adapter" / "training_info.json").write_text(json.dumps(info))
        trainer.accelerator.wait_for_everyone()
        return out

    @classmethod
    def zero_shot(cls, section, dtype: str | None = None, **backend_options):
        from llmrank.backends.hf import HFBackend
        from llmrank.rerankers.pointwise import PointwiseReranker

        return PointwiseReranker(HFBackend(section.model, dtype=dtype or section.dtype, **backend_options), section.prompt,
                                 max_doc_tokens=section.max_doc_tokens, variants=False)

    @classmethod
    def reranker(cls, model, tokenizer, meta: dict, path: Path, dtype: str, **backend_options):
        from llmrank.backends.hf import HFBackend
        from llmrank.rerankers.pointwise import PointwiseReranker

        backend = HFBackend(str(path), dtype=dtype, model_obj=model, tokenizer=tokenizer, **backend_options)
        return PointwiseReranker(backend, meta["prompt"], max_doc_tokens=meta["max_doc_tokens"], variants=False)

    @classmethod
    def export(cls, src: Path, tmp: Path, meta: dict, model, tokenizer) -> dict:
        """A reranker on ``/rerank`` and ``/score``: vLLM's ``from_2_way_softmax`` over the student's own
        [no, yes] token pair is exactly sigmoid(logit(yes) − logit(no)), and the exported chat template
        (roles ``query`` and ``document``) renders the very string the student was trained on."""
        from llmrank.backends.base import label_token_ids
        from llmrank.prompts import load_prompt

        prompt = load_prompt(meta["prompt"])
        yes_id = label_token_ids(tokenizer, meta["answers"]["yes"], variants=False)[0]
        no_id = label_token_ids(tokenizer, meta["answers"]["no"], variants=False)[0]
        tokens = tokenizer.convert_ids_to_tokens([no_id, yes_id])
        (tmp / SERVE_TEMPLATE).write_text(score_chat_template(prompt, tokenizer))
        return {
            "prompt": prompt.key, "runner": "pooling",
            "hf_overrides": {"architectures": [seq_cls_architecture(model.config)],
                             "classifier_from_token": tokens, "method": "from_2_way_softmax"},
            "chat_template": SERVE_TEMPLATE,
            "note": (f"served score = P({tokens[1]!r}) / (P({tokens[1]!r}) + P({tokens[0]!r})) of the next token: the one "
                     "token pair this student was trained and is scored on, so /rerank scores equal llmrank's."),
        }
