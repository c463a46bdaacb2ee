"""Encoder student choices measured on a held-out dev split of SciFact *train* queries (never the test
queries): each variant of a recipe's distill section (``--recipe``, default ``recipes/encoder-cpu.yaml``) is
trained on the teacher file and scored on the dev queries' BM25 top-20, one after the other in one process.

    LLMRANK_DATA=../shared/data python -m eval.bench_encoder_dev \
        --teacher runs/quickstart-cpu/teach/teacher.jsonl --dev-queries 60 --out runs/bench-ce-dev.json \
        --variant base= \
        --variant lr1e-4='distill.training.learning_rate=1e-4 distill.head_learning_rate=1e-3'
    LLMRANK_DATA=../shared/data python -m eval.bench_encoder_dev --recipe recipes/biencoder-cpu.yaml \
        --teacher runs/quickstart-cpu/teach/teacher.jsonl --out runs/bench-bi-dev.json --variant base=

The dev queries are the last ``--dev-queries`` of SciFact train (the teacher's queries are the first ones; a
teacher query among them is an error). Each variant is a list of ``--set`` assignments on the recipe; its
student is saved under ``<--work>/<name>/`` (a variant already in ``--out`` is kept unless ``--redo``).
Printed per variant: dev nDCG@10 / MRR@10, training seconds, groups, steps, and the first- and last-quarter mean
training loss; the BM25 row of the same dev queries comes first, then the student's zero-shot self where its
kind has one (the bi-encoder's base as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("LLMRANK_DATA", "../shared/data"))
RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "encoder-cpu.yaml"


def dev_split(n: int, exclude: set[str]):
    from llmrank.data import load_dataset
    from llmrank.data.bm25 import ensure_candidates

    data = load_dataset(str(DATA / "scifact"), "train")
    qids = [q for q in data.queries if data.qrels and q in data.qrels][-n:]
    clash = sorted(set(qids) & exclude)
    if clash:
        raise SystemExit(f"dev query {clash[0]} is also a teacher query: take fewer --dev-queries")
    keep = set(qids)
    data.queries = {q: t for q, t in data.queries.items() if q in keep}
    data.qrels = {q: r for q, r in data.qrels.items() if q in keep}
    first = ensure_candidates(data, 100)
    return data, first


def quarter_means(log_path: Path) -> list[float]:
    rows = json.loads(log_path.read_text()) if log_path.is_file() else []
    losses = [r["loss"] for r in rows]
    if len(losses) < 4:
        return []
    q = len(losses) // 4
    return [sum(losses[:q]) / q, sum(losses[-q:]) / q]


def score_dev(folder, data, first) -> dict:
    """nDCG@10 / MRR@10 of a saved student on the dev queries' BM25 top-20, and its seconds per query."""
    from llmrank.eval.metrics import default_rel_threshold, evaluate
    from llmrank.rerankers.base import total_cost
    from llmrank.students import load_student

    run, rankings = load_student(folder).rerank_all(data, first, 20, progress=False)
    m = evaluate(run.top(20), data.qrels, ["ndcg@10", "mrr@10"], default_rel_threshold(data.qrels))
    return {**m, "score_s_per_query": total_cost(rankings).get("seconds_per_query")}


def run_variant(name: str, sets: list[str], args, data, first, teacher_path: Path) -> dict:
    from transformers import set_seed

    from llmrank.data import load_dataset
    from llmrank.recipe import load_recipe
    from llmrank.students import get_student
    from llmrank.teacher import read_teacher_run

    recipe = load_recipe(args.recipe, overrides=[f"data.dataset={DATA / 'scifact'}"] + sets)
    student = get_student(recipe.distill.kind)
    train = load_dataset(str(DATA / "scifact"), recipe.data.train_split)
    teacher = read_teacher_run(teacher_path)
    if recipe.data.queries:
        teacher = dict(list(teacher.items())[:recipe.data.queries])
    out = Path(args.work) / name
    cfg = student.make_config(recipe.distill, out, seed=recipe.seed)
    cfg.logging_steps = 1
    cfg.save_strategy = "no"
    cfg.disable_tqdm = True
    examples = student.build_examples(train, teacher, cfg, seed=recipe.seed)
    set_seed(recipe.seed)
    t0 = time.perf_counter()
    student.train(cfg, examples)
    train_s = time.perf_counter() - t0
    m = score_dev(out / "merged", data, first)
    info = json.loads((out / "adapter" / "training_info.json").read_text())
    res = {"sets": sets, **m, "train_s": round(train_s, 1), "groups": len(examples), "steps": info["global_step"],
           "loss_first_last_quarter": quarter_means(out / "adapter" / "trainer_log.json")}
    print(f"[dev] {name}: nDCG@10 {m['ndcg@10']:.4f} MRR@10 {m['mrr@10']:.4f} | {res['groups']} groups, "
          f"{res['steps']} steps, {train_s:.0f} s, loss {res['loss_first_last_quarter']}", file=sys.stderr)
    return res


def zero_shot_row(args, data, first, results: dict) -> None:
    """The dev metrics of the recipe's student base as it is, where its kind has a zero-shot self."""
    from llmrank.eval.metrics import default_rel_threshold, evaluate
    from llmrank.recipe import load_recipe
    from llmrank.students import get_student

    if "zero_shot" in results and not args.redo:
        return
    recipe = load_recipe(args.recipe, overrides=[f"data.dataset={DATA / 'scifact'}"])
    reranker = get_student(recipe.distill.kind).zero_shot(recipe.distill)
    if reranker is None:
        return
    run, _ = reranker.rerank_all(data, first, 20, progress=False)
    results["zero_shot"] = evaluate(run.top(20), data.qrels, ["ndcg@10", "mrr@10"], default_rel_threshold(data.qrels))
    print(f"[dev] zero-shot: nDCG@10 {results['zero_shot']['ndcg@10']:.4f}", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default=str(RECIPE), help="the recipe whose distill section the variants change")
    p.add_argument("--teacher", required=True, help="teacher run jsonl (the quickstart's)")
    p.add_argument("--dev-queries", type=int, default=60, help="last N SciFact train queries held out (default 60)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=SETS",
                   help="a variant: NAME=space-separated --set assignments on recipes/encoder-cpu.yaml (repeatable)")
    p.add_argument("--student", action="append", default=[], metavar="NAME=DIR",
                   help="a student already trained (e.g. a recipe run's distill/merged) scored on the dev queries "
                        "as it is (repeatable)")
    p.add_argument("--test", action="append", default=[], metavar="NAME",
                   help="after the dev rows, score this variant (or --student) on the 40 SciFact test queries and on "
                        "TREC DL19 (43 queries), BM25 top-20 each: the numbers to report once the choice is made")
    p.add_argument("--work", default="runs/bench-ce-dev", help="where the variants' students are saved")
    p.add_argument("--redo", action="store_true")
    p.add_argument("--out", required=True, help="results JSON (updated after each variant)")
    args = p.parse_args()
    from llmrank.eval.metrics import default_rel_threshold, evaluate
    from llmrank.teacher import read_teacher_run

    teacher_path = Path(args.teacher)
    data, first = dev_split(args.dev_queries, set(read_teacher_run(teacher_path)))
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results["dev_queries"] = sorted(data.queries)
    results["bm25"] = evaluate(first.top(20), data.qrels, ["ndcg@10", "mrr@10"], default_rel_threshold(data.qrels))
    print(f"[dev] bm25: nDCG@10 {results['bm25']['ndcg@10']:.4f} ({len(data.queries)} dev queries)", file=sys.stderr)
    zero_shot_row(args, data, first, results)
    variants = results.setdefault("variants", {})
    for item in args.variant:
        name, _, sets = item.partition("=")
        if name in variants and not args.redo:
            print(f"[dev] {name}: kept from {out_path}", file=sys.stderr)
            continue
        variants[name] = run_variant(name, shlex.split(sets), args, data, first, teacher_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1))
    for item in args.student:
        name, _, folder = item.partition("=")
        variants[name] = {"student": folder, **score_dev(folder, data, first)}
        print(f"[dev] {name}: nDCG@10 {variants[name]['ndcg@10']:.4f} ({folder})", file=sys.stderr)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1))
    for name in args.test:
        folder = variants[name].get("student") or str(Path(args.work) / name / "merged")
        results.setdefault("test", {})[name] = score_test(folder)
        out_path.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


def score_test(folder) -> dict:
    """nDCG@10 / MRR@10 and seconds per query of a saved student on SciFact test (first 40 queries) and TREC DL19
    (43 queries), BM25 top-20 each, next to BM25's."""
    from llmrank.data import load_dataset
    from llmrank.data.bm25 import ensure_candidates
    from llmrank.eval.metrics import default_rel_threshold, evaluate

    out = {}
    for name, path, n in (("scifact-test", DATA / "scifact", 40), ("dl19", DATA / "trec-dl19", None)):
        data = load_dataset(str(path), "test").first_queries(n)
        first = ensure_candidates(data, 100).subset(data.queries)
        rel = default_rel_threshold(data.qrels)
        out[name] = {"queries": len(data.queries), "bm25": evaluate(first.top(20), data.qrels, ["ndcg@10", "mrr@10"], rel),
                     "student": score_dev(folder, data, first)}
        print(f"[test] {folder} {name}: nDCG@10 {out[name]['student']['ndcg@10']:.4f} (BM25 "
              f"{out[name]['bm25']['ndcg@10']:.4f}), {out[name]['student']['score_s_per_query']:.3f} s/query", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
