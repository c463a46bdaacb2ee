"""GRPO on CPU: does a bounded GRPO run raise the reward of a small reasoning student?

The student is SmolLM2-135M-Instruct used as a reasoning student (``kind: reasoning``, prompt
``rationale``), refined with LoRA by :func:`llmrank.training.grpo.train_grpo` on SciFact train prompts (BM25
top-k of the first N training queries, the judged-relevant documents plus the hardest others; targets from
the qrels), rewards ``format`` (0.5) + ``relevance`` (1.0). Writes ``trainer_log.json``, ``reward.png`` and
``summary.json`` (mean reward over the first and the last quarter of steps; and, with ``--eval-queries``,
nDCG@10 of the student before and after on SciFact test, BM25 top ``--eval-k``) under ``--out``.

    python -m eval.bench_grpo_cpu --steps 40 --out runs/bench-grpo
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from eval.refine_common import ndcg, quarters, train_queries

REPO = Path(__file__).resolve().parents[1]


def reasoning_student(out: Path, model: str, max_doc_tokens: int, max_new_tokens: int) -> Path:
    """``model`` saved as a zero-shot reasoning student (merged layout), the start of the refinement."""
    from llmrank.models import resolve_model
    from llmrank.prompts import load_prompt
    from llmrank.students import STUDENT_FILE
    from llmrank.students.reasoning import ReasoningFields, reasoning_meta

    path = Path(resolve_model(model))
    st = out / "student"
    if not (st / "merged" / STUDENT_FILE).is_file():
        shutil.copytree(path, st / "merged", dirs_exist_ok=True)
        cfg = ReasoningFields(model=model, max_doc_tokens=max_doc_tokens, max_new_tokens=max_new_tokens)
        (st / "merged" / STUDENT_FILE).write_text(json.dumps(reasoning_meta(cfg, str(path), load_prompt("rationale"))))
    return st


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(REPO.parent / "shared" / "data" / "scifact"))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--student", default=None,
                    help="start from this reasoning student folder (e.g. a distill stage's output) instead of "
                         "--model zero-shot")
    ap.add_argument("--queries", type=int, default=60, help="training queries")
    ap.add_argument("--k", type=int, default=10, help="BM25 depth the training documents come from")
    ap.add_argument("--per-query", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--max-completion", type=int, default=96)
    ap.add_argument("--max-doc-tokens", type=int, default=96)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the completions")
    ap.add_argument("--eval-queries", type=int, default=0)
    ap.add_argument("--eval-k", type=int, default=10)
    ap.add_argument("--out", default="runs/bench-grpo")
    a = ap.parse_args()

    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer
    from trl import GRPOConfig

    from llmrank.students import STUDENT_FILE
    from llmrank.training.grpo import build_grpo_prompts, train_grpo

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    st = Path(a.student) if a.student else reasoning_student(out, a.model, a.max_doc_tokens, a.max_completion)
    data, teacher = train_queries(a.dataset, a.queries, a.k)
    meta = json.loads((st / "merged" / STUDENT_FILE).read_text())
    rows = build_grpo_prompts(data, teacher, meta, AutoTokenizer.from_pretrained(st / "merged"), per_query=a.per_query)
    print(f"{len(rows)} prompts, {sum(1 for r in rows if r['label'])} with target yes", file=sys.stderr)
    args = GRPOConfig(output_dir=str(out / "refine"), max_steps=a.steps, learning_rate=a.lr,
                      per_device_train_batch_size=a.prompts_per_step * a.generations, num_generations=a.generations,
                      max_completion_length=a.max_completion, temperature=a.temperature, beta=0.0, logging_steps=1,
                      save_steps=max(10, a.steps // 2), save_total_limit=1, report_to=[], use_cpu=True, bf16=False,
                      gradient_checkpointing=False, seed=0, lr_scheduler_type="constant", warmup_steps=0)
    t0 = time.perf_counter()
    train_grpo(st, rows, args, rewards=[{"name": "format", "weight": 0.5}, {"name": "relevance", "weight": 1.0}],
               lora={"r": 16, "alpha": 32, "dropout": 0.0})
    seconds = time.perf_counter() - t0
    log = json.loads((out / "refine" / "adapter" / "trainer_log.json").read_text())
    pts = [(r["step"], r["reward"]) for r in log if "reward" in r]
    first, last, _ = quarters(log, "reward")
    summary = {"steps": len(pts), "seconds": round(seconds, 1), "reward_first_quarter": first,
               "reward_last_quarter": last, "prompts": len(rows), "args": vars(a),
               "load_average": os.getloadavg()}
    for key in ("rewards/format/mean", "rewards/relevance/mean", "completions/mean_length"):
        if any(key in r for r in log):
            summary[f"{key} first/last quarter"] = list(quarters(log, key)[:2])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label="reward")
    for key in ("rewards/format/mean", "rewards/relevance/mean"):
        ax.plot([r["step"] for r in log if key in r], [r[key] for r in log if key in r], alpha=0.6, label=key)
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    ax.set_title(f"GRPO on CPU, {a.model}: reward per step", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "reward.png", dpi=100)
    if a.eval_queries:
        summary["ndcg@10_before"] = ndcg(st / "merged", a.dataset, a.eval_queries, a.eval_k)
        summary["ndcg@10_after"] = ndcg(out / "refine" / "merged", a.dataset, a.eval_queries, a.eval_k)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
