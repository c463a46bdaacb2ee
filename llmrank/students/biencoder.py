"""The bi-encoder student: a sentence-transformers embedding model (query and documents encoded apart,
scored by the cosine of their embeddings), trained on llmrank's ranking losses against a teacher's groups.

Why a bi-encoder: documents are encoded once, so ranking a query costs one query encoding and a dot product
per candidate; the same model is also a first stage over a whole corpus (:func:`llmrank.rerankers.dense.dense_retrieve`
with the corpus embeddings cached on disk).

**Scores.** ``cos(q, d) = e(q) · e(d)`` of L2-normalised embeddings (the model's own ``Normalize`` module, or
a normalisation added at scoring time). Training hands the ranking loss ``cos / temperature``: a cosine lies in
[-1, 1], too flat for a listwise softmax or a margin over teacher scores; ``temperature`` 0.05 (a scale of 20,
the usual one for contrastive training of this model family) gives the loss logits of a useful range. The
order, and so every reranking and retrieval, is that of the cosine, which is what llmrank scores with
(:class:`~llmrank.rerankers.dense.DenseReranker`), what the saved folder gives through
``SentenceTransformer(path).similarity`` and what a vLLM embedding server's ``/score`` and ``/rerank`` return.

**Loss.** Any loss of :mod:`llmrank.losses` over each group's ``[B, g]`` scores (teacher scores, ranks and
judged labels as for the pointwise student). With ``in_batch_negatives`` a contrastive term is added: each
query's teacher-best document against every document of the batch (its own group's and the other queries'),
softmax cross-entropy, weighted by ``in_batch_weight`` (needs ``per_device_train_batch_size`` > 1 to see
other queries' documents).

**Saved student.** ``<output>/merged`` is a complete sentence-transformers folder (``modules.json``, the
transformer, pooling and normalisation, ``sentence_bert_config.json`` with the document length) plus
``llmrank_student.json``: ``SentenceTransformer(<output>/merged)`` loads it as is, and so does anything in
llmrank that takes a dense model (``teacher.method: dense``, ``data.first_stage``, ``llmrank retrieve
--model``). Every weight is trained (``finetune: full``; a 22M-parameter encoder needs no LoRA).

Training runs on ``transformers.Trainer`` with the ranking loss in ``compute_loss`` (as the pointwise student):
``accelerate launch``, ``distill.global_batch_size``, gradient accumulation, checkpoints and resume behave the
same. This module imports no deep-learning library at import time.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from llmrank.errors import LlmrankError
from llmrank.students.base import (
    STUDENT_FILE,
    Student,
    StudentFields,
    config_dict,
    group_ranking_loss,
    lazy_names,
    write_training_logs,
)

log = logging.getLogger(__name__)
SIMILARITIES = ("cosine",)


@dataclass
class BiEncoderFields(StudentFields):
    """What the bi-encoder student is and which ranking loss teaches it."""

    model: str = field(default="minilm-l6", metadata={"help": "sentence-transformers base model: alias (minilm-l6), "
                                                               "local folder or hub id"})
    finetune: str = field(default="full", metadata={"help": "full: every weight is trained (the only mode of a "
                                                             "bi-encoder student)"})
    loss: str = field(default="listnet", metadata={"help": "ranking loss (llmrank.losses) over cos/temperature: "
                                                            "ranknet, margin_mse, listnet, kl, listmle, pld, cprd, "
                                                            "bce, label_ce, combined"})
    loss_options: dict = field(default_factory=dict, metadata={"help": "keyword arguments of the loss (e.g. weights "
                                                                        "for combined)"})
    group_size: int = field(default=8, metadata={"help": "candidates per query in one training group", "ge": 2})
    max_seq_length: int = field(default=256, metadata={"help": "queries and documents are cut to this many tokens "
                                                                "(saved with the model: scoring cuts the same)", "ge": 8})
    train_max_seq_length: int | None = field(default=None, metadata={
        "help": "cut queries and documents to this many tokens in training only (shorter steps on a CPU); scoring, "
                "retrieval and the saved model use max_seq_length (default: max_seq_length)", "ge": 8})
    temperature: float = field(default=0.05, metadata={"help": "the loss sees cos(q, d) / temperature", "gt": 0.0})
    similarity: str = field(default="cosine", metadata={"help": "cosine of L2-normalised embeddings (what is scored, "
                                                                 "retrieved and served)"})
    in_batch_negatives: bool = field(default=False, metadata={"help": "add a contrastive term: each query's teacher-"
                                                                       "best document against every document in the batch"})
    in_batch_weight: float = field(default=1.0, metadata={"help": "weight of the in-batch term", "ge": 0.0})


_CACHE: dict[str, type] = {}


class GroupEncoderCollator:
    """B groups of g documents -> the B queries and B*g documents tokenized by the model (cut to its
    ``max_seq_length``) and the [B, g] teacher tensors; a group shorter than g is padded with empty,
    masked-out documents."""

    def __init__(self, st_model, group_size: int):
        self.st, self.group_size = st_model, group_size

    def __call__(self, groups: list[dict]) -> dict:
        import torch

        g = self.group_size
        docs, mask = [], torch.zeros(len(groups), g, dtype=torch.bool)
        ts, tr, lab = (torch.zeros(len(groups), g) for _ in range(3))
        for b, grp in enumerate(groups):
            n = min(len(grp["docs"]), g)
            docs += list(grp["docs"][:n]) + [""] * (g - n)
            mask[b, :n] = True
            ts[b, :n] = torch.tensor(grp["teacher_scores"][:n])
            tr[b, :n] = torch.tensor(grp["teacher_ranks"][:n], dtype=torch.float)
            lab[b, :n] = torch.tensor(grp["labels"][:n])
        return {"query_features": dict(self.st.preprocess([grp["query"] for grp in groups])),
                "doc_features": dict(self.st.preprocess(docs)), "group_mask": mask, "teacher_scores": ts,
                "teacher_ranks": tr.long(), "labels_graded": lab}


def group_scores(model, inputs) -> tuple:
    """``(cos [B, g], cos of every query with every document of the batch [B, B*g])``, through the model's
    own forward (so DDP wrappers synchronise gradients)."""
    import torch.nn.functional as F

    q = F.normalize(model(dict(inputs["query_features"]))["sentence_embedding"].float(), dim=-1)
    d = F.normalize(model(dict(inputs["doc_features"]))["sentence_embedding"].float(), dim=-1)
    b, g = inputs["group_mask"].shape
    every = q @ d.T
    own = every.view(b, b, g)[range(b), range(b)]
    return own, every


def in_batch_loss(every, mask, teacher_ranks):
    """Softmax cross-entropy of each query's teacher-best document against every (unpadded) document of the
    batch: ``every`` [B, B*g] logits, ``mask`` [B, g]."""
    import torch
    import torch.nn.functional as F

    b, g = mask.shape
    logits = every.masked_fill(~mask.reshape(1, b * g), float("-inf"))
    best = torch.where(mask, teacher_ranks, torch.full_like(teacher_ranks, 1 << 30)).argmin(dim=1)
    return F.cross_entropy(logits, torch.arange(b, device=every.device) * g + best)


def _trainer_class():
    if "trainer" not in _CACHE:
        import torch
        from transformers import Trainer

        class BiEncoderTrainer(Trainer):
            """``Trainer`` for a ``SentenceTransformer``: the ranking loss over each group's cos/temperature (plus
            the in-batch term), checkpoints saved and resumed in sentence-transformers layout."""

            def __init__(self, *args, ranking_loss=None, temperature: float = 0.05, in_batch_weight: float = 0.0,
                         **kwargs):
                super().__init__(*args, **kwargs)
                self.ranking_loss, self.temperature, self.in_batch_weight = ranking_loss, temperature, in_batch_weight

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                own, every = group_scores(model, inputs)
                scores = own / self.temperature
                loss = group_ranking_loss(self.ranking_loss, scores, inputs)
                if self.in_batch_weight:
                    loss = loss + self.in_batch_weight * in_batch_loss(every / self.temperature, inputs["group_mask"],
                                                                       inputs["teacher_ranks"])
                return (loss, {"scores": scores}) if return_outputs else loss

            def _save(self, output_dir: str | None = None, state_dict=None) -> None:
                out = Path(output_dir or self.args.output_dir)
                out.mkdir(parents=True, exist_ok=True)
                self.model.save_pretrained(str(out))
                torch.save(self.args, out / "training_args.bin")

            def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
                from sentence_transformers import SentenceTransformer

                loaded = SentenceTransformer(resume_from_checkpoint, device="cpu", local_files_only=True)
                self.model.load_state_dict(loaded.state_dict())

        BiEncoderTrainer.__module__ = __name__
        BiEncoderTrainer.__qualname__ = "BiEncoderTrainer"
        _CACHE["trainer"] = BiEncoderTrainer
    return _CACHE["trainer"]


def load_base(cfg):
    """``(SentenceTransformer, resolved base path)``: the base model, every weight trainable, cut to
    ``cfg.max_seq_length`` tokens, in float32."""
    from sentence_transformers import SentenceTransformer

    from llmrank.rerankers.dense import resolve_dense_model

    path = resolve_dense_model(cfg.model)
    try:
        st = SentenceTransformer(path, device="cpu", local_files_only=Path(path).is_dir())
    except OSError as e:
        raise LlmrankError(f"distill.model: '{cfg.model}' is not a sentence-transformers model that loads here ({e})") from None
    st.max_seq_length = cfg.max_seq_length
    return st.float(), path


def student_meta(cfg, base_path: str) -> dict:
    return {"kind": "bi-encoder", "base_model": str(base_path), "similarity": cfg.similarity,
            "max_seq_length": cfg.max_seq_length, "max_doc_tokens": cfg.max_seq_length,
            "config": config_dict(cfg, BiEncoderFields)}


def write_biencoder(st_model, out: Path, meta: dict) -> Path:
    """Save ``out/merged`` (a sentence-transformers folder + ``llmrank_student.json``) and ``out/adapter`` (the
    training logs' folder, as for a fully fine-tuned LLM student)."""
    merged = out / "merged"
    if merged.exists():
        shutil.rmtree(merged)
    st_model.save_pretrained(str(merged))
    (merged / STUDENT_FILE).write_text(json.dumps(meta, indent=1, default=str))
    (out / "adapter").mkdir(parents=True, exist_ok=True)
    return merged


class BiEncoderStudent(Student):
    kind = "bi-encoder"
    config_name = "BiEncoderStudentConfig"
    fields = BiEncoderFields
    base_config = "TrainingArguments"
    description = "a sentence-transformers bi-encoder (documents encoded once; also a first stage) on a ranking loss"
    training_defaults = {**Student.training_defaults, "per_device_train_batch_size": 4, "learning_rate": 2e-5}

    @classmethod
    def check_section(cls, section) -> list[tuple[str, str]]:

        problems = [p for p in super().check_section(section) if p[0] != "finetune"]
        if section.finetune != "full":
            problems.append(("finetune", f"a bi-encoder student trains every weight: finetune must be 'full' "
                                         f"(got {section.finetune!r})"))
        if getattr(section, "qlora", False):
            problems.append(("qlora", "a bi-encoder student has no 4-bit base"))
        if section.similarity not in SIMILARITIES:
            problems.append(("similarity", f"unknown similarity {section.similarity!r} (one of {', '.join(SIMILARITIES)})"))
        return problems

    @classmethod
    def check_model(cls, name: str) -> None:
        """The base model resolves: an embedded alias (``minilm-l6``), a sentence-transformers folder, or a hub
        id (``org/name``, loaded where a hub is reachable)."""
        from llmrank.rerankers.dense import DENSE_MODELS, resolve_dense_model

        path = Path(resolve_dense_model(name))
        if path.is_dir() and not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise LlmrankError(f"'{name}' is a folder without a model (no modules.json or config.json)")
        if not path.is_dir() and str(name).count("/") != 1:
            raise LlmrankError(f"unknown bi-encoder '{name}': not an embedded alias ({', '.join(sorted(DENSE_MODELS)[:2])}), "
                               "a local sentence-transformers folder or a hub id (org/name)")

    @classmethod
    def build_examples(cls, data, teacher_records: dict, cfg, seed: int = 0) -> list[dict]:
        from llmrank.students.examples import build_groups

        return build_groups(data, teacher_records, cfg.group_size, seed=seed)

    @classmethod
    def train(cls, cfg, examples: list[dict], resume: bool | str | None = None, callbacks=None) -> Path:
        """Train on groups (:func:`llmrank.students.examples.build_groups`); saves ``merged/`` (a
        sentence-transformers folder) under ``cfg.output_dir``, with ``adapter/trainer_log.json`` and
        ``adapter/training_info.json``."""
        import datasets

        from llmrank.losses import build_loss

        st, base_path = load_base(cfg)
        cfg.remove_unused_columns = False
        cfg.label_names = []
        loss = build_loss(cfg.loss, **dict(cfg.loss_options))
        trainer = _trainer_class()(
            model=st, args=cfg, train_dataset=datasets.Dataset.from_list(examples),
            data_collator=GroupEncoderCollator(st, cfg.group_size), ranking_loss=loss, temperature=cfg.temperature,
            in_batch_weight=cfg.in_batch_weight if cfg.in_batch_negatives else 0.0, callbacks=callbacks,
        )
        if cfg.train_max_seq_length:
            st.max_seq_length = cfg.train_max_seq_length
        trainer.train(resume_from_checkpoint=resume)
        st.max_seq_length = cfg.max_seq_length
        out = Path(cfg.output_dir)
        if trainer.is_world_process_zero():
            model = trainer.accelerator.unwrap_model(trainer.model).eval()
            write_biencoder(model, out, student_meta(cfg, base_path))
            write_training_logs(trainer, out, {"groups": len(examples),
                                               "per_device_train_batch_size": cfg.per_device_train_batch_size,
                                               "gradient_accumulation_steps": cfg.gradient_accumulation_steps})
        trainer.accelerator.wait_for_everyone()
        return out

    @classmethod
    def zero_shot(cls, section, dtype: str | None = None, **options):
        from llmrank.rerankers.dense import DenseReranker

        return DenseReranker(model=section.model, max_seq_length=section.max_seq_length, **_dense_options(options))

    @classmethod
    def load(cls, path: str | Path, dtype: str = "float32"):
        """``(SentenceTransformer, its tokenizer, meta)`` of a saved bi-encoder student (distill's ``merged/``
        or an export: both are sentence-transformers folders)."""
        from sentence_transformers import SentenceTransformer

        from llmrank.students.base import read_meta

        path = Path(path)
        meta = read_meta(path)
        # a fresh copy, not the scoring cache's (an export may cast or move it)
        st = SentenceTransformer(str(path.resolve()), device="cpu", local_files_only=True)
        return st, st.tokenizer, meta

    @classmethod
    def reranker(cls, model, tokenizer, meta: dict, path: Path, dtype: str, **options):
        """The cosine reranker of the saved folder (documents encoded per query, or the whole corpus once with
        ``pre_encode=True``)."""
        from llmrank.rerankers.dense import DenseReranker

        return DenseReranker(model=str(Path(path).resolve()), **_dense_options(options))

    @classmethod
    def write_export(cls, src: Path, tmp: Path, out: Path, dtype: str) -> dict:
        """The student as a sentence-transformers folder in ``tmp`` (``SentenceTransformer(out)`` loads it; vLLM
        serves it as an embedding model: ``/v1/embeddings``, and ``/score`` / ``/rerank`` give the cosine);
        returns the serve info. The weights stay float32 whatever ``dtype`` says: a 22M encoder gains
        nothing from bf16 on a CPU and its scores would drift from the student's."""
        model, _, meta = cls.load(src, "float32")
        model.save_pretrained(str(tmp))
        (tmp / STUDENT_FILE).write_text(json.dumps(meta, indent=1, default=str))
        info: dict = {"kind": cls.kind, "model_dir": str(out), "dtype": "float32", "max_doc_tokens": meta.get("max_seq_length")}
        info.update(cls.export(src, tmp, meta, model, None))
        return info

    @classmethod
    def export(cls, src: Path, tmp: Path, meta: dict, model, tokenizer) -> dict:
        # max_doc_tokens None: a client sends documents whole; the model's own tokenizer cuts them (max_seq_length)
        return {"runner": "pooling", "sentence_transformers": "SentenceTransformer", "similarity": "cosine",
                "max_seq_length": meta.get("max_seq_length"), "max_doc_tokens": None,
                "note": "an embedding model: llmrank, SentenceTransformer(path).similarity and a vLLM embedding "
                        "server's /score and /rerank give the cosine of the query's and the document's "
                        "normalised embeddings."}

    @classmethod
    def cli_fields(cls) -> list[str]:
        return ["max_steps", "num_train_epochs", "learning_rate", "per_device_train_batch_size",
                "gradient_accumulation_steps", "warmup_steps", "logging_steps", "save_steps"]


def _dense_options(options: dict) -> dict:
    """The options a :class:`DenseReranker` takes among a student loader's (``batch_size``, ``device``,
    ``pre_encode``); LLM backend options (``dtype``…) do not apply to a bi-encoder."""
    return {k: v for k, v in options.items() if k in ("batch_size", "device", "pre_encode")}


__getattr__ = lazy_names(BiEncoderStudentConfig=lambda: BiEncoderStudent.config_class(),
                          BiEncoderTrainer=lambda: _trainer_class())
