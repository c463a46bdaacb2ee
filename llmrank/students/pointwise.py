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

import logging
from dataclasses import dataclass, field
from pathlib import Path

from llmrank.data.types import RankingData
from llmrank.errors import LlmrankError
from llmrank.rerankers.pointwise import DEFAULT_MAX_DOC_TOKENS
from llmrank.students.base import (
    Student,
    StudentFields,
    config_dict,
    group_ranking_loss,
    lazy_names,
    write_training_logs,
)

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
    negative_band: list = field(default_factory=list, metadata={
        "help": "hard negatives: the group's negatives come from this band of first-stage ranks, [from, to] (1-based), "
                "hardest first, after the teacher's best and the judged positive; empty: the teacher's top half plus "
                "a seeded sample of the rest", "hash_neutral": True})
    negative_margin: float = field(default=0.0, metadata={
        "help": "false-negative filter of the mined negatives: one the teacher scores at or above the positive's "
                "score minus this margin is dropped (the teacher's score scale)", "ge": 0, "hash_neutral": True})


@dataclass
class PointwiseDPOOptions:
    """``refine.options`` of DPO for a pointwise student (:func:`llmrank.students.pointwise.pointwise_pairs`)."""

    pairs_per_query: int = field(default=8, metadata={"help": "pairs the student misorders kept per query, hardest first", "ge": 1})
    top_m: int = field(default=5, metadata={"help": "for a query without judgements: the teacher's yes, or its top_m, are relevant", "ge": 1})
    queries: int | None = field(default=None, metadata={"help": "the first N teacher queries only", "ge": 1})
    anchors: float = field(default=1.0, metadata={"help": "pairs the student orders right (closest first) per misordered pair", "ge": 0})


_CACHE: dict[str, type] = {}


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


def trainer_class():
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
                loss = group_ranking_loss(self.ranking_loss, scores, inputs)
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


# -- DPO refinement data -----------------------------------------------------------------------------------

def pointwise_pairs(data: RankingData, teacher_records: dict[str, dict], reranker, tokenizer, meta: dict,
                    pairs_per_query: int = 8, top_m: int = 5, queries: int | None = None, anchors: float = 1.0,
                    progress: bool = False) -> tuple[list[dict], dict]:
    """Tokenized single-answer-token DPO rows for a pointwise student (:mod:`llmrank.training.dpo`'s docstring), and counts.
    ``reranker`` is the distilled student's (its scores decide which pairs it misorders).

    Per query: up to ``pairs_per_query`` (relevant, not relevant) pairs it misorders, hardest first, and
    ``anchors`` times as many that it orders right, closest first. The anchors matter: the misordered pairs
    alone are a biased sample (relevant documents that look irrelevant to the student and the reverse), and
    DPO on them alone teaches a good student to invert its own judgement (measured: a distilled student at
    0.7553 nDCG@10 fell to 0.0776 on SciFact test); with the anchors each update corrects errors while keeping
    what the student ranks right."""
    from llmrank.prompts import load_prompt
    from llmrank.rerankers.pointwise import build_pointwise_prompt
    from llmrank.students.refine_data import each_query, query_docs, relevance_targets

    prompt = load_prompt(meta["prompt"])
    yes_id, no_id = answer_token_ids(tokenizer, prompt)
    if anchors < 0:
        raise LlmrankError(f"refine.options.anchors: expected a number >= 0 (got {anchors})")
    rows, stats = [], {"queries": 0, "pairs_misordered": 0, "pairs_kept": 0, "pairs_anchor": 0}
    qids = list(teacher_records)[:queries] if queries else list(teacher_records)
    for qid in each_query(qids, "student scores for DPO pairs", progress):
        rec = teacher_records[qid]
        query, docs = query_docs(data, rec)
        target = relevance_targets(data, rec, top_m)
        scores = dict(zip(*_scored(reranker, query, docs)))
        pos = [d for d in rec["ranking"] if target.get(d) is True]
        neg = [d for d in rec["ranking"] if target.get(d) is False]
        bad = [(scores[n] - scores[p], p, n) for p in pos for n in neg if scores[n] >= scores[p]]
        bad.sort(key=lambda t: -t[0])
        stats["queries"] += 1
        stats["pairs_misordered"] += len(bad)
        kept = bad[:pairs_per_query]
        stats["pairs_kept"] += len(kept)
        good = sorted((scores[p] - scores[n], p, n) for p in pos for n in neg if scores[p] > scores[n])
        anchor = good[:round(anchors * len(kept))]
        stats["pairs_anchor"] += len(anchor)
        seen = set()
        for _, p, n in kept + anchor:
            for d, relevant in ((p, True), (n, False)):
                if d in seen:
                    continue
                seen.add(d)
                text, _ = build_pointwise_prompt(prompt, tokenizer, query.text, data.docs[d].contents,
                                                 meta.get("max_doc_tokens"))
                rows.append({"prompt_ids": tokenizer.encode(text, add_special_tokens=False),
                             "chosen_ids": [yes_id if relevant else no_id],
                             "rejected_ids": [no_id if relevant else yes_id], "qid": qid, "docid": d})
    return rows, stats


def _scored(reranker, query, docs) -> tuple[list[str], list[float]]:
    ranking = reranker.rerank(query, docs)
    return list(ranking.docids), [float(s) for s in ranking.scores]


def load_base(cfg):
    """``(tokenizer, base causal LM with LoRA adapters attached, resolved base path)``; 4-bit nf4 base
    when ``cfg.qlora``; the base itself, every layer trainable, when ``cfg.finetune == "full"``."""
    return PointwiseStudent.load_for_training(cfg)


def build_trainer(cfg, examples: list[dict], callbacks=None, trainer_cls: type | None = None):
    """``(trainer, tokenizer, base_path, prompt)``: the distillation trainer (``trainer_cls``, default
    :func:`trainer_class`) over the groups ``examples`` (:func:`llmrank.students.examples.build_groups`) with
    the base model and its LoRA, ready to ``train()``. ``cfg`` is a :class:`PointwiseStudentConfig`."""
    import datasets

    from llmrank.losses import build_loss
    from llmrank.prompts import load_prompt

    prompt = load_prompt(cfg.prompt)
    tok, model, base_path = load_base(cfg)
    cfg.remove_unused_columns = False
    cfg.label_names = []
    loss = build_loss(cfg.loss, **dict(cfg.loss_options))
    trainer = (trainer_cls or trainer_class())(
        model=model, args=cfg, train_dataset=datasets.Dataset.from_list(examples),
        data_collator=GroupCollator(tok, prompt, cfg.max_doc_tokens, cfg.group_size),
        ranking_loss=loss, answer_ids=answer_token_ids(tok, prompt), callbacks=callbacks,
    )
    return trainer, tok, base_path, prompt


def student_meta(cfg, base_path: str, prompt, kind: str = "pointwise", fields_cls=None) -> dict:
    return {"kind": kind, "base_model": str(base_path), "prompt": prompt.path, "prompt_key": prompt.key,
            "answers": {"yes": prompt.answers["yes"], "no": prompt.answers["no"]}, "variants": False,
            "max_doc_tokens": cfg.max_doc_tokens, "config": config_dict(cfg, fields_cls or PointwiseFields)}


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
    config_name = "PointwiseStudentConfig"
    fields = PointwiseFields
    base_config = "TrainingArguments"
    description = "a yes/no scorer (one forward pass per document) trained on a ranking loss"
    refine_options = {"dpo": PointwiseDPOOptions}

    @classmethod
    def check_section(cls, section) -> list[tuple[str, str]]:
        problems = super().check_section(section)  # dtype, fine-tuning, loss and loss_options
        if section.negative_band:
            from llmrank.students.negatives import check_band

            try:
                check_band(section.negative_band)
            except LlmrankError as e:
                problems.append(("negative_band", str(e)))
        from llmrank.prompts import load_prompt

        try:
            load_prompt(section.prompt, method="pointwise")
        except LlmrankError as e:
            problems.append(("prompt", str(e)))
        return problems

    @classmethod
    def build_examples(cls, data, teacher_records: dict, cfg, seed: int = 0) -> list[dict]:
        from llmrank.students.examples import build_groups

        band = getattr(cfg, "negative_band", None) or None
        stats: dict = {}
        groups = build_groups(data, teacher_records, cfg.group_size, seed=seed,
                              negative_band=tuple(band) if band else None,
                              negative_margin=getattr(cfg, "negative_margin", 0.0), stats=stats)
        if band:
            import sys

            print(f"[distill] hard negatives from first-stage ranks {band[0]}-{band[1]}: {stats['negatives_dropped']} "
                  f"dropped by the teacher-margin filter (margin {stats['margin']}), {stats['short_groups']} of "
                  f"{stats['groups']} groups short of {cfg.group_size}", file=sys.stderr)
        return groups

    @classmethod
    def train(cls, cfg, examples: list[dict], resume: bool | str | None = None, callbacks=None) -> Path:
        """Train on groups (:func:`llmrank.students.examples.build_groups`); saves ``adapter/`` (and
        ``merged/`` when ``cfg.merge``) under ``cfg.output_dir`` with ``trainer_log.json`` and
        ``training_info.json``."""
        trainer, tok, base_path, prompt = build_trainer(cfg, examples, callbacks)
        trainer.train(resume_from_checkpoint=resume)
        out = Path(cfg.output_dir)
        if trainer.is_world_process_zero():
            cls.save(trainer.model, tok, out, student_meta(cfg, base_path, prompt, cls.kind, cls.fields), cfg.merge)
            write_training_logs(trainer, out, {"groups": len(examples),
                                               "per_device_train_batch_size": cfg.per_device_train_batch_size,
                                               "gradient_accumulation_steps": cfg.gradient_accumulation_steps})
        trainer.accelerator.wait_for_everyone()
        return out

    @classmethod
    def refine_rows(cls, method: str, student_dir: Path, data, teacher_records: dict, options: dict, *, out: Path,
                    dtype: str = "float32", seed: int = 0, progress: bool = False) -> tuple[list[dict], dict]:
        """DPO: single-answer-token preferences on the pairs the distilled student misorders
        (:func:`llmrank.students.pointwise.pointwise_pairs`, scored by the student itself)."""
        if method != "dpo":
            return super().refine_rows(method, student_dir, data, teacher_records, options, out=out, dtype=dtype,
                                       seed=seed, progress=progress)
        from llmrank.students import load_student, start_model

        _, tok, meta, base_path = start_model(student_dir, out, dtype)
        reranker = load_student(base_path, dtype=dtype)
        return pointwise_pairs(data, teacher_records, reranker, tok, meta, progress=progress, **options)

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


__getattr__ = lazy_names(PointwiseStudentConfig=lambda: PointwiseStudent.config_class(),
                          DistillTrainer=lambda: trainer_class())
