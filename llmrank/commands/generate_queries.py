from __future__ import annotations

import json
import sys
from pathlib import Path

from llmrank.errors import LlmrankError

NAME = "generate-queries"
HELP = ("Write training queries for documents sampled from a corpus (InPars / Promptagator) and filter them by "
        "the generator's likelihood and by round trip through BM25; rerunning the command resumes.")


def add_arguments(p) -> None:
    from llmrank.commands.rerank import add_model_arguments
    from llmrank.checks import non_negative_int, positive_int, share

    p.add_argument("corpus", help="a BEIR folder (its corpus only is read) or a corpus .jsonl of {_id, title, text}")
    p.add_argument("-o", "--output", required=True,
                   help="generated records (JSONL, append-only; rerun to resume). Beside it: <stem>.kept.jsonl "
                        "(kept queries, BEIR queries format), <stem>.qrels.tsv (source document as positive), "
                        "<stem>.stats.json")
    add_model_arguments(p)
    p.add_argument("--prompt", default="query_gen", help="prompt name or YAML path (a qlm prompt rendering {{ document }})")
    p.add_argument("--docs", type=positive_int, default=200, help="documents sampled from the corpus")
    p.add_argument("--seed", type=int, default=0, help="seed of the document sample (and of sampling)")
    p.add_argument("--max-new-tokens", type=positive_int, default=32, help="longest query, in tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0: greedy)")
    p.add_argument("--max-doc-tokens", type=positive_int, default=160, help="document tokens shown to the generator")
    p.add_argument("--keep-likelihood", type=share, default=1.0,
                   help="likelihood filter: share of the queries kept, the most likely under the generator (1: off)")
    p.add_argument("--round-trip-k", type=non_negative_int, default=0,
                   help="round-trip filter: keep a query when its source document is in BM25's top k (0: off)")


def run(args) -> int:
    from llmrank.commands.rerank import backend_options
    from llmrank.data.beir import _find, is_beir_dir, load_corpus
    from llmrank.data.io import atomic_write_text
    from llmrank.synth.queries import QueryGenSettings, run_generation, stats_table

    src = Path(args.corpus)
    if is_beir_dir(src):
        corpus_file = _find(src, "corpus")
    elif src.is_file():
        corpus_file = src
    else:
        raise LlmrankError(f"{src}: not a BEIR folder or a corpus .jsonl file")
    out = Path(args.output)
    if out.is_dir():
        raise LlmrankError(f"--output {out} is a folder; give a .jsonl file path")
    if out.resolve() == corpus_file.resolve():
        raise LlmrankError(f"--output {out} is the corpus itself")
    if args.temperature < 0:
        raise LlmrankError(f"--temperature must be >= 0, got {args.temperature}")
    opts = backend_options(args)
    opts.pop("batch_size", None)
    settings = QueryGenSettings(model=args.model, backend=args.backend, backend_options=opts, prompt=args.prompt,
                                docs=args.docs, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                temperature=args.temperature, max_doc_tokens=args.max_doc_tokens,
                                keep_likelihood=args.keep_likelihood, round_trip_k=args.round_trip_k)
    docs = load_corpus(corpus_file)
    kept, stats = run_generation(docs, out, settings, progress=sys.stderr.isatty(), batch_size=args.batch_size)
    stem = out.with_suffix("")
    atomic_write_text(f"{stem}.kept.jsonl", "".join(
        json.dumps({"_id": r["qid"], "text": r["query"], "metadata": {"source_doc": r["doc_id"],
                                                                      "logprob": r["logprob"],
                                                                      "source_rank": r["source_rank"]}},
                   ensure_ascii=False) + "\n" for r in kept))
    atomic_write_text(f"{stem}.qrels.tsv", "query-id\tcorpus-id\tscore\n"
                      + "".join(f"{r['qid']}\t{r['doc_id']}\t1\n" for r in kept))
    atomic_write_text(f"{stem}.stats.json", json.dumps(stats, indent=1))
    print(stats_table(stats))
    print(f"wrote {out} ({stats['documents_sampled']} records), {stem}.kept.jsonl ({len(kept)} queries), "
          f"{stem}.qrels.tsv, {stem}.stats.json", file=sys.stderr)
    return 0
