from __future__ import annotations

import json
import sys
from pathlib import Path

from llmrank.errors import LlmrankError

NAME = "judge"
HELP = ("Judge (query, document) pairs with an LLM on TREC's 0-3 scale and write TREC qrels (UMBRELA-style); "
        "where the dataset has human qrels, report Cohen's kappa and the system-order Kendall tau against them. "
        "Rerunning the command resumes.")


def add_arguments(p) -> None:
    from llmrank.checks import positive_int
    from llmrank.commands.rerank import add_data_arguments, add_model_arguments

    add_data_arguments(p)
    add_model_arguments(p)
    p.add_argument("-o", "--output", required=True,
                   help="judged qrels (TREC: qid 0 docid grade). Beside it: <output>.records.jsonl (the judge's "
                        "records, append-only; rerun to resume) and <stem>.agreement.json")
    p.add_argument("--prompt", default="umbrela", help="a pointwise prompt answering 0, 1, 2 or 3 (default umbrela)")
    p.add_argument("--samples", type=positive_int, default=1, help="grades sampled per pair (default 1)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature of the grades (0: the most likely grade, then --samples is 1)")
    p.add_argument("--aggregate", choices=("majority", "mean"), default="majority",
                   help="how a pair's sampled grades become one: most frequent (ties: lower) or rounded mean")
    p.add_argument("--max-doc-tokens", type=positive_int, default=256, help="document tokens shown to the judge")
    p.add_argument("--seed", type=int, default=0, help="seed of the grade sampling")
    p.add_argument("--judged-threshold", type=int, default=2, choices=(1, 2, 3),
                   help="judged grade counted relevant for binary kappa and the judged-qrels metrics (default 2)")
    p.add_argument("--run", dest="runs", action="append", default=[], metavar="NAME=PATH",
                   help="a system's TREC run for the system-order tau (repeatable; 3 or more, 5+ recommended)")


def _parse_runs(specs: list[str]) -> dict[str, str]:
    out = {}
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise LlmrankError(f"--run expects NAME=PATH, got {s!r}")
        if name in out:
            raise LlmrankError(f"--run: two systems are named {name!r}")
        if not Path(path).is_file():
            raise LlmrankError(f"--run {name}: {path} not found")
        out[name] = path
    return out


def run(args) -> int:
    from llmrank.backends import make_backend
    from llmrank.commands.rerank import backend_options
    from llmrank.data import load_dataset, load_run
    from llmrank.data.bm25 import ensure_candidates
    from llmrank.data.io import atomic_write_text
    from llmrank.eval.judge_agreement import qrels_kappa, system_order_tau
    from llmrank.eval.metrics import default_rel_threshold
    from llmrank.synth.judge import Judge, judged_qrels, record_key, run_judge, write_qrels

    out = Path(args.output)
    if out.is_dir():
        raise LlmrankError(f"--output {out} is a folder; give a qrels file path")
    if args.temperature < 0:
        raise LlmrankError(f"--temperature must be >= 0, got {args.temperature}")
    if args.temperature == 0 and args.samples > 1:
        raise LlmrankError("--samples > 1 needs --temperature > 0 (greedy grades would all be the same)")
    runs = {n: load_run(p) for n, p in _parse_runs(args.runs).items()}
    if runs and len(runs) < 3:
        raise LlmrankError(f"the system-order tau needs at least 3 --run systems, got {len(runs)}")
    data = load_dataset(args.dataset, args.split).first_queries(args.queries)
    cands = ensure_candidates(data, max(args.first_stage_k, args.top_k)).subset(data.queries).top(args.top_k)
    backend = make_backend(args.backend, args.model, **backend_options(args))
    judge = Judge(backend, args.prompt, samples=args.samples, temperature=args.temperature,
                  aggregate=args.aggregate, max_doc_tokens=args.max_doc_tokens, seed=args.seed)
    records = out.with_name(out.name + ".records.jsonl")
    stats = run_judge(judge, data, cands, args.top_k, records, progress=sys.stderr.isatty())
    keys = {record_key(judge, data.queries[q].text, cands.docids(q)[: args.top_k]) for q in cands.qids()}
    qrels = judged_qrels(records, keys)
    write_qrels(qrels, out)
    report = {"judge": judge.key, "dataset": args.dataset, "split": args.split, "top_k": args.top_k, **stats}
    if data.qrels:
        human_rel = default_rel_threshold(data.qrels)
        report["kappa"] = qrels_kappa(data.qrels, qrels, human_rel, args.judged_threshold)
        k = report["kappa"]
        print(f"Cohen's kappa vs human qrels over {k['pairs']} pairs: graded {k['kappa_graded']:.3f}, binary "
              f"{k['kappa_binary']:.3f} (human rel >= {human_rel}, judged rel >= {args.judged_threshold}; "
              f"relevant: human {k['human_relevant']}, judged {k['judged_relevant']})")
        if runs:
            report["system_order"] = system_order_tau(runs, data.qrels, qrels, "ndcg@10", human_rel,
                                                      args.judged_threshold)
            so = report["system_order"]
            print(f"system order over {len(runs)} systems ({so['queries']} queries, nDCG@10): Kendall tau "
                  f"{so['kendall_tau']:.3f}")
            for name, s in so["systems"].items():
                print(f"  {name:24s} human {s['human']:.4f}  judged {s['judged']:.4f}")
    atomic_write_text(out.with_suffix(".agreement.json") if out.suffix else Path(f"{out}.agreement.json"),
                      json.dumps(report, indent=1))
    print(f"wrote {out} ({sum(len(v) for v in qrels.values())} judged pairs, {len(qrels)} queries)", file=sys.stderr)
    return 0
