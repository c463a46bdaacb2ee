"""Pointwise student distillation: a causal LM scored by its yes/no next-token logit, trained with LoRA on
ranking losses against a teacher's groups.

The student's score of (query, document) is ``logit(yes) - logit(no)`` at the last position of the prompt
built by :func:`llmrank.rerankers.pointwise.build_pointwise_prompt` — exactly one "yes" and one "no" token,
the pair vLLM's ``from_2_way_softmax`` reads when the student is served, so sigmoid(score) is the served
relevance score. Built on ``transformers.Trainer``: ``accelerate launch``, gradient accumulation,
checkpointing and resume, tensorboard logging and DeepSpeed/FSDP configs work as usual.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from llmrank.backends.base import label_token_ids
from llmrank.backends.hf import resolve_dtype
from llmrank.losses import build_loss
from llmrank.prompts import load_prompt
from llmrank.rerankers.pointwise import build_pointwise_prompt

log = logging.getLogger(__name__)
STUDENT_FILE = "llmrank_student.json"


@dataclass
class DistillConfig:
    """What the pointwise student is and how it learns (training-loop settings live in ``TrainingArguments``)."""

    model: str = field(default="smollm2-135m", metadata={"help": "student base: alias, local path or hub id"})
    prompt: str = field(default="yes_no", metadata={"help": "pointwise prompt (name or YAML path) the student is trained and served with"})
    loss: str = field(default="listnet", metadata={"help": "loss name from llmrank.losses (ranknet, margin_mse, listnet, listmle, pld, cprd, bce, label_ce, combined)"})
    loss_options: dict = field(default_factory=dict, metadata={"help": "keyword arguments of the loss (e.g. temperature, weights for combined)"})
    group_size: int = field(default=8, metadata={"help": "candidates per query in one training group"})
    max_doc_tokens: int = field(default=256, metadata={"help": "documents are truncated to this many tokens (document side only)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    target_modules: str | list = field(default="all-linear", metadata={"help": "peft target modules"})
    qlora: bool = field(default=False, metadata={"help": "load the base in 4-bit nf4 (bitsandbytes) and train LoRA on top"})
    dtype: str = field(default="float32", metadata={"help": "base weights dtype: float32 | bfloat16"})
    merge: bool = field(default=False, metadata={"help": "also save the LoRA-merged full model under <output>/merged"})


class GroupCollator:
    """Flattens B groups of g documents into B*g left-padded prompts and [B, g] teacher tensors."""

    def __init__(self, tokenizer, prompt, max_doc_tokens: int, group_size: int):
        self.tokenizer, self.prompt, self.max_doc_tokens, self.group_size = tokenizer, prompt, max_doc_tokens, group_size

    def __call__(self, groups: list[dict]) -> dict:
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


class DistillTrainer(Trainer):
    """``Trainer`` whose loss is a ranking loss over each group's yes-minus-no student scores."""

    def __init__(self, *args, ranking_loss=None, answer_ids: tuple[int, int] = (0, 0), **kwargs):
        super().__init__(*args, **kwargs)
        self.ranking_loss = ranking_loss
        self.answer_ids = torch.tensor(answer_ids)

    def student_scores(self, model, inputs) -> torch.Tensor:
        """``logit(yes) - logit(no)`` at each (left-padded) prompt's last position, through the model's own
        forward (so DDP/FSDP wrappers synchronise gradients), with exact positions and only the last
        position's logits computed."""
        mask = inputs["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions, logits_to_keep=1,
                    use_cache=False)
        logits = out.logits[:, -1, :].float()[:, self.answer_ids.to(logits_device(out))]
        return (logits[:, 0] - logits[:, 1]).view(inputs["group_mask"].shape)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scores = self.student_scores(model, inputs)
        mask = inputs["group_mask"]
        loss = self.ranking_loss(scores.float(), teacher_scores=inputs["teacher_scores"], teacher_ranks=inputs["teacher_ranks"],
                                 labels=inputs["labels_graded"], mask=mask)
        return (loss, {"scores": scores}) if return_outputs else loss


def logits_device(out) -> torch.device:
    return out.logits.device


def answer_token_ids(tokenizer, prompt) -> tuple[int, int]:
    """The single "yes" and "no" token ids the student is trained, scored and served with."""
    return label_token_ids(tokenizer, prompt.answers["yes"], variants=False)[0], label_token_ids(tokenizer, prompt.answers["no"], variants=False)[0]


def load_student_base(cfg: DistillConfig):
    """Tokenizer and base causal LM (4-bit nf4 when ``qlora``), with LoRA adapters attached."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrank.models import resolve_model

    path = resolve_model(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    kwargs = {"dtype": resolve_dtype(cfg.dtype)}
    if cfg.qlora:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if cfg.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    return tok, get_peft_model(model, lora), path


def train_distill(cfg: DistillConfig, groups: list[dict], args: TrainingArguments, resume: bool | str | None = None) -> Path:
    """Train the student on ``groups``; saves the adapter (and ``merged/`` if asked) under ``args.output_dir``."""
    import datasets

    prompt = load_prompt(cfg.prompt)
    tok, model, base_path = load_student_base(cfg)
    args.remove_unused_columns = False
    args.label_names = []
    loss_kwargs = dict(cfg.loss_options)
    loss = build_loss(cfg.loss, **loss_kwargs)
    trainer = DistillTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_list(groups),
        data_collator=GroupCollator(tok, prompt, cfg.max_doc_tokens, cfg.group_size),
        ranking_loss=loss, answer_ids=answer_token_ids(tok, prompt),
    )
    trainer.train(resume_from_checkpoint=resume)
    out = Path(args.output_dir)
    if trainer.is_world_process_zero():
        save_student(trainer.model, tok, cfg, base_path, out, prompt)
        log_rows = [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]
        (out / "adapter" / "trainer_log.json").write_text(json.dumps(log_rows))
        info = {"world_size": trainer.accelerator.num_processes, "global_step": trainer.state.global_step,
                "groups": len(groups), "per_device_train_batch_size": args.per_device_train_batch_size}
        (out / "adapter" / "training_info.json").write_text(json.dumps(info))
    trainer.accelerator.wait_for_everyone()
    return out


def save_student(model, tokenizer, cfg: DistillConfig, base_path: str, out: Path, prompt) -> None:
    adapter = out / "adapter"
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    meta = {"kind": "pointwise", "base_model": str(base_path), "prompt": prompt.path, "prompt_key": prompt.key,
            "answers": {"yes": prompt.answers["yes"], "no": prompt.answers["no"]}, "variants": False,
            "max_doc_tokens": cfg.max_doc_tokens, "config": asdict(cfg)}
    (adapter / STUDENT_FILE).write_text(json.dumps(meta, indent=1))
    if cfg.merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
        (out / "merged" / STUDENT_FILE).write_text(json.dumps(meta, indent=1))


def load_student_model(path: str | Path, dtype: str = "float32"):
    """``(model, tokenizer, meta)`` of a saved student: an adapter folder (LoRA on its recorded base) or a
    merged folder; anything else is a clear error."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrank.errors import LlmrankError

    path = Path(path)
    meta_file = path / STUDENT_FILE
    if not meta_file.is_file():
        raise LlmrankError(f"{path}: not an llmrank student (no {STUDENT_FILE}); give the adapter or merged folder of a distill run")
    meta = json.loads(meta_file.read_text())
    tok = AutoTokenizer.from_pretrained(path)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(meta["base_model"], dtype=resolve_dtype(dtype))
        model = PeftModel.from_pretrained(base, path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype))
    return model, tok, meta


def load_student(path: str | Path, dtype: str = "float32", **backend_options):
    """A saved student (adapter dir or merged dir) as a :class:`PointwiseReranker` scoring exactly as trained,
    or, for ``kind: "reasoning"``, a :class:`llmrank.training.sft.ReasoningStudentReranker`."""
    from llmrank.backends.hf import HFBackend
    from llmrank.rerankers.pointwise import PointwiseReranker

    model, tok, meta = load_student_model(path, dtype)
    backend = HFBackend(str(path), dtype=dtype, model_obj=model, tokenizer=tok, **backend_options)
    if meta.get("kind", "pointwise") == "reasoning":  # an SFT reasoning student (llmrank.training.sft)
        from llmrank.training.sft import reasoning_reranker_from_meta

        return reasoning_reranker_from_meta(backend, meta)
    return PointwiseReranker(backend, meta["prompt"], max_doc_tokens=meta["max_doc_tokens"], variants=False)
