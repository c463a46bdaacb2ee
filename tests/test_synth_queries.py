"""Queries generated from a corpus (llmrank.synth.queries): sampling, cleaning, the likelihood score, both
filters, resumability under SIGKILL, the recipe's generate stage and the ``generate-queries`` command.

The model is the tiny random Llama with the SmolLM2 tokenizer (its queries are gibberish, which the
filters and the bookkeeping do not mind); the likelihood is checked against a plain forward pass.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmrank.data.types import Doc
from llmrank.errors import LlmrankError
from llmrank.synth.queries import (
    QueryGenSettings,
    clean_query,
    continuation_logprobs,
    filter_queries,
    generate_queries,
    rank_histogram,
    run_generation,
    sample_docs,
)
from llmrank.synth.records import RecordLog, read_records

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

WORDS = ("protein", "mouse", "vaccine", "neuron", "tumour", "insulin", "virus", "enzyme", "liver", "gene",
         "cortex", "cell", "blood", "heart", "bone", "skin", "lung", "kidney", "muscle", "brain")


def corpus(n: int = 20) -> dict[str, Doc]:
    """n documents; document i is about WORDS[i] (its word repeated) so BM25 finds it from that word."""
    return {f"d{i}": Doc(f"d{i}", f"{WORDS[i % len(WORDS)]} {WORDS[i % len(WORDS)]} study number {i} of the "
                                  f"{WORDS[(i + 1) % len(WORDS)]}", f"title {i}") for i in range(n)}


def test_sample_docs_is_seeded_and_a_larger_draw_extends_a_smaller():
    docs = corpus(20)
    a, b = sample_docs(docs, 5, seed=3), sample_docs(docs, 5, seed=3)
    assert a == b and len(set(a)) == 5
    assert sample_docs(docs, 8, seed=3)[:5] == a
    assert sample_docs(docs, 5, seed=4) != a
    assert sorted(sample_docs(docs, 100, seed=0)) == sorted(docs)  # capped at the corpus
    with pytest.raises(LlmrankError, match="at least 1"):
        sample_docs(docs, 0, seed=0)


@pytest.mark.parametrize("raw, expected", [
    ("What causes insulin resistance?", "What causes insulin resistance?"),
    ("  \nQuery: \"does the vaccine work\"\nmore text", "does the vaccine work"),
    ("Question - role of the liver", "role of the liver"),
    ("'gene expression'", "gene expression"),
    ("", ""),
])
def test_clean_query(raw, expected):
    assert clean_query(raw) == expected


def test_continuation_logprobs_equal_a_plain_forward_pass(tiny_model_dir):
    import torch

    from llmrank.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), batch_size=2)
    tok, lm = backend.tokenizer, backend.lm
    prompts = ["Passage: the mouse liver\nWrite a query.", "Passage: a longer passage about the heart and lung\nQ:"]
    conts = ["what is a liver", "heart"]
    got = continuation_logprobs(backend, prompts, conts)
    for p, c, g in zip(prompts, conts, got):
        p_ids, c_ids = tok.encode(p, add_special_tokens=False), tok.encode(c, add_special_tokens=False)
        with torch.no_grad():
            logits = lm(input_ids=torch.tensor([p_ids + c_ids])).logits[0].float()
        lp = torch.log_softmax(logits, -1)
        want = sum(float(lp[len(p_ids) - 1 + j, t]) for j, t in enumerate(c_ids)) / len(c_ids)
        assert g == pytest.approx(want, abs=1e-4)


def _rec(doc: str, query: str, lp: float | None) -> dict:
    return {"key": f"k-{doc}", "qid": f"gen-{doc}", "doc_id": doc, "query": query, "logprob": lp}


def test_filters_by_hand():
    docs = corpus(20)
    records = [
        _rec("d0", "protein protein", -1.0),       # rank 1 for its own doc, most likely
        _rec("d1", "mouse mouse study", -2.0),     # rank 1
        _rec("d2", "number", -0.5),                # every doc says "number": d2 is not found near the top
        _rec("d3", "neuron", -3.0),                # rank 1, least likely
        _rec("d4", "", None),                      # empty
        _rec("d5", "Protein protein", -0.1),       # duplicate of d0's query (case-insensitive)
    ]
    s = QueryGenSettings(keep_likelihood=0.5, round_trip_k=1)
    kept, stats = filter_queries(records, docs, s)
    assert (stats["documents_sampled"], stats["queries_written"], stats["empty"], stats["duplicates"],
            stats["valid"]) == (6, 5, 1, 1, 4)
    # likelihood: top 2 of 4 by mean log-prob are d2 (-0.5) and d0 (-1.0)
    assert (stats["likelihood"]["kept"], stats["likelihood"]["dropped"]) == (2, 2)
    assert stats["likelihood"]["threshold_logprob"] == -1.0
    # round trip: d0, d1, d3 come back first for their query, d2 does not
    assert (stats["round_trip"]["kept"], stats["round_trip"]["dropped"]) == (3, 1)
    assert [r["doc_id"] for r in kept] == ["d0"] and kept[0]["source_rank"] == 1
    assert stats["kept"] == 1
    hist = stats["source_rank"]["histogram"]
    assert hist["1"] == 3 and sum(hist.values()) == 4
    # off switches keep everything valid
    kept_all, stats_all = filter_queries(records, docs, QueryGenSettings())
    assert len(kept_all) == 4 and stats_all["likelihood"]["dropped"] == 0 and stats_all["round_trip"]["dropped"] == 0
    # a likelihood filter without log-probs is an error naming the document
    with pytest.raises(LlmrankError, match="document d0"):
        filter_queries([_rec("d0", "protein", None)], docs, s)


def test_rank_histogram_buckets():
    h = rank_histogram([1, 2, 3, 5, 10, 11, 20, 21, 100, None, None], depth=100)
    assert h == {"1": 1, "2-3": 2, "4-5": 1, "6-10": 1, "11-20": 2, "21-50": 1, "51-100": 1, ">100": 2}
    assert rank_histogram([1, 4, None], depth=5) == {"1": 1, "2-3": 0, "4-5": 1, ">5": 1}


def test_generate_resumes_and_filters(tiny_model_dir, tmp_path):
    from llmrank.backends.hf import HFBackend

    docs = corpus(12)
    backend = HFBackend(str(tiny_model_dir))
    # the random model writes only newlines greedily: sample (seeded) for queries with words in them
    s = QueryGenSettings(model=str(tiny_model_dir), docs=6, max_new_tokens=6, keep_likelihood=0.5, temperature=1.0)
    path = tmp_path / "q.jsonl"
    ids = sample_docs(docs, 4, s.seed)
    first = generate_queries(backend, docs, ids, path, s, batch_size=2)
    assert first["written"] == 4 and first["skipped"] == 0
    calls = backend.stats["calls"]
    kept, stats = run_generation(docs, path, s, backend=backend, batch_size=2)
    assert stats["generation"]["skipped"] == 4 and stats["generation"]["written"] == 2  # 6 sampled, 4 done
    recs = read_records(path)
    assert len(recs) == 6 and len({r["key"] for r in recs}) == 6
    assert {r["doc_id"] for r in recs} == set(sample_docs(docs, 6, s.seed))
    for r in recs:
        assert r["qid"] == f"gen-{r['doc_id']}"
        assert (r["logprob"] is None) == (r["query"] == "")
    assert backend.stats["calls"] > calls
    assert sum(1 for r in recs if r["query"]) >= 3
    assert stats["likelihood"]["kept"] == math.ceil(0.5 * stats["valid"])
    # a changed setting is a different key: everything is generated again
    s2 = QueryGenSettings(model=str(tiny_model_dir), docs=6, max_new_tokens=5)
    _, stats2 = run_generation(docs, path, s2, backend=backend, batch_size=3)
    assert stats2["generation"]["written"] == 6


KILL_SCRIPT = """
import os, sys, time
sys.path.insert(0, {tests!r})
from test_synth_queries import corpus
from llmrank.backends.hf import HFBackend
from llmrank.synth.queries import QueryGenSettings, generate_queries, sample_docs
path, log = sys.argv[1], sys.argv[2]
docs = corpus(12)
backend = HFBackend({model!r})
plain = backend.generate
def counted(prompts, params=None):
    out = plain(prompts, params)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, b"x" * len(prompts) + b"\\n")
    os.close(fd)
    time.sleep(0.2)  # a slow model: the kill lands mid-run
    return out
backend.generate = counted
s = QueryGenSettings(model={model!r}, docs=12, max_new_tokens=4)
print("ready", flush=True)
generate_queries(backend, docs, sample_docs(docs, 12, 0), path, s, batch_size=1)
print("finished", flush=True)
"""


def test_sigkill_during_generation_loses_at_most_the_record_in_flight(tiny_model_dir, tmp_path):
    script = tmp_path / "gen.py"
    script.write_text(KILL_SCRIPT.format(tests=str(HERE), model=str(tiny_model_dir)))
    path, log = tmp_path / "killed.jsonl", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = random.Random(7)
    kills, partial = 0, 0
    for _ in range(3):
        before = len(read_records(path)) if path.exists() else 0
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(log)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        # wait for at least one new record (or a moment), then kill mid-work
        deadline = time.time() + 60
        while time.time() < deadline and (len(read_records(path)) if path.exists() else 0) <= before:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        kills += proc.returncode == -signal.SIGKILL
        done = len(read_records(path))
        partial += 0 < done < 12
    assert kills >= 2 and partial >= 1, (kills, partial)
    final = subprocess.run([sys.executable, str(script), str(path), str(log)], capture_output=True, text=True,
                           env=env, timeout=300)
    assert final.returncode == 0 and "finished" in final.stdout, final.stderr
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    recs = [json.loads(x) for x in raw.split(b"\n")[:-1]]
    assert sorted(r["doc_id"] for r in recs) == sorted(sample_docs(corpus(12), 12, 0))  # one per document
    generated = sum(len(line) for line in log.read_text().split())
    assert generated <= 12 + kills  # each kill lost at most the one record in flight


def test_record_log_repairs_a_torn_line_and_refuses_a_second_writer(tmp_path):
    path = tmp_path / "r.jsonl"
    with RecordLog(path) as log:
        log.append({"key": "a", "v": 1})
    with open(path, "ab") as f:
        f.write(b'{"key": "b", "v"')
    assert [r["key"] for r in read_records(path)] == ["a"]
    with RecordLog(path) as log:
        assert "a" in log and "b" not in log and log.repaired_bytes > 0
        with pytest.raises(LlmrankError, match="another process"):
            RecordLog(path)
        log.append({"key": "b", "v": 2})
    assert [r["key"] for r in read_records(path)] == ["a", "b"]
    path.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
    with pytest.raises(LlmrankError, match=":2:"):
        read_records(path)


def test_generate_queries_cli_writes_kept_qrels_and_stats(tiny_model_dir, tmp_path, capsys):
    from llmrank.cli import main

    src = tmp_path / "corpus.jsonl"
    src.write_text("".join(json.dumps({"_id": d.docid, "title": d.title, "text": d.text}) + "\n"
                           for d in corpus(10).values()))
    out = tmp_path / "gen" / "queries.jsonl"
    rc = main(["generate-queries", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--dtype", "float32",
               "--docs", "5", "--max-new-tokens", "6", "--keep-likelihood", "0.6", "--temperature", "1"])
    assert rc == 0
    stats = json.loads((tmp_path / "gen" / "queries.stats.json").read_text())
    kept = [json.loads(x) for x in (tmp_path / "gen" / "queries.kept.jsonl").read_text().splitlines()]
    assert stats["documents_sampled"] == 5 and stats["kept"] == len(kept) >= 1
    qrels = (tmp_path / "gen" / "queries.qrels.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore" and len(qrels) == len(kept) + 1
    for k, line in zip(kept, qrels[1:]):
        assert line == f"{k['_id']}\t{k['metadata']['source_doc']}\t1"
    assert "likelihood filter" in capsys.readouterr().out
    # bad input is refused before any model loads
    assert main(["generate-queries", str(tmp_path / "nope"), "-o", str(out)]) == 2
    with pytest.raises(SystemExit):
        main(["generate-queries", str(src), "-o", str(out), "--keep-likelihood", "1.5"])


def test_recipe_generate_section_is_validated(tmp_path):
    from llmrank.recipe import load_recipe

    base = "name: t\ndata: {dataset: /tmp}\ngenerate: {docs: 10, keep_likelihood: %s}\n"
    p = tmp_path / "r.yaml"
    p.write_text(base % "0.5")
    assert load_recipe(p).generate.keep_likelihood == 0.5
    p.write_text(base % "0")
    with pytest.raises(LlmrankError, match="generate.keep_likelihood"):
        load_recipe(p)
    p.write_text("name: t\ndata: {dataset: /tmp}\ngenerate: {docz: 10}\n")
    with pytest.raises(LlmrankError, match="generate.docz"):
        load_recipe(p)


def test_runner_generate_stage_feeds_training_from_the_corpus_only(tiny_model_dir, tmp_path):
    from llmrank.recipe import load_recipe
    from llmrank.runner import Runner

    ds = tmp_path / "beir"
    (ds / "qrels").mkdir(parents=True)
    (ds / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.docid, "title": d.title, "text": d.text}) + "\n"
                                             for d in corpus(20).values()))
    # a queries file and train qrels that must NOT be read: their ids would show up in the training data
    (ds / "queries.jsonl").write_text(json.dumps({"_id": "real1", "text": "protein"}) + "\n")
    (ds / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nreal1\td0\t1\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: gen\nseed: 1\ndata: {{dataset: {ds}, k: 5}}\n"
                      f"generate: {{model: {tiny_model_dir}, backend_options: {{dtype: float32}}, docs: 6, "
                      f"max_new_tokens: 5, temperature: 1.0, keep_likelihood: 0.5}}\n"
                      "teacher: {method: oracle}\n")
    r = load_recipe(recipe)
    runner = Runner(r, tmp_path / "runs", progress=False)
    assert runner.run(only="generate") == {"generate": "done"}
    out = runner.stage_dir("generate")
    stats = json.loads((out / "stats.json").read_text())
    kept = read_records(out / "kept.jsonl", ("key", "qid", "doc_id", "query"))
    assert stats["documents_sampled"] == 6 and stats["kept"] == len(kept) >= 1
    assert stats["likelihood"]["kept"] == math.ceil(0.5 * stats["valid"])
    data, cands = runner.train_data()
    assert set(data.queries) == {r["qid"] for r in kept} and "real1" not in data.queries
    assert data.qrels == {r["qid"]: {r["doc_id"]: 1} for r in kept}
    assert all(len(cands.docids(q)) == 5 for q in cands.qids())
    # up to date on a rerun; a changed generate section makes every later stage's hash change
    assert Runner(load_recipe(recipe), tmp_path / "runs").run(only="generate") == {"generate": "skipped"}
    other = load_recipe(recipe, ["generate.docs=7"])
    assert Runner(other, tmp_path / "runs").manifest_hash("teach") != runner.manifest_hash("teach")
    plain = load_recipe(recipe, ["generate=null"])
    assert Runner(plain, tmp_path / "runs").manifest_hash("teach") == plain.section_hash("data", "teacher")
    # a run killed after its generate stage (the folder's record still the one written before the first
    # stage: nothing recorded, not complete) resumes: the generate folder is the runner's, not a user's file
    (runner.root / "llmrank_output.json").write_text(json.dumps({"complete": False, "files": {}, "kind": "recipe-run"}))
    assert Runner(load_recipe(recipe), tmp_path / "runs").run(only="generate") == {"generate": "skipped"}
