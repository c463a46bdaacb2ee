"""The main table of "From a corpus alone" (eval/README.md): on the 40 SciFact test queries (BM25 top-20),
the student trained on generated queries next to its zero-shot self, the quickstart student trained on the
real train queries, and BM25, with the paired tests (t-test and sign-flip randomization, per-query nDCG@10)
of the generated-query student against its zero-shot self and against the quickstart student.

    python -m eval.corpus_only_table --run runs/corpus-only-cpu --data ../shared/data/scifact

Reads the eval rows the runs wrote (``eval/scifact-test/<row>.json``); computes nothing but the tests. The
quickstart student's row is the run's own ``quickstart_student`` row when the run was given it
(``--set eval.students.quickstart_student=runs/quickstart-cpu/distill/merged``), else the quickstart run's
``student`` row (``--quickstart runs/quickstart-cpu``). With ``--data`` it also checks for leakage from the
test split into the generated training data: sampled documents that a test query judges relevant, and kept
queries equal to (or sharing most of their words with) a test query.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from llmrank.eval.significance import paired_randomization_test, paired_t_test


def row(run: Path, name: str, dataset: str) -> dict:
    path = run / "eval" / dataset / f"{name}.json"
    if not path.is_file():
        sys.exit(f"{path} not found: has the run's eval stage finished?")
    return json.loads(path.read_text())


def paired(a: dict, b: dict, qids: list[str]) -> dict:
    """Paired t-test and sign-flip randomization test of per-query nDCG@10 ``a`` against ``b``."""
    x, y = [a[q] for q in qids], [b[q] for q in qids]
    t, p_t = paired_t_test(x, y)
    return {"mean_diff": sum(u - v for u, v in zip(x, y)) / len(x), "t": t, "p_t": p_t,
            "p_randomization": paired_randomization_test(x, y, n_resamples=10000, seed=0)}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def leakage(run: Path, data: Path, evaluated: list[str]) -> dict:
    """How the generated training data touches the test split (the generator never reads queries; the
    documents are the corpus's, which test-time retrieval sees too)."""
    from llmrank.data import load_dataset
    from llmrank.synth.records import read_records

    test = load_dataset(data, "test")
    sampled = read_records(run / "generate" / "queries.jsonl", ("doc_id", "query"))
    kept = read_records(run / "generate" / "kept.jsonl", ("doc_id", "query"))
    relevant = {d for q, docs in test.qrels.items() for d, g in docs.items() if g > 0}
    relevant_eval = {d for q in evaluated for d, g in test.qrels.get(q, {}).items() if g > 0}
    tq = {q.text.strip().lower(): _words(q.text) for q in test.queries.values()}
    jac = [len(_words(r["query"]) & w) / max(1, len(_words(r["query"]) | w)) for r in kept for w in tq.values()]
    return {"test_queries": len(test.queries), "sampled": len(sampled),
            "sampled_relevant": sum(r["doc_id"] in relevant for r in sampled),
            "kept": len(kept), "kept_relevant": sum(r["doc_id"] in relevant for r in kept),
            "kept_relevant_evaluated": sum(r["doc_id"] in relevant_eval for r in kept),
            "equal": sum(r["query"].strip().lower() in tq for r in kept), "max_jaccard": max(jac, default=0.0)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="the corpus-only run folder (runs/corpus-only-cpu)")
    p.add_argument("--quickstart", default=None,
                   help="the quickstart run folder (runs/quickstart-cpu), when the run has no quickstart_student row")
    p.add_argument("--data", default=None, help="the BEIR folder the run was evaluated on: check for test leakage")
    p.add_argument("--dataset", default="scifact-test")
    p.add_argument("--hard-negatives", default=None, metavar="RUN",
                   help="a quickstart run with distill.negative_band set: its student against the plain-group "
                        "quickstart student (same recipe otherwise), with the paired tests")
    p.add_argument("--json", default=None, help="also write the table and tests here")
    args = p.parse_args()
    run = Path(args.run)
    if (run / "eval" / args.dataset / "quickstart_student.json").is_file():
        real_row = row(run, "quickstart_student", args.dataset)
    elif args.quickstart:
        real_row = row(Path(args.quickstart), "student", args.dataset)
    else:
        sys.exit(f"{run} has no quickstart_student row: give --quickstart runs/quickstart-cpu")
    rows = {"student, generated queries (corpus only)": row(run, "student", args.dataset),
            "zero-shot student (same base)": row(run, "student_before", args.dataset),
            "quickstart student, real train queries": real_row,
            "BM25": row(run, "first_stage", args.dataset)}
    if (run / "eval" / args.dataset / "teacher.json").is_file():
        rows["teacher (BM25 + MiniLM, RRF)"] = row(run, "teacher", args.dataset)
    ours, zero, real = (rows[k]["per_query"] for k in list(rows)[:3])
    qids = sorted(ours)
    if sorted(zero) != qids or sorted(real) != qids:
        sys.exit("the rows were not evaluated on the same queries")
    tests = {label: paired(ours, other, qids)
             for label, other in (("vs zero-shot", zero), ("vs quickstart student", real))}
    print(f"| {args.dataset} ({len(qids)} queries, BM25 top-20) | nDCG@10 | recall@20 | MRR@10 |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        m = r["metrics"]
        print(f"| {name} | {m['ndcg@10']:.4f} | {m['recall@20']:.4f} | {m['mrr@10']:.4f} |")
    print()
    for label, s in tests.items():
        print(f"generated-query student {label}: mean nDCG@10 difference {s['mean_diff']:+.4f}, paired t = {s['t']:.2f} "
              f"(p = {s['p_t']:.2g}), randomization p = {s['p_randomization']:.2g}")
    if args.hard_negatives:
        mined = row(Path(args.hard_negatives), "student", args.dataset)
        rows["quickstart student, mined hard negatives"] = mined
        if sorted(mined["per_query"]) != qids:
            sys.exit("the hard-negative run was not evaluated on the same queries")
        s = tests["mined vs plain groups"] = paired(mined["per_query"], real, qids)
        m = mined["metrics"]
        print(f"\nquickstart student, mined hard negatives: nDCG@10 {m['ndcg@10']:.4f}, recall@20 "
              f"{m['recall@20']:.4f}, MRR@10 {m['mrr@10']:.4f}; vs plain groups: mean nDCG@10 difference "
              f"{s['mean_diff']:+.4f}, paired t = {s['t']:.2f} (p = {s['p_t']:.2g}), randomization p = "
              f"{s['p_randomization']:.2g}")
    leak = leakage(run, Path(args.data), qids) if args.data else None
    if leak:
        print(f"\nleakage check ({args.data}, split test, all {leak['test_queries']} test queries): "
              f"{leak['sampled_relevant']} of {leak['sampled']} sampled documents are judged relevant to a test "
              f"query ({leak['kept_relevant']} of {leak['kept']} kept queries come from one; "
              f"{leak['kept_relevant_evaluated']} from a document relevant to one of the {len(qids)} evaluated "
              f"queries); kept queries equal to a test query: {leak['equal']}; highest word overlap (Jaccard) "
              f"of a kept query with a test query: {leak['max_jaccard']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": {k: v["metrics"] for k, v in rows.items()}, "tests": tests,
                                               "leakage": leak}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
