"""DPO on CPU: does a bounded DPO run on ranking preferences raise the reward accuracy of a pointwise student?

The student is SmolLM2-135M-Instruct used as a pointwise yes/no student (prompt ``yes_no``; pass
``--student DIR`` for a distilled one), refined with LoRA by :func:`llmrank.training.dpo.train_dpo` on the
single-answer-token preferences :func:`llmrank.students.pointwise.pointwise_pairs` builds from SciFact train
(BM25 top ``--k`` of the first ``--queries`` queries; qrels targets; the pairs the student misorders).
Writes ``trainer_log.json``, ``reward.png`` and ``summary.json`` (reward accuracy and margin over the first
and the last quarter of steps; with ``--eval-queries``, nDCG@10 before and after on SciFact test, BM25 top
``--eval-k``) under ``--out``.

    python -m eval.bench_dpo_cpu --steps 30 --eval-queries 30 --out runs/bench-dpo
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from eval.refine_common import ndcg, quarters, train_queries

REPO = Path(__file__).resolve().parents[1]


def pointwise_student(out: Path, model: str, max_doc_tokens: int) -> Path:
    from llmrank.models import resolve_model
    from llmrank.prompts import load_prompt
    from llmrank.students import STUDENT_FILE
    from llmrank.students.pointwise import PointwiseFields, student_meta

    path = Path(resolve_model(model))
    st = out / "student"
    if not (st / "merged" / STUDENT_FILE).is_file():
        shutil.copytree(path, st / "merged", dirs_exist_ok=True)
        meta = student_meta(PointwiseFields(model=model, max_doc_tokens=max_doc_tokens), str(path), load_prompt("yes_no"))
        (st / "merged" / STUDENT_FILE).write_text(json.dumps(meta))
    return st


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(REPO.parent / "shared" / "data" / "scifact"))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--student", default=None, help="a saved pointwise student (default: --model zero-shot)")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--pairs-per-query", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--max-doc-tokens", type=int, default=128)
    ap.add_argument("--eval-queries", type=int, default=0)
    ap.add_argument("--eval-k", type=int, default=10)
    ap.add_argument("--out", default="runs/bench-dpo")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from trl import DPOConfig

    from llmrank.training.dpo import build_dpo_rows, train_dpo

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    st = Path(a.student) if a.student else pointwise_student(out, a.model, a.max_doc_tokens)
    data, teacher = train_queries(a.dataset, a.queries, a.k)
    t0 = time.perf_counter()
    rows, stats = build_dpo_rows(st, data, teacher, out / "refine", {"pairs_per_query": a.pairs_per_query},
                                 progress=True)
    t_pairs = time.perf_counter() - t0
    print(f"{len(rows)} DPO rows {stats}", file=sys.stderr)
    args = DPOConfig(output_dir=str(out / "refine"), max_steps=a.steps, learning_rate=a.lr, beta=a.beta,
                     per_device_train_batch_size=a.batch, logging_steps=1, save_steps=max(10, a.steps // 2),
                     save_total_limit=1, report_to=[], use_cpu=True, bf16=False, gradient_checkpointing=False, seed=0,
                     lr_scheduler_type="constant", warmup_steps=0)
    t0 = time.perf_counter()
    train_dpo(st, rows, args, lora={"r": 16, "alpha": 32, "dropout": 0.0}, info={"pair_stats": stats})
    seconds = time.perf_counter() - t0
    log = json.loads((out / "refine" / "adapter" / "trainer_log.json").read_text())
    summary = {"rows": len(rows), "pair_stats": stats, "pair_seconds": round(t_pairs, 1), "train_seconds": round(seconds, 1),
               "args": vars(a), "load_average": os.getloadavg()}
    for key in ("rewards/accuracies", "rewards/margins", "loss"):
        first, last, n = quarters(log, key)
        summary[key] = {"first_quarter": first, "last_quarter": last, "logged_steps": n}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    for ax, key in zip(axes, ("rewards/accuracies", "rewards/margins")):
        ax.plot([r["step"] for r in log if key in r], [r[key] for r in log if key in r], marker=".")
        ax.set_xlabel("step")
        ax.set_title(f"DPO on CPU, {a.model}: {key}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "reward.png", dpi=100)
    if a.eval_queries:
        summary["ndcg@10_before"] = ndcg(st / "merged" if (st / "merged").is_dir() else st, a.dataset, a.eval_queries, a.eval_k)
        summary["ndcg@10_after"] = ndcg(out / "refine" / "merged", a.dataset, a.eval_queries, a.eval_k)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
