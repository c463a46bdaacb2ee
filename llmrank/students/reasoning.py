"""The reasoning student: SFT on a teacher's rationales, so a small model explains, then gives a verdict.

Its config is :class:`ReasoningStudentConfig`, trl's ``SFTConfig`` plus :class:`ReasoningFields` (built on
first use: this module imports no deep-learning library at import time).

**Examples** (:func:`build_sft_examples`). One chat example per (query, document) the teacher explained::

    {"messages": [{"role": "system", ...},            # when the prompt has a system message
                  {"role": "user", "content": <the rationale prompt for query + document>},
                  {"role": "assistant", "content": "<explanation>\\nVerdict: yes"}],
     "qid": ..., "docid": ..., "verdict": "yes", "prompt": "rationale@1"}

The user turn is built by :func:`llmrank.rerankers.rationale.build_rationale_messages`, the same builder the
:class:`~llmrank.rerankers.rationale.RationaleReranker` uses, so the student is trained on the exact input it
is later served. The assistant turn has ONE fixed format, :data:`OUTPUT_FORMAT`. Its verdict comes from the
teacher, by this rule:

1. when the teacher recorded a verdict per document (``record["extra"]["verdicts"]``, what the rationale
   method writes): ``yes`` iff the verdict is yes (1.0), or, for a graded teacher prompt (answers 0–3, e.g.
   ``rationale_graded``), iff the grade is ``>= min_grade`` (2: the TREC DL binarisation). A document whose
   verdict the teacher's output did not contain (``None``: a parse failure) is skipped;
2. otherwise (the teacher gave only an order with its rationales): the teacher's ``top_m`` best documents are
   ``yes``, the rest ``no``.

A document with an empty explanation is skipped (there is nothing to learn to reason from).

**Training** (:meth:`ReasoningStudent.train`) runs trl's ``SFTTrainer`` with a peft ``LoraConfig``. The sequences are
tokenized here, not by trl: ``input_ids`` = the prompt string of :func:`llmrank.prompts.render_chat` (the one
place chat templates are applied) followed by the assistant turn as the chat template closes it (ChatML:
``<explanation>\\nVerdict: yes<|im_end|>\\n``; a model without a chat template: the answer and the EOS token),
and ``completion_mask`` marks the assistant tokens. With ``completion_only_loss=True`` trl turns the mask into
labels (``-100`` on every prompt token), so only the assistant turn carries loss. (trl 1.16's other route,
``assistant_only_loss=True`` on ``messages``, needs ``{% generation %}`` markers in the chat template and
refuses SmolLM2's ChatML template, which has none and which trl cannot patch.) The trainer is trl's with
one change: off CUDA/XPU the LM head runs on the answer positions only (trl's fused head projects every
position there), the same loss and logged metrics at a fraction of the cost — see
:func:`completion_trainer_class`.

**Inference** (:class:`ReasoningStudentReranker`). The student writes its explanation and verdict greedily;
the text up to and including the last ``Verdict:`` is appended to the prompt and the next-token distribution
there gives the score ``P(yes) / (P(yes) + P(no))`` (a graded score, not 0/1). When the student wrote no
``Verdict:`` within the token budget, ``\\nVerdict:`` is appended to what it wrote and scored the same way.
When the backend cannot give log-probabilities, the parsed verdict (1/0) is the score, and 0.5 when there is
none. An output without a readable verdict is counted in ``cost["parse_failures"]``; it is never fatal.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmrank.backends.base import Backend, GenerateRequest, ScoreRequest, two_way
from llmrank.data.types import Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.prompts import PromptTemplate, load_prompt, render_chat
from llmrank.rerankers.base import ranking_from_scores
from llmrank.rerankers.pointwise import DEFAULT_MAX_DOC_TOKENS
from llmrank.rerankers.rationale import RationaleReranker, build_rationale_messages, parse_rationale
from llmrank.students.base import Student, StudentFields, config_dict, lazy_names, lora_of, write_training_logs
from llmrank.teacher import prompt_is_graded, teacher_verdicts

log = logging.getLogger(__name__)

OUTPUT_FORMAT = "{explanation}\nVerdict: {verdict}"
"""The one output format of the reasoning student: the explanation, then a last line ``Verdict: yes|no``."""
VERDICT_HEAD = re.compile(r"verdict\s*:", re.I)
"""Where the verdict word follows: the student is scored at the last match."""
VERDICT_REGEX = r"Verdict:\s*(yes|no)"
"""The parse rule written into the student's metadata (the prompt's ``output_regex`` when it has one)."""


# -- examples ------------------------------------------------------------------------------------------

def _is_graded(prompt: PromptTemplate) -> bool:
    return prompt_is_graded(prompt)


def _yes_no_prompt(prompt: str | PromptTemplate) -> PromptTemplate:
    p = load_prompt(prompt) if isinstance(prompt, str) else prompt
    if p.method != "rationale":
        raise LlmrankError(f"prompt '{p.name}' is for {p.method}; the reasoning student needs a rationale prompt")
    if _is_graded(p):
        raise LlmrankError(f"prompt '{p.name}' asks for a grade; the reasoning student writes 'Verdict: yes|no' — "
                           "use a yes/no rationale prompt (e.g. 'rationale'); a graded teacher's records still work")
    return p


def build_sft_examples(data: RankingData, teacher_records: dict[str, dict] | Iterable[dict],
                       prompt: str | PromptTemplate = "rationale", tokenizer=None,
                       max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS, top_m: int = 5,
                       min_grade: float = 2.0) -> list[dict]:
    """Chat examples ``{"messages": [system?, user, assistant], "qid", "docid", "verdict", "prompt"}`` from the
    teacher records that have rationales (records without are ignored), in teacher order.

    ``tokenizer`` (the student's) truncates documents to ``max_doc_tokens`` exactly as the student's reranker
    will; without it documents are kept whole. ``top_m`` and ``min_grade`` set the verdict rule (module
    docstring). Raises when no example can be built.
    """
    p = _yes_no_prompt(prompt)
    records = list(teacher_records.values()) if isinstance(teacher_records, dict) else list(teacher_records)
    yes_word, no_word = p.answers.get("yes", "yes"), p.answers.get("no", "no")
    examples: list[dict] = []
    skipped: Counter = Counter()
    for rec in records:
        rationales = rec.get("rationales") or {}
        if not rationales:
            skipped["records_without_rationales"] += 1
            continue
        qid = str(rec["qid"])
        if qid in data.queries:
            query = data.queries[qid].text
        elif rec.get("query"):
            query = rec["query"]
        else:
            raise LlmrankError(f"teacher record for query '{qid}' has no query text in {data.source}")
        verdicts = teacher_verdicts(rec, top_m, min_grade)
        order = [d for d in rec["ranking"] if d in rationales] + [d for d in rationales if d not in rec["ranking"]]
        for docid in order:
            explanation = (rationales.get(docid) or "").strip()
            if not explanation:
                skipped["empty_explanation"] += 1
                continue
            verdict = verdicts.get(docid)
            if verdict is None:
                skipped["no_teacher_verdict"] += 1
                continue
            if docid not in data.docs:
                raise LlmrankError(f"teacher record for query '{qid}' names document '{docid}' not in {data.source}")
            messages, _ = build_rationale_messages(p, tokenizer, query, data.docs[docid].contents, max_doc_tokens)
            word = yes_word if verdict else no_word
            messages = messages + [{"role": "assistant", "content": OUTPUT_FORMAT.format(explanation=explanation, verdict=word)}]
            examples.append({"messages": messages, "qid": qid, "docid": docid, "verdict": word, "prompt": p.key})
    if skipped:
        log.info("SFT examples: %d built, skipped %s", len(examples), dict(skipped))
    if not examples:
        raise LlmrankError(f"no SFT examples: the teacher records carry no usable rationales ({dict(skipped) or 'none given'}); "
                           "run the teacher with --method rationale")
    return examples


def sft_texts(tokenizer, messages: list[dict]) -> tuple[str, str]:
    """``(prompt, completion)`` strings of a chat example: the prompt as :func:`render_chat` renders it for
    generation, and the assistant turn as the chat template closes it (its end-of-turn token included) — or,
    for a model without a chat template, the answer followed by the EOS token."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("an SFT example's last message is the assistant's answer")
    prompt = render_chat(tokenizer, messages[:-1])
    answer = messages[-1]["content"]
    if getattr(tokenizer, "chat_template", None):
        full = render_chat(tokenizer, messages, add_generation_prompt=False)
        if full.startswith(prompt) and answer in full[len(prompt):]:
            return prompt, full[len(prompt):]
        log.warning("the chat template does not render the conversation as prompt + answer; the answer is "
                    "appended to the prompt with the EOS token")
    return prompt, answer + (tokenizer.eos_token or "")


def sft_sequence(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """``(input_ids, completion_mask)`` of a chat example: prompt tokens (mask 0) then answer tokens (mask 1),
    each encoded without added special tokens, as the backends encode prompts."""
    prompt, completion = sft_texts(tokenizer, messages)
    p_ids = tokenizer.encode(prompt, add_special_tokens=False)
    c_ids = tokenizer.encode(completion, add_special_tokens=False)
    return p_ids + c_ids, [0] * len(p_ids) + [1] * len(c_ids)


# -- configuration ---------------------------------------------------------------------------------------

@dataclass
class ReasoningFields(StudentFields):
    """What the reasoning student is: its rationale prompt, document length, generation budget and the rule
    that turns a teacher record into verdicts."""

    prompt: str = field(default="rationale", metadata={"help": "yes/no rationale prompt (name or YAML path) the student is trained and served with"})
    max_doc_tokens: int = field(default=DEFAULT_MAX_DOC_TOKENS, metadata={"help": "documents are truncated to this many tokens (document side only), in training and at inference", "ge": 8})
    max_new_tokens: int = field(default=192, metadata={"help": "generation budget of the explanation and verdict at inference", "ge": 1})
    top_m: int = field(default=5, metadata={"help": "for a teacher that gave only an order: its top_m best documents are 'yes'", "ge": 1})
    min_grade: float = field(default=2.0, metadata={"help": "for a graded teacher: grades >= min_grade are 'yes' (2: the TREC DL binarisation)"})


@dataclass
class GRPOPromptOptions:
    """``refine.options`` of GRPO for a reasoning student (:func:`build_grpo_prompts`)."""

    per_query: int = field(default=4, metadata={"help": "prompts (documents) per query: half 'yes' targets, the rest the highest-ranked 'no's", "ge": 1})
    queries: int | None = field(default=None, metadata={"help": "the first N teacher queries only", "ge": 1})
    top_m: int = field(default=5, metadata={"help": "for a teacher without verdicts: its top_m documents are 'yes'", "ge": 1})
    balance: bool = field(default=True, metadata={"help": "a query with no 'yes' target gives no prompts"})


@dataclass
class ReasoningDPOOptions:
    """``refine.options`` of DPO for a reasoning student (:func:`llmrank.students.reasoning.reasoning_pairs`)."""

    samples: int = field(default=4, metadata={"help": "completions the student samples per document; one that disagrees with the target is the rejected answer", "ge": 1})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of those completions", "gt": 0})
    max_new_tokens: int | None = field(default=None, metadata={"help": "their token budget (default: the student's max_new_tokens)", "ge": 1})
    per_query: int = field(default=4, metadata={"help": "documents per query: half 'yes' targets, the rest 'no'", "ge": 1})
    top_m: int = field(default=5, metadata={"help": "for a teacher without verdicts: its top_m documents are 'yes'", "ge": 1})
    queries: int | None = field(default=None, metadata={"help": "the first N teacher queries only", "ge": 1})


def _resolve(model: str) -> str:
    from llmrank.models import resolve_model

    return resolve_model(model)


def _tokenize_examples(tokenizer, examples: list[dict], max_length: int | None) -> tuple[list[dict], int]:
    rows, dropped = [], 0
    for ex in examples:
        ids, mask = sft_sequence(tokenizer, ex["messages"])
        if max_length and len(ids) > max_length:
            dropped += 1
            continue
        rows.append({"input_ids": ids, "completion_mask": mask})
    return rows, dropped


_SCALED_LOGITS = ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def completion_trainer_class():
    """trl's ``SFTTrainer`` with the LM head run on the answer positions only, whatever the device.

    trl 1.16 computes the loss through a fused LM head that projects only the positions carrying a label when
    it has Triton (CUDA/XPU), but every position of every sequence elsewhere: on CPU the vocabulary projection
    of the whole prompt dominated a step of a small model (49k-262k vocabularies, a few answer tokens per
    prompt). Where trl would take that path, this trainer runs the decoder body and applies the LM head to the
    labelled positions alone — the same loss (summed answer-token NLL over ``num_items_in_batch``, else over
    the batch's answer tokens) and the same logged ``entropy``, ``mean_token_accuracy`` and ``num_tokens``.
    Anything else (Triton devices, another loss type, label smoothing, a ``compute_loss_func``, MoE auxiliary
    loss, padding-free batches, sequence/context parallelism, scaled logits) goes to trl's ``compute_loss``.
    """
    import torch
    from trl import SFTTrainer

    from llmrank.backends.hf import unwrap

    class CompletionSFTTrainer(SFTTrainer):
        def _labelled_head(self, model, inputs) -> bool:
            if self.args.loss_type != "nll" or self.compute_loss_func is not None or self.label_smoother is not None:
                return False
            if getattr(self, "aux_loss_enabled", False) or "attention_mask" not in inputs or "labels" not in inputs:
                return False
            if self.accelerator.parallelism_config is not None or inputs["input_ids"].device.type in ("cuda", "xpu"):
                return False
            cfg = unwrap(self.accelerator.unwrap_model(model)).config.get_text_config()
            return all(getattr(cfg, k, None) in (None, 1.0) for k in _SCALED_LOGITS)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not self._labelled_head(model, inputs):
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            lm = unwrap(self.accelerator.unwrap_model(model))
            out = lm.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            target = labels[mask]
            head = lm.get_output_embeddings()
            logits = head(out.last_hidden_state[:, :-1][mask]).float()
            cap = getattr(lm.config.get_text_config(), "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            logp = torch.log_softmax(logits, dim=-1)
            token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            n = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -token_logp.sum() / torch.as_tensor(n, device=logits.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // max(getattr(self, "_tp_size", 1), 1))
            self._log_answer_metrics(inputs, logp.detach(), target)
            return loss

        def _log_answer_metrics(self, inputs, logp, target) -> None:
            metrics = getattr(self, "_metrics", None)
            if metrics is None:
                return
            mode = "train" if self.model.training else "eval"
            gather = self.accelerator.gather_for_metrics
            device = logp.device
            num_valid = gather(torch.tensor(target.numel(), device=device)).sum()
            entropy = gather(-(logp.exp() * logp).sum()).sum()
            correct = gather((logp.argmax(-1) == target).sum()).sum()
            metrics[mode]["entropy"].append((entropy / num_valid).item() if num_valid > 0 else 0.0)
            metrics[mode]["mean_token_accuracy"].append((correct / num_valid).item() if num_valid > 0 else 0.0)
            if mode == "train" and hasattr(self, "_total_train_tokens"):
                tokens = gather(inputs["attention_mask"].sum()).sum().item()
                self._total_train_tokens += tokens // max(getattr(self, "_tp_size", 1), 1)
                metrics[mode]["num_tokens"] = [self._total_train_tokens]

    return CompletionSFTTrainer


def build_sft_trainer(cfg, examples: list[dict], callbacks=None, trainer_cls: type | None = None):
    """``(trainer, tokenizer, base_path, prompt)``: trl's ``SFTTrainer`` (with the LM head on answer positions
    only, see :func:`completion_trainer_class`) over the tokenized ``examples``, the base model with a LoRA
    ``peft_config``, ready to ``train()`` (``trainer_cls`` replaces the trainer class, e.g. trl's own
    ``SFTTrainer``). ``cfg`` is a :class:`ReasoningStudentConfig`; its
    ``completion_only_loss`` is set to True unless given."""
    import datasets

    prompt = _yes_no_prompt(cfg.prompt)
    other = sorted({ex["prompt"] for ex in examples if ex.get("prompt") and ex["prompt"] != prompt.key})
    if other:
        raise LlmrankError(f"the examples were built with prompt {other[0]}, the config says {prompt.key}; "
                           "train with the prompt the examples were built with")
    base_path = _resolve(cfg.model)
    tok = ReasoningStudent.load_tokenizer(base_path)
    rows, dropped = _tokenize_examples(tok, examples, cfg.max_length)
    if dropped:
        log.warning("%d of %d SFT examples are longer than max_length=%d tokens and are left out (lower "
                    "max_doc_tokens or raise max_length)", dropped, len(examples), cfg.max_length)
    if not rows:
        raise LlmrankError(f"every SFT example is longer than max_length={cfg.max_length} tokens")
    if cfg.completion_only_loss is None:
        cfg.completion_only_loss = True
    _, model, _ = ReasoningStudent.load_for_training(cfg, attach_lora=False)  # trl attaches the LoRA (peft_config)
    lora = None if cfg.finetune == "full" else ReasoningStudent.lora_config(lora_of(cfg))
    trainer = (trainer_cls or completion_trainer_class())(model=model, args=cfg, train_dataset=datasets.Dataset.from_list(rows),
                                          processing_class=tok, peft_config=lora, callbacks=callbacks)
    return trainer, tok, base_path, prompt


def reasoning_meta(cfg, base_path: str, prompt: PromptTemplate, kind: str = "reasoning", fields_cls=None) -> dict:
    """The saved student's metadata; ``parse`` is the rule its output is read with (also what its export
    carries)."""
    answers = {"yes": prompt.answers.get("yes", "yes"), "no": prompt.answers.get("no", "no")}
    return {"kind": kind, "base_model": str(base_path), "prompt": prompt.path, "prompt_key": prompt.key,
            "answers": answers,
            "parse": {"output_format": OUTPUT_FORMAT, "verdict_regex": prompt.output_regex or VERDICT_REGEX,
                      "answers": answers, "scoring": "verdict_logits"},
            "max_doc_tokens": cfg.max_doc_tokens, "max_new_tokens": cfg.max_new_tokens,
            "config": config_dict(cfg, fields_cls or ReasoningFields)}


class ReasoningStudent(Student):
    kind = "reasoning"
    config_name = "ReasoningStudentConfig"
    fields = ReasoningFields
    base_config = "SFTConfig"
    description = "writes an explanation, then 'Verdict: yes|no'; trained by trl SFT on a teacher's rationales"
    # trl's SFTConfig defaults to bf16 and gradient checkpointing; llmrank's are the pointwise student's
    training_defaults = {**Student.training_defaults, "bf16": False, "gradient_checkpointing": False,
                         "max_length": 1024}
    refine_options = {"grpo": GRPOPromptOptions, "dpo": ReasoningDPOOptions}
    needs_rationales = True

    @classmethod
    def check_section(cls, section) -> list[tuple[str, str]]:
        problems = super().check_section(section)
        try:
            _yes_no_prompt(section.prompt)
        except LlmrankError as e:
            problems.append(("prompt", str(e)))
        return problems

    @classmethod
    def build_examples(cls, data, teacher_records: dict, cfg, seed: int = 0) -> list[dict]:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(_resolve(cfg.model))
        return build_sft_examples(data, teacher_records, cfg.prompt, tokenizer=tok, max_doc_tokens=cfg.max_doc_tokens,
                                  top_m=cfg.top_m, min_grade=cfg.min_grade)

    @classmethod
    def train(cls, cfg, examples: list[dict], resume: bool | str | None = None, callbacks=None) -> Path:
        """SFT on ``examples`` (:func:`build_sft_examples`) with trl's ``SFTTrainer`` and LoRA; saves the
        adapter (and ``merged/`` when ``cfg.merge``), ``llmrank_student.json`` (``kind: "reasoning"``) and
        ``trainer_log.json`` under ``cfg.output_dir``."""
        trainer, tok, base_path, prompt = build_sft_trainer(cfg, examples, callbacks)
        trainer.train(resume_from_checkpoint=resume)
        out = Path(cfg.output_dir)
        if trainer.is_world_process_zero():
            cls.save(trainer.model, tok, out, reasoning_meta(cfg, base_path, prompt, cls.kind, cls.fields), cfg.merge)
            write_training_logs(trainer, out, {"examples": len(examples),
                                               "per_device_train_batch_size": cfg.per_device_train_batch_size})
        trainer.accelerator.wait_for_everyone()
        return out

    @classmethod
    def refine_rows(cls, method: str, student_dir: Path, data, teacher_records: dict, options: dict, *, out: Path,
                    dtype: str = "float32", seed: int = 0, progress: bool = False) -> tuple[list[dict], dict]:
        """GRPO: one served rationale prompt per (query, document) (:func:`build_grpo_prompts`);
        DPO: the teacher's explanation preferred to the student's own disagreeing sample
        (:func:`llmrank.students.reasoning.reasoning_pairs`)."""
        if method == "grpo":
            from transformers import AutoTokenizer

            from llmrank.students import student_meta

            folder, meta = student_meta(student_dir)
            rows = build_grpo_prompts(data, teacher_records, meta, AutoTokenizer.from_pretrained(folder), seed=seed,
                                      **options)
            return rows, {"prompts": len(rows)}
        if method == "dpo":
            from llmrank.students import start_model

            model, tok, meta, _ = start_model(student_dir, out, dtype)
            return reasoning_pairs(data, teacher_records, model, tok, meta, seed=seed, progress=progress, **options)
        return super().refine_rows(method, student_dir, data, teacher_records, options, out=out, dtype=dtype,
                                   seed=seed, progress=progress)

    @classmethod
    def zero_shot(cls, section, dtype: str | None = None, **backend_options):
        from llmrank.backends.hf import HFBackend

        return ReasoningStudentReranker(HFBackend(section.model, dtype=dtype or section.dtype, **backend_options),
                                        section.prompt, max_doc_tokens=section.max_doc_tokens,
                                        max_tokens=section.max_new_tokens)

    @classmethod
    def reranker(cls, model, tokenizer, meta: dict, path: Path, dtype: str, **backend_options):
        from llmrank.backends.hf import HFBackend

        backend = HFBackend(str(path), dtype=dtype, model_obj=model, tokenizer=tokenizer, **backend_options)
        return ReasoningStudentReranker(backend, meta["prompt"], max_doc_tokens=meta.get("max_doc_tokens"),
                                        max_tokens=int(meta.get("max_new_tokens") or 192))

    @classmethod
    def export(cls, src: Path, tmp: Path, meta: dict, model, tokenizer) -> dict:
        """Served for generation (``/v1/chat/completions``); the verdict is read with the parse rule the
        student was trained with (``parse``: output format, verdict regex, answer words)."""
        from llmrank.prompts import load_prompt

        parse = meta.get("parse")
        if not parse or not parse.get("verdict_regex"):
            raise LlmrankError(f"{src}: the reasoning student's {STUDENT_FILE_NAME} has no parse rule "
                               "('parse.verdict_regex'); retrain it with this version of llmrank")
        return {"prompt": load_prompt(meta["prompt"]).key, "runner": "generate", "parse": parse,
                "max_new_tokens": meta.get("max_new_tokens"),
                "note": "reasoning student: serve for /v1/chat/completions and read the verdict with the parse rule"}


STUDENT_FILE_NAME = "llmrank_student.json"


# -- DPO refinement data -----------------------------------------------------------------------------------

def reasoning_pairs(data: RankingData, teacher_records: dict[str, dict], model, tokenizer, meta: dict,
                    samples: int = 4, temperature: float = 1.0, max_new_tokens: int | None = None,
                    per_query: int = 4, top_m: int = 5, queries: int | None = None, seed: int = 0,
                    progress: bool = False) -> tuple[list[dict], dict]:
    """Tokenized (prompt, teacher's answer ≻ the student's disagreeing sample) rows for a reasoning student
    (:mod:`llmrank.training.dpo`'s docstring), and counts. ``model`` is the distilled student (it samples the rejected answers)."""
    import torch

    from llmrank.prompts import load_prompt
    from llmrank.rerankers.rationale import build_rationale_messages
    from llmrank.rerankers.rationale import strict_verdict
    from llmrank.students.refine_data import each_query, query_docs, relevance_targets

    prompt = load_prompt(meta["prompt"])
    words = {True: prompt.answers.get("yes", "yes"), False: prompt.answers.get("no", "no")}
    max_new = int(max_new_tokens or meta.get("max_new_tokens") or 192)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    stats = {"documents": 0, "no_rationale": 0, "teacher_disagrees_with_label": 0, "student_always_right": 0, "pairs": 0}
    rows = []
    qids = list(teacher_records)[:queries] if queries else list(teacher_records)
    it = each_query(qids, "student samples for DPO pairs", progress)
    if not any((teacher_records[q].get("rationales") for q in qids)):
        raise LlmrankError("reasoning DPO needs a teacher run with rationales (teacher.method: rationale): the "
                           "chosen answers are the teacher's explanations")

    model.eval()
    for qid in it:
        rec = teacher_records[qid]
        query, _ = query_docs(data, rec)
        target = relevance_targets(data, rec, top_m)
        tverdict = teacher_verdicts(rec, top_m=top_m)
        rationales = rec.get("rationales") or {}
        docs = [d for d in rec["ranking"] if d in target]
        pos = [d for d in docs if target[d]][: max(1, per_query // 2)]
        neg = [d for d in docs if not target[d]][: per_query - len(pos)]
        for d in pos + neg:
            stats["documents"] += 1
            explanation = (rationales.get(d) or "").strip()
            if not explanation:
                stats["no_rationale"] += 1
                continue
            if tverdict.get(d) is None or bool(tverdict[d]) != target[d]:
                stats["teacher_disagrees_with_label"] += 1
                continue
            messages, _ = build_rationale_messages(prompt, tokenizer, query.text, data.docs[d].contents,
                                                   meta.get("max_doc_tokens"))
            chosen = OUTPUT_FORMAT.format(explanation=explanation, verdict=words[target[d]])
            p_text, c_text = sft_texts(tokenizer, messages + [{"role": "assistant", "content": chosen}])
            p_ids = tokenizer.encode(p_text, add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(torch.tensor([p_ids], device=model.device), do_sample=True,
                                     temperature=temperature, max_new_tokens=max_new, num_return_sequences=samples,
                                     pad_token_id=tokenizer.pad_token_id, attention_mask=torch.ones(1, len(p_ids), dtype=torch.long, device=model.device))
            texts = tokenizer.batch_decode(gen[:, len(p_ids):], skip_special_tokens=True)
            wrong = [t for t in texts if strict_verdict(t) is None or bool(strict_verdict(t)) != target[d]]
            if not wrong:
                stats["student_always_right"] += 1
                continue
            rejected = rng.choice(wrong).strip()
            _, r_text = sft_texts(tokenizer, messages + [{"role": "assistant", "content": rejected}])
            rows.append({"prompt_ids": p_ids, "chosen_ids": tokenizer.encode(c_text, add_special_tokens=False),
                         "rejected_ids": tokenizer.encode(r_text, add_special_tokens=False), "qid": qid, "docid": d})
            stats["pairs"] += 1
    return rows, stats


# -- inference -----------------------------------------------------------------------------------------

def verdict_prefix(text: str) -> tuple[str, bool]:
    """The generated text up to and including its last ``Verdict:`` (where the verdict word is scored), and
    whether the student wrote one; without one, what it wrote followed by ``\\nVerdict:``."""
    last = None
    for m in VERDICT_HEAD.finditer(text or ""):
        last = m
    if last is not None:
        return text[: last.end()], True
    body = (text or "").rstrip()
    return (body + "\n" if body else "") + "Verdict:", False


class ReasoningStudentReranker(RationaleReranker):
    """A reasoning student: generates explanation + verdict per document, scored by its verdict-token logits.

    ``score = P(yes) / (P(yes) + P(no))`` of the token after the last ``Verdict:`` (prompt + the student's
    own text up to there); the parsed verdict (1/0, 0.5 when unreadable) when the backend gives no
    log-probabilities. ``extra`` holds each document's parsed verdict and its P(yes).
    """

    method = "reasoning"

    def __init__(self, backend: Backend, prompt: str | PromptTemplate = "rationale",
                 max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS, max_tokens: int = 192, **kw):
        super().__init__(backend, _yes_no_prompt(prompt), max_doc_tokens=max_doc_tokens, max_tokens=max_tokens, **kw)
        self.labels = [self.prompt.answers.get("yes", "yes"), self.prompt.answers.get("no", "no")]

    @property
    def cache_key(self) -> dict:
        return {**super().cache_key, "method": self.method, "scoring": "verdict_logits"}

    def _verdict_probs(self, lp) -> np.ndarray:
        seen = np.isfinite(lp).any(axis=1)
        probs = two_way(lp[:, 0], lp[:, 1])
        return np.where(seen, probs, np.nan)

    def steps(self, query: Query, docs: list[Doc], cost: Counter):
        """Two requests: the explanations and verdicts, then the verdict token's distribution after each."""
        prompts, truncated = self.prompts_for(query.text, [d.contents for d in docs])
        gens = yield GenerateRequest(prompts, self.params)
        texts = [g.text for g in gens]
        heads = [verdict_prefix(t) for t in texts]
        try:  # a backend that only generates answers NotImplementedError: the parsed verdict is the score
            probs = self._verdict_probs((yield ScoreRequest([p + h for p, (h, _) in zip(prompts, heads)],
                                                            self.labels, variants=True)))
        except NotImplementedError:
            probs = None
        scores, rationales, verdicts, p_yes = [], {}, {}, {}
        failures = forced = fallbacks = 0
        for i, (doc, text) in enumerate(zip(docs, texts)):
            explanation, parsed = parse_rationale(text, graded=False)
            failures += parsed is None
            forced += not heads[i][1]
            p = None if probs is None or math.isnan(probs[i]) else float(probs[i])
            if p is None:
                fallbacks += 1
                p_score = self.fallback if parsed is None else parsed
            else:
                p_score = p
            scores.append(p_score)
            rationales[doc.docid] = explanation
            verdicts[doc.docid] = parsed
            p_yes[doc.docid] = p
        cost = Counter({k: v for k, v in cost.items() if v})
        cost["parse_failures"] = failures
        cost["forced_verdicts"] = forced
        cost["score_fallbacks"] = fallbacks
        cost["truncated_docs"] = truncated
        return ranking_from_scores(docs, scores, rationales=rationales, cost=cost,
                                   extra={"verdicts": verdicts, "p_yes": p_yes})


def build_grpo_prompts(data: RankingData, teacher_records: dict[str, dict], meta: dict, tokenizer,
                       per_query: int = 4, queries: int | None = None, seed: int = 0,
                       top_m: int = 5, balance: bool = True) -> list[dict]:
    """One row per (query, document): ``prompt`` (the served string), ``qid``, ``docid``, ``label``,
    ``teacher_label`` (see the module docstring). ``meta`` is the student's metadata (prompt, max_doc_tokens).

    ``balance`` (the default): a query with no "yes" target among its ranked documents gives no prompts, so
    the prompts are as many "yes" as "no" when ``per_query`` is even. Without it such a query gives
    ``per_query`` "no"s, and on judged data where the relevant document is often outside the candidates
    (SciFact: 29 "no" of 40 prompts) a policy that always answers "no" already earns most of the relevance
    reward."""
    from llmrank.prompts import load_prompt
    from llmrank.rerankers.rationale import build_rationale_prompt

    if per_query < 1:
        raise LlmrankError(f"refine.options.per_query: must be at least 1, got {per_query}")
    prompt = load_prompt(meta["prompt"])
    rng = random.Random(seed)
    rows, skipped = [], 0
    qids = list(teacher_records)[:queries] if queries else list(teacher_records)
    for qid in qids:
        rec = teacher_records[qid]
        if qid not in data.queries:
            raise LlmrankError(f"teacher record for query '{qid}' has no query text in {data.source}")
        verdicts = teacher_verdicts(rec, top_m=top_m)
        judged = (data.qrels or {}).get(qid)
        cands = []
        for d in rec["ranking"]:
            if d not in data.docs:
                raise LlmrankError(f"teacher record for query '{qid}' names document '{d}' not in {data.source}")
            label = float(judged.get(d, 0)) if judged else None
            teacher = verdicts.get(d)
            target = label if label is not None else (None if teacher is None else float(teacher))
            if target is not None:
                cands.append((d, label, None if teacher is None else float(teacher), target > 0))
        pos = [c for c in cands if c[3]][: max(1, per_query // 2)]
        if balance and not pos:
            skipped += 1
            continue
        neg = [c for c in cands if not c[3]][: per_query - len(pos)]
        picked = pos + neg
        rng.shuffle(picked)
        for d, label, teacher, _ in picked:
            text, _ = build_rationale_prompt(prompt, tokenizer, data.queries[qid].text, data.docs[d].contents,
                                             meta.get("max_doc_tokens"))
            rows.append({"prompt": text, "qid": qid, "docid": d, "label": label, "teacher_label": teacher})
    if not rows:
        raise LlmrankError(f"no GRPO prompts: each of the {skipped} queries has no 'yes' target among its ranked "
                           "documents (refine.options.balance: true keeps only queries that have one)" if skipped else
                           "no GRPO prompts: no teacher-ranked document has a qrels label or a teacher verdict")
    if skipped:
        log.info("GRPO prompts: %d of %d queries have no 'yes' target among their ranked documents and give no "
                 "prompts (refine.options.balance)", skipped, len(qids))
    return rows


__getattr__ = lazy_names(ReasoningStudentConfig=lambda: ReasoningStudent.config_class())
