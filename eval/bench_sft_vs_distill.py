"""Training throughput: llmrank's pointwise distill trainer vs trl's SFTTrainer on the same sequences.

    python -m eval.bench_sft_vs_distill --steps 6 --rounds 2
    python -m eval.bench_sft_vs_distill --model /path/to/checkpoint --groups 2 --group-size 8 --bf16

Both train the same base model with the same LoRA (r 16, alpha 32, dropout 0.05, all-linear), optimizer,
learning rate, precision, no gradient checkpointing, batches taken in order (no shuffling):

- distill: :meth:`llmrank.students.pointwise.PointwiseStudent.train` (ListNet over groups) on ``steps`` batches of
  ``--groups`` groups of ``--group-size`` documents, each scored at the last prompt position
  (``yes_no`` prompt, documents cut to ``--max-doc-tokens``);
- SFT: trl's ``SFTTrainer`` through :func:`llmrank.students.reasoning.build_sft_trainer` on the SAME prompts
  (each group's documents, flattened, ``groups * group_size`` per batch, same order), each followed by the
  teacher's answer "yes"/"no" as the assistant turn (loss on the answer only). llmrank's subclass runs the
  LM head on the answer positions only off CUDA; ``--stock-trl`` measures trl's trainer unchanged.

Throughput is non-padding input tokens per second over the steady state: from the end of the
``--warmup``-th step to the end of the last, so data collation (distill tokenizes in its collator, SFT
beforehand) counts, model loading and the first steps do not. Sequences per second are printed too. Each
round trains both, distill first; the median over rounds is reported, and the ratio SFT / distill last.
No test runs this: it is a measurement.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORDS = ("water boils degrees celsius pressure altitude tower paris engine battery voltage river delta protein "
         "enzyme cell membrane market shares inflation vaccine immune response orbit planet solar wind turbine "
         "grid storage memory cache latency network packet route sugar plants sunlight chlorophyll bank loan").split()


def synthetic_groups(n_groups: int, group_size: int, doc_words: int, seed: int = 0) -> list[dict]:
    """Deterministic query/document groups in the shape of :func:`llmrank.students.examples.build_groups`."""
    rng = random.Random(seed)
    groups = []
    for q in range(n_groups):
        query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))
        docs = [" ".join(rng.choice(WORDS) for _ in range(doc_words)).capitalize() + "." for _ in range(group_size)]
        groups.append({"qid": f"q{q}", "query": query, "docids": [f"q{q}d{j}" for j in range(group_size)], "docs": docs,
                       "teacher_scores": [float(group_size - j) for j in range(group_size)],
                       "teacher_ranks": list(range(group_size)),
                       "labels": [1.0 if j < group_size // 2 else 0.0 for j in range(group_size)]})
    return groups


class Meter:
    """A TrainerCallback timing steps, plus a collator wrapper counting each batch's real tokens."""

    def __init__(self, warmup: int):
        self.warmup, self.marks, self.tokens, self.seqs = warmup, [], [], []

    def wrap(self, collator):
        def collate(features):
            batch = collator(features)
            self.tokens.append(int(batch["attention_mask"].sum()))
            self.seqs.append(int(batch["attention_mask"].shape[0]))
            return batch
        return collate

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                meter.marks.append(time.perf_counter())

        return _CB()

    def result(self) -> dict:
        w = self.warmup
        steps = len(self.marks) - w
        seconds = self.marks[-1] - self.marks[w - 1] if w > 0 else None
        tokens = sum(self.tokens[w: len(self.marks)])
        seqs = sum(self.seqs[w: len(self.marks)])
        return {"steps": steps, "seconds": round(seconds, 3), "tokens": tokens, "sequences": seqs,
                "tokens_per_s": tokens / seconds, "seqs_per_s": seqs / seconds}


def training_args(cls, out: str, n_steps: int, batch: int, a, **fields) -> object:
    import torch

    kw = dict(**fields, output_dir=out, max_steps=n_steps, per_device_train_batch_size=batch, learning_rate=1e-4,
              lr_scheduler_type="constant", warmup_steps=0, logging_steps=10**6, save_strategy="no", report_to=[],
              bf16=a.bf16, fp16=False, gradient_checkpointing=False, use_cpu=not torch.cuda.is_available(), seed=0,
              disable_tqdm=True, train_sampling_strategy="sequential", dataloader_num_workers=0)
    return cls(**kw)


def run_distill(path: str, groups: list[dict], a, tmp: Path) -> dict:
    from llmrank.students import pointwise

    meter = Meter(a.warmup)
    cfg = training_args(pointwise.PointwiseStudent.config_class(), str(tmp / "distill"), a.warmup + a.steps,
                        a.groups, a, model=path, prompt="yes_no", loss="listnet", group_size=a.group_size,
                        max_doc_tokens=a.max_doc_tokens, dtype="float32", merge=False)
    trainer, *_ = pointwise.build_trainer(cfg, groups, callbacks=[meter.callback()])
    trainer.data_collator = meter.wrap(trainer.data_collator)
    trainer.train()
    return meter.result()


def sft_examples(tokenizer, groups: list[dict], max_doc_tokens: int) -> list[dict]:
    from llmrank.prompts import load_prompt
    from llmrank.rerankers.pointwise import truncate_document

    prompt = load_prompt("yes_no")
    out = []
    for g in groups:
        for doc, label in zip(g["docs"], g["labels"]):
            doc, _ = truncate_document(tokenizer, doc, max_doc_tokens)
            answer = prompt.answers["yes"] if label > 0 else prompt.answers["no"]
            out.append({"messages": prompt.messages(query=g["query"], document=doc) + [{"role": "assistant", "content": answer}]})
    return out


def run_sft(path: str, groups: list[dict], a, tmp: Path) -> dict:
    from transformers import AutoTokenizer

    from llmrank.students.reasoning import ReasoningStudent, build_sft_trainer

    meter = Meter(a.warmup)
    tok = AutoTokenizer.from_pretrained(path)
    examples = sft_examples(tok, groups, a.max_doc_tokens)
    cfg = training_args(ReasoningStudent.config_class(), str(tmp / "sft"), a.warmup + a.steps, a.groups * a.group_size,
                        a, model=path, max_length=4096, dtype="float32", merge=False)
    if a.stock_trl:  # trl's SFTTrainer as it is (its CPU loss projects every position onto the vocabulary)
        from trl import SFTTrainer

        trainer, *_ = build_sft_trainer(cfg, examples, callbacks=[meter.callback()], trainer_cls=SFTTrainer)
    else:
        trainer, *_ = build_sft_trainer(cfg, examples, callbacks=[meter.callback()])
    trainer.data_collator = meter.wrap(trainer.data_collator)
    trainer.train()
    return meter.result()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="model alias (llmrank.models) or checkpoint path")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per trainer and round")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    ap.add_argument("--groups", type=int, default=1, help="distill groups per batch (SFT batch = groups x group size)")
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-doc-tokens", type=int, default=64)
    ap.add_argument("--doc-words", type=int, default=60, help="words per synthetic document (before truncation)")
    ap.add_argument("--rounds", type=int, default=1, help="distill-then-SFT rounds; medians are reported")
    ap.add_argument("--bf16", action="store_true", help="bf16 mixed precision for both (default fp32)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--stock-trl", action="store_true",
                    help="SFT with trl's SFTTrainer unchanged (llmrank's runs the LM head on answer positions only off CUDA)")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    a = ap.parse_args(argv)
    if a.warmup < 1:
        ap.error("--warmup must be at least 1 (the timed span starts at the end of a step)")
    logging.basicConfig(level=logging.WARNING)
    import torch

    from llmrank.models import resolve_model

    if a.threads:
        torch.set_num_threads(a.threads)
    path = resolve_model(a.model)
    groups = synthetic_groups((a.warmup + a.steps) * a.groups, a.group_size, a.doc_words)
    rows = {"distill": [], "sft": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            rows["distill"].append(run_distill(path, groups, a, Path(tmp) / f"r{r}"))
            rows["sft"].append(run_sft(path, groups, a, Path(tmp) / f"r{r}"))
            print(f"round {r + 1}: distill {rows['distill'][-1]['tokens_per_s']:.1f} tok/s, "
                  f"sft {rows['sft'][-1]['tokens_per_s']:.1f} tok/s", file=sys.stderr)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("tokens_per_s", "seqs_per_s")} for k, v in rows.items()}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads"
    result = {"model": path, "device": device, "precision": "bf16" if a.bf16 else "fp32", "steps": a.steps,
              "sft_trainer": "trl SFTTrainer (stock)" if a.stock_trl else "llmrank CompletionSFTTrainer (trl SFTTrainer subclass)",
              "warmup": a.warmup, "batch_sequences": a.groups * a.group_size, "max_doc_tokens": a.max_doc_tokens,
              "rounds": rows, "median": med, "ratio_sft_over_distill": med["sft"]["tokens_per_s"] / med["distill"]["tokens_per_s"]}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"model {path} on {device}, {result['precision']}, {a.steps} timed steps x {a.rounds} rounds, "
          f"{result['batch_sequences']} sequences per step; SFT: {result['sft_trainer']}")
    for name in ("distill", "sft"):
        toks = [round(x["tokens_per_s"], 1) for x in rows[name]]
        print(f"{name:8s} {med[name]['tokens_per_s']:9.1f} tokens/s  {med[name]['seqs_per_s']:7.2f} seqs/s  (rounds: {toks}, "
              f"{rows[name][0]['tokens'] // max(rows[name][0]['steps'], 1)} tokens/step)")
    print(f"ratio sft/distill (tokens/s): {result['ratio_sft_over_distill']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
