"""Helpers for the judge-agreement measurement of "From a corpus alone" (eval/README.md).

``controls``: two control systems from a first-stage run, for the system-order τ of ``llmrank judge --run``:
the top ``k`` of each query reversed, and shuffled with a seed (scores rewritten to the new order).

    python -m eval.judge_systems controls RUN --queries 20 --top-k 20 --out-prefix runs/judge/bm25

writes ``<prefix>_reversed.trec`` and ``<prefix>_shuffled.trec``.

``tau``: the τ-b of a judge run's ``<stem>.agreement.json`` recomputed over a subset of its systems (e.g.
without the controls, which any judge that tells relevant from non-relevant at all orders correctly):

    python -m eval.judge_systems tau runs/judge/scifact.agreement.json --without bm25_reversed bm25_shuffled
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from llmrank.data import load_run
from llmrank.data.trec import write_run
from llmrank.data.types import Candidates
from llmrank.eval.judge_agreement import kendall_tau_b


def controls(run: Candidates, queries: int | None, k: int, seed: int = 0) -> tuple[Candidates, Candidates]:
    """``(reversed, shuffled)`` top-``k`` lists of the first ``queries`` queries of ``run`` (its order)."""
    qids = run.qids()[:queries] if queries else run.qids()
    rev, shuf = Candidates(), Candidates()
    rng = random.Random(seed)
    for q in qids:
        ids = run.docids(q)[:k]
        order = list(reversed(ids))
        rev[q] = [(d, float(len(order) - i)) for i, d in enumerate(order)]
        mixed = list(ids)
        rng.shuffle(mixed)
        shuf[q] = [(d, float(len(mixed) - i)) for i, d in enumerate(mixed)]
    return rev, shuf


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("controls", help="reversed and shuffled copies of a run's top k")
    c.add_argument("run", help="a TREC run or candidates JSON")
    c.add_argument("--queries", type=int, default=None, help="first N queries of the run (default all)")
    c.add_argument("--top-k", type=int, default=20)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out-prefix", required=True)
    t = sub.add_parser("tau", help="system-order tau over a subset of an agreement.json's systems")
    t.add_argument("agreement")
    t.add_argument("--without", nargs="*", default=[])
    args = p.parse_args()
    if args.cmd == "controls":
        rev, shuf = controls(load_run(args.run), args.queries, args.top_k, args.seed)
        for name, cands in (("reversed", rev), ("shuffled", shuf)):
            path = f"{args.out_prefix}_{name}.trec"
            write_run(cands, path, tag=f"control-{name}")
            print(f"wrote {path} ({len(cands)} queries)")
        return 0
    report = json.loads(Path(args.agreement).read_text())
    systems = report.get("system_order", {}).get("systems")
    if not systems:
        sys.exit(f"{args.agreement}: no system_order (was the judge given --run systems?)")
    unknown = [n for n in args.without if n not in systems]
    if unknown:
        sys.exit(f"{args.agreement}: no system named {unknown[0]!r} (systems: {', '.join(systems)})")
    names = [n for n in systems if n not in args.without]
    if len(names) < 3:
        sys.exit(f"tau over {len(names)} systems: need at least 3")
    tau = kendall_tau_b([systems[n]["human"] for n in names], [systems[n]["judged"] for n in names])
    print(f"Kendall tau over {len(names)} systems ({', '.join(names)}): {tau:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
