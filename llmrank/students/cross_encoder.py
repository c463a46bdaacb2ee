"""The cross-encoder student: a BERT-style sequence classifier with one logit, reading query and document
together, trained on llmrank's ranking losses against a teacher's groups, and saved in the
sentence-transformers ``CrossEncoder`` layout.

The score of (query, document) is the classifier's logit on the pair ``[CLS] query [SEP] document [SEP]``,
the document first cut to ``max_doc_tokens`` tokens by :func:`llmrank.rerankers.pointwise.truncate_document`
(the LLM students' own rule, so "the same document truncation" means the same thing for both), the pair
tokenized the way ``CrossEncoder.predict`` tokenizes it (``truncation="longest_first"`` to ``max_length``).
A saved student folder is a sentence-transformers model: ``CrossEncoder(folder).predict(pairs)`` returns
the very logits llmrank scores with (its activation is saved as the identity), and vLLM serves it on
``/rerank`` as a plain ``BertForSequenceClassification`` (the served score is sigmoid(logit)).

The default base is the embedded all-MiniLM-L6-v2 (``minilm-l6``, 22M parameters) with a new one-logit head
(a ``BertForSequenceClassification``); every weight is trained (``finetune: full``). Training runs on
``transformers.Trainer`` (:class:`EncoderDistillTrainer`), so ``accelerate launch``, gradient accumulation,
``global_batch_size``, checkpoints and resume behave as for the LLM students.

This module imports no deep-learning library at import time (the recipe reads the fields at load).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from llmrank.errors import LlmrankError
from llmrank.rerankers.base import Ranking, Reranker, ranking_from_scores
from llmrank.students.base import (
    STUDENT_FILE,
    Student,
    StudentFields,
    config_dict,
    group_ranking_loss,
    lazy_names,
    lora_of,
    write_training_logs,
)

DEFAULT_BASE = "minilm-l6"


@dataclass
class CrossEncoderFields(StudentFields):
    """What the cross-encoder student is and which ranking loss teaches it."""

    model: str = field(default=DEFAULT_BASE, metadata={"help": "encoder base: 'minilm-l6' (embedded all-MiniLM-L6-v2), a "
                                                             "local BERT-style folder or hub id; a new one-logit head "
                                                             "is added unless it already has one"})
    finetune: str = field(default="full", metadata={"help": "full: train every weight (the default: the encoder is "
                                                            "small); lora: LoRA adapters (peft SEQ_CLS) plus the head"})
    loss: str = field(default="combined", metadata={"help": "ranking loss (llmrank.losses): ranknet, margin_mse, listnet, kl, listmle, pld, cprd, bce, label_ce, combined"})
    loss_options: dict = field(default_factory=dict, metadata={
        "help": "keyword arguments of the loss (e.g. temperature; weights for combined); none given with loss "
                "combined: weights ranknet 1.0, label_ce 1.0"})
    group_size: int = field(default=8, metadata={"help": "candidates per query in one training group", "ge": 2})
    max_doc_tokens: int = field(default=64, metadata={"help": "documents are cut to this many tokens (document side "
                                                             "only, the encoder's own tokenizer)", "ge": 8})
    max_length: int = field(default=512, metadata={"help": "query + document tokens at most (the pair is cut "
                                                          "longest-first, as CrossEncoder.predict cuts it)", "ge": 16})
    head_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the new scoring head (the pooler and the one-logit classifier); the encoder keeps "
                "training.learning_rate (default: the same rate for every weight)", "gt": 0.0})


_CACHE: dict[str, type] = {}


def resolve_base(name: str) -> str:
    """A local folder for an embedded alias (``minilm-l6``) or a path; a hub id as given."""
    from llmrank.rerankers.dense import resolve_dense_model

    return resolve_dense_model(name)


def encode_pairs(tokenizer, query: str | list[str], documents: list[str], max_doc_tokens: int | None, max_length: int):
    """``(batch encoding, truncated count)`` of (query, document) pairs: each document cut to
    ``max_doc_tokens`` tokens, the pairs tokenized as ``CrossEncoder.predict`` does."""
    from llmrank.rerankers.pointwise import truncate_documents

    queries = [query] * len(documents) if isinstance(query, str) else list(query)
    cut = truncate_documents(tokenizer, documents, max_doc_tokens)
    enc = tokenizer(queries, [d for d, _ in cut], padding=True, truncation="longest_first", max_length=max_length,
                    return_tensors="pt")
    return enc, sum(t for _, t in cut)


class PairCollator:
    """Flattens B groups of g documents into B*g (query, document) pairs and [B, g] teacher tensors; a
    group shorter than g is padded with empty documents, masked out of the loss."""

    def __init__(self, tokenizer, max_doc_tokens: int, max_length: int, group_size: int):
        self.tokenizer, self.max_doc_tokens, self.max_length, self.group_size = tokenizer, max_doc_tokens, max_length, group_size

    def __call__(self, groups: list[dict]) -> dict:
        import torch

        g = self.group_size
        queries, docs = [], []
        mask = torch.zeros(len(groups), g, dtype=torch.bool)
        ts, tr, lab = (torch.zeros(len(groups), g) for _ in range(3))
        for b, grp in enumerate(groups):
            n = min(len(grp["docs"]), g)
            for j in range(g):
                queries.append(grp["query"])
                docs.append(grp["docs"][j] if j < n else "")
            mask[b, :n] = True
            ts[b, :n] = torch.tensor(grp["teacher_scores"][:n])
            tr[b, :n] = torch.tensor(grp["teacher_ranks"][:n], dtype=torch.float)
            lab[b, :n] = torch.tensor(grp["labels"][:n])
        enc, _ = encode_pairs(self.tokenizer, queries, docs, self.max_doc_tokens, self.max_length)
        return {**enc, "group_mask": mask, "teacher_scores": ts, "teacher_ranks": tr.long(), "labels_graded": lab}


def _trainer_class():
    if "trainer" not in _CACHE:
        from transformers import Trainer

        class EncoderDistillTrainer(Trainer):
            """``Trainer`` whose loss is a ranking loss over each group's cross-encoder logits."""

            def __init__(self, *args, ranking_loss=None, head_learning_rate: float | None = None, **kwargs):
                super().__init__(*args, **kwargs)
                self.ranking_loss, self.head_learning_rate = ranking_loss, head_learning_rate

            def create_optimizer(self, model=None):
                """With ``head_learning_rate``: the head's weights (:func:`is_head_parameter`) in their own
                parameter groups at that rate; the schedule scales every group alike."""
                if self.optimizer is None and self.head_learning_rate:
                    opt_model = self.model if model is None else model
                    decay = set(self.get_decay_parameter_names(opt_model))
                    groups: dict = {}
                    for n, p in opt_model.named_parameters():
                        if p.requires_grad:
                            groups.setdefault((is_head_parameter(n), n in decay), []).append(p)
                    param_groups = [{"params": ps, "weight_decay": self.args.weight_decay if d else 0.0,
                                     "lr": self.head_learning_rate if h else self.args.learning_rate}
                                    for (h, d), ps in groups.items()]
                    optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                    kwargs.pop("lr", None)
                    self.optimizer = optimizer_cls(param_groups, lr=self.args.learning_rate, **kwargs)
                return super().create_optimizer(model)

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                enc = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in inputs}
                scores = model(**enc).logits[:, 0].float().view(inputs["group_mask"].shape)
                loss = group_ranking_loss(self.ranking_loss, scores, inputs)
                return (loss, {"scores": scores}) if return_outputs else loss

        EncoderDistillTrainer.__module__ = __name__
        EncoderDistillTrainer.__qualname__ = "EncoderDistillTrainer"
        _CACHE["trainer"] = EncoderDistillTrainer
    return _CACHE["trainer"]


def is_head_parameter(name: str) -> bool:
    """A weight of the scoring head a sequence classifier puts on its encoder (BERT's pooler and classifier)."""
    parts = name.split(".")
    return "classifier" in parts or "pooler" in parts


def load_classifier(path: str, dtype: str = "float32"):
    """``(model, tokenizer)``: a sequence classifier with one logit from ``path``; an encoder without a head
    (all-MiniLM-L6-v2's ``BertModel``) gets a new one, initialised from the torch seed."""
    import logging

    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from llmrank.backends.hf import resolve_dtype

    local = Path(path).is_dir()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=local)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)  # the new head's "newly initialized" report is expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=resolve_dtype(dtype),
                                                                   local_files_only=local)
    finally:
        hf_logging.set_verbosity(level)
    if model.config.num_labels != 1:
        raise LlmrankError(f"{path}: a cross-encoder student scores with one logit; this classifier has "
                           f"{model.config.num_labels}")
    return model, tok


def write_sentence_transformers(folder: Path, max_length: int) -> None:
    """Make a saved ``BertForSequenceClassification`` folder a sentence-transformers ``CrossEncoder`` (its
    ``modules.json``, ``sentence_bert_config.json`` and ``config_sentence_transformers.json``, written by the
    library itself), with the identity as its activation: ``CrossEncoder(folder).predict`` gives the logits
    llmrank scores with."""
    import torch
    from sentence_transformers import CrossEncoder

    keep = {f: (folder / f).read_bytes() for f in ("README.md",) if (folder / f).is_file()}
    ce = CrossEncoder(str(folder), local_files_only=True, device="cpu", activation_fn=torch.nn.Identity(),
                      max_length=max_length)
    ce.save_pretrained(str(folder), create_model_card=False)
    for f, data in keep.items():
        (folder / f).write_bytes(data)


class CrossEncoderReranker(Reranker):
    """A cross-encoder student (or any one-logit sequence classifier) as a Reranker: one forward pass per
    ``batch_size`` (query, document) pairs; the score is the logit."""

    method = "cross-encoder"
    has_scores = True
    uses_backend = False

    def __init__(self, model, tokenizer, name: str, max_doc_tokens: int | None = 64, max_length: int = 512,
                 batch_size: int = 32, device: str | None = None):
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.name, self.max_doc_tokens, self.max_length, self.batch_size = name, max_doc_tokens, max_length, batch_size

    @property
    def cache_key(self) -> dict:
        return {"method": self.method, "model": self.name, "max_doc_tokens": self.max_doc_tokens,
                "max_length": self.max_length}

    def score(self, query: str, documents: list[str]) -> "Any":
        return self._score(query, documents)[0]

    def _score(self, query: str, documents: list[str]):
        import numpy as np
        import torch

        out, tokens, truncated = [], 0, 0
        with torch.inference_mode():
            for i in range(0, len(documents), self.batch_size):
                enc, cut = encode_pairs(self.tokenizer, query, documents[i:i + self.batch_size], self.max_doc_tokens,
                                        self.max_length)
                tokens += int(enc["attention_mask"].sum())
                truncated += cut
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
                out.append(logits[:, 0].float().cpu().numpy())
        scores = np.concatenate(out).astype(np.float64) if out else np.zeros(0)
        return scores, tokens, truncated

    def rerank(self, query, docs) -> Ranking:
        t0 = time.perf_counter()
        scores, tokens, truncated = self._score(query.text, [d.contents for d in docs])
        cost = Counter(calls=len(docs), prompt_tokens=tokens, seconds=time.perf_counter() - t0)
        if truncated:
            cost["truncated_docs"] = truncated
        return ranking_from_scores(docs, scores, cost=cost)


class CrossEncoderStudent(Student):
    kind = "cross-encoder"
    config_name = "CrossEncoderStudentConfig"
    peft_task_type = "SEQ_CLS"
    default_loss_options = {"combined": {"weights": {"ranknet": 1.0, "label_ce": 1.0}}}
    fields = CrossEncoderFields
    base_config = "TrainingArguments"
    description = "a BERT-style cross-encoder (sentence-transformers CrossEncoder) trained on a ranking loss"
    training_defaults: ClassVar[dict] = {"per_device_train_batch_size": 4, "learning_rate": 3e-5, "max_steps": 50,
                                         "logging_steps": 5, "save_steps": 100, "save_total_limit": 1,
                                         "report_to": []}
    refine_methods = ()

    @classmethod
    def check_section(cls, section) -> list[tuple[str, str]]:

        problems = super().check_section(section)
        if section.max_doc_tokens >= section.max_length:
            problems.append(("max_doc_tokens", f"{section.max_doc_tokens} leaves no room for the query within "
                             f"max_length {section.max_length}"))
        return problems

    @classmethod
    def build_examples(cls, data, teacher_records: dict, cfg, seed: int = 0) -> list[dict]:
        from llmrank.students.examples import build_groups

        return build_groups(data, teacher_records, cfg.group_size, seed=seed)

    @classmethod
    def train(cls, cfg, examples: list[dict], resume: bool | str | None = None, callbacks=None) -> Path:
        """Train on groups; saves ``merged/`` (a sentence-transformers CrossEncoder folder with
        ``llmrank_student.json``; with LoRA also ``adapter/``) and ``adapter/trainer_log.json`` +
        ``training_info.json`` under ``cfg.output_dir``."""
        import datasets

        from llmrank.losses import build_loss

        base = resolve_base(cfg.model)
        model, tok = load_classifier(base, cfg.dtype)
        if cfg.finetune == "lora":
            model = cls.add_lora(model, lora_of(cfg))  # peft SEQ_CLS: the head is trained too
        cfg.remove_unused_columns = False
        cfg.label_names = []
        trainer = _trainer_class()(
            model=model, args=cfg, train_dataset=datasets.Dataset.from_list(examples),
            data_collator=PairCollator(tok, cfg.max_doc_tokens, cfg.max_length, cfg.group_size),
            ranking_loss=build_loss(cfg.loss, **dict(cfg.loss_options)), head_learning_rate=cfg.head_learning_rate,
            callbacks=callbacks)
        trainer.train(resume_from_checkpoint=resume)
        out = Path(cfg.output_dir)
        if trainer.is_world_process_zero():
            meta = {"kind": cls.kind, "base_model": str(base), "base_name": cfg.model,
                    "max_doc_tokens": cfg.max_doc_tokens, "max_length": cfg.max_length,
                    "config": config_dict(cfg, CrossEncoderFields)}
            cls.save(trainer.model, tok, out, meta, merge=True)  # merged/ always: what is scored and served
            write_training_logs(trainer, out, {"groups": len(examples),
                                               "per_device_train_batch_size": cfg.per_device_train_batch_size,
                                               "gradient_accumulation_steps": cfg.gradient_accumulation_steps})
        trainer.accelerator.wait_for_everyone()
        return out

    # -- the model: save, load, export ---------------------------------------------------------------------
    @classmethod
    def save_folder(cls, model, tokenizer, folder: str | Path, meta: dict) -> None:
        """Weights, tokenizer, the sentence-transformers files (a plain model) and ``llmrank_student.json``."""
        folder = Path(folder)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if not hasattr(model, "peft_config"):
            write_sentence_transformers(folder, int(meta.get("max_length") or 512))
        (folder / STUDENT_FILE).write_text(json.dumps(meta, indent=1, default=str))

    @classmethod
    def load(cls, path: str | Path, dtype: str = "float32"):
        """``(model, tokenizer, meta)`` of a saved cross-encoder student (merged folder, adapter or export)."""
        from llmrank.students.base import read_meta

        path = Path(path)
        meta = read_meta(path)
        if (path / "adapter_config.json").is_file():
            from peft import PeftModel

            base, tok = load_classifier(meta["base_model"], dtype)
            return PeftModel.from_pretrained(base, path), tok, meta
        model, tok = load_classifier(str(path), dtype)
        return model, tok, meta

    @classmethod
    def zero_shot(cls, section, dtype: str | None = None, **backend_options):
        """None: the base has no trained relevance head, so there is no zero-shot cross-encoder to measure."""
        return None

    @classmethod
    def reranker(cls, model, tokenizer, meta: dict, path: Path, dtype: str, **backend_options):
        opts = {k: v for k, v in backend_options.items() if k in ("batch_size", "device")}
        return CrossEncoderReranker(model, tokenizer, str(path), meta.get("max_doc_tokens"),
                                    int(meta.get("max_length") or 512), **opts)

    @classmethod
    def write_export(cls, src: Path, tmp: Path, out: Path, dtype: str) -> dict:
        """The student merged and cast to ``dtype``, saved into ``tmp`` as a sentence-transformers CrossEncoder
        that vLLM serves on ``/rerank`` as it is; returns the serve info."""
        from llmrank.backends.hf import resolve_dtype

        model, tok, meta = cls.load(src, "float32")
        model = cls.merge(model)
        cls.save_folder(model.to(resolve_dtype(dtype)), tok, tmp, meta)
        info: dict = {"kind": cls.kind, "model_dir": str(out), "dtype": dtype, "max_doc_tokens": meta.get("max_doc_tokens")}
        info.update(cls.export(src, tmp, meta, model, tok))
        return info

    @classmethod
    def export(cls, src: Path, tmp: Path, meta: dict, model, tokenizer) -> dict:
        arch = (getattr(model.config, "architectures", None) or [""])[0]
        return {"runner": "pooling", "architecture": arch, "max_length": meta.get("max_length"),
                "sentence_transformers": "CrossEncoder",
                "note": "served score = sigmoid(logit) of the one-logit classifier on (query, document); llmrank "
                        "and CrossEncoder(path).predict give the logit itself (the same order)."}


__getattr__ = lazy_names(CrossEncoderStudentConfig=lambda: CrossEncoderStudent.config_class(),
                          EncoderDistillTrainer=lambda: _trainer_class())
