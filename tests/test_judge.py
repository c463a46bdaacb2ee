"""The LLM judge (llmrank.synth.judge) and its agreement measures (llmrank.eval.judge_agreement): κ and τ
against hand-computed values, grade sampling and aggregation, resumability under SIGKILL, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.eval.judge_agreement import cohen_kappa, kendall_tau_b, qrels_kappa, system_order_tau
from llmrank.synth.judge import aggregate_grades, grade_distribution, judged_qrels, sample_grades

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def test_cohen_kappa_by_hand():
    # p_o = 5/8; marginals a: 2,2,2,2  b: 2,3,1,2 -> p_e = (4+6+2+4)/64 = 1/4; kappa = (5/8-1/4)/(3/4) = 1/2
    assert cohen_kappa([0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 1, 1, 2, 3, 3, 0]) == pytest.approx(0.5)
    # p_o = 4/5; p_e = (3*2 + 2*3)/25 = 12/25; kappa = 0.32/0.52
    assert cohen_kappa([1, 1, 0, 0, 1], [1, 0, 0, 0, 1]) == pytest.approx(0.32 / 0.52)
    assert cohen_kappa([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)
    assert cohen_kappa([1, 0], [0, 1]) == pytest.approx(-1.0)
    assert np.isnan(cohen_kappa([1, 1], [1, 1]))  # chance agreement 1: undefined
    with pytest.raises(LlmrankError):
        cohen_kappa([1], [1, 0])


def test_kendall_tau_b_by_hand_and_against_scipy():
    from scipy.stats import kendalltau

    # 8 concordant, 2 discordant pairs -> 0.6
    assert kendall_tau_b([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]) == pytest.approx(0.6)
    # ties: 4 concordant, one tie in x only, one in y only -> 4 / sqrt(5 * 5) = 0.8
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.integers(0, 4, 9).tolist(), rng.integers(0, 4, 9).tolist()
        assert kendall_tau_b(x, y) == pytest.approx(kendalltau(x, y).statistic)


def test_qrels_kappa_by_hand():
    human = {"q1": {"a": 1, "b": 0}, "q2": {"c": 1}}
    judged = {"q1": {"a": 3, "b": 2, "d": 0}, "q2": {"c": 1, "e": 0}, "q9": {"z": 3}}
    k = qrels_kappa(human, judged, human_threshold=1, judged_threshold=2)
    # pairs (human, judged): a (1,3) b (0,2) d (0,0) c (1,1) e (0,0); q9 is not in the human qrels
    assert k["pairs"] == 5
    # graded: agree on d, c, e -> p_o 3/5; human 0:3 1:2, judged 0:2 1:1 2:1 3:1 -> p_e = (3*2 + 2*1)/25 = 8/25
    assert k["kappa_graded"] == pytest.approx((3 / 5 - 8 / 25) / (1 - 8 / 25))
    # binary: human 1,0,0,1,0  judged 1,1,0,0,0 -> p_o 3/5; p_e = (2*2 + 3*3)/25 = 13/25
    assert k["kappa_binary"] == pytest.approx((3 / 5 - 13 / 25) / (1 - 13 / 25))
    assert k["confusion"] == {"00": 2, "01": 1, "10": 1, "11": 1}
    assert (k["human_relevant"], k["judged_relevant"]) == (2, 2)


def test_system_order_tau_by_hand():
    # three queries, one relevant doc each under the humans (x1, x2, x3) and another under the judge (y1, …)
    human = {f"q{i}": {f"x{i}": 1} for i in range(3)}
    judged = {f"q{i}": {f"y{i}": 3, f"x{i}": 0} for i in range(3)}

    def run(first: str) -> Candidates:
        other = "y" if first == "x" else "x"
        return Candidates({f"q{i}": [(f"{first}{i}", 2.0), (f"{other}{i}", 1.0)] for i in range(3)})

    mixed = Candidates({"q0": [("x0", 2.0), ("y0", 1.0)], "q1": [("y1", 2.0), ("x1", 1.0)],
                        "q2": [("y2", 2.0), ("x2", 1.0)]})
    out = system_order_tau({"humanlike": run("x"), "judgelike": run("y"), "mixed": mixed}, human, judged,
                           "ndcg@10", 1, 2)
    s = out["systems"]
    assert s["humanlike"]["human"] == pytest.approx(1.0) and s["judgelike"]["judged"] == pytest.approx(1.0)
    # human order: humanlike > mixed > judgelike; judged order: the reverse -> tau = -1
    assert s["humanlike"]["human"] > s["mixed"]["human"] > s["judgelike"]["human"]
    assert out["kendall_tau"] == pytest.approx(-1.0)
    assert system_order_tau({"a": run("x"), "b": run("x"), "c": mixed}, human, human, "ndcg@10")["kendall_tau"] \
        == pytest.approx(1.0)
    with pytest.raises(LlmrankError, match="at least 3"):
        system_order_tau({"a": run("x"), "b": mixed}, human, judged)


def test_aggregate_and_sampling():
    assert aggregate_grades([3, 1, 1, 3, 2], "majority") == 1  # tie between 1 and 3 goes to the lower
    assert aggregate_grades([2, 2, 3], "majority") == 2
    assert aggregate_grades([1, 2], "mean") == 2  # 1.5 rounds half up
    assert aggregate_grades([0, 1, 1], "mean") == 1
    with pytest.raises(LlmrankError):
        aggregate_grades([1], "median")
    lp = np.log(np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
    p = grade_distribution(lp, 1.0)
    assert p[0] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    sharp = grade_distribution(lp, 0.5)  # p^2 renormalised
    assert sharp[0] == pytest.approx(np.array([1, 4, 9, 16]) / 30)
    assert sample_grades(p[0], 3, 0.0, "x") == [3, 3, 3]
    draws = sample_grades(p[0], 2000, 1.0, "q|d")
    assert draws == sample_grades(p[0], 2000, 1.0, "q|d")  # seeded per pair
    freq = np.bincount(draws, minlength=4) / 2000
    assert freq == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=0.04)


def make_data(n_q: int = 6, n_d: int = 4) -> RankingData:
    queries = {f"q{i}": Query(f"q{i}", f"question {i} about cells") for i in range(n_q)}
    docs = {f"d{i}-{j}": Doc(f"d{i}-{j}", f"passage {j} on topic {i}") for i in range(n_q) for j in range(n_d)}
    cands = Candidates({f"q{i}": [(f"d{i}-{j}", float(n_d - j)) for j in range(n_d)] for i in range(n_q)})
    qrels = {f"q{i}": {f"d{i}-{i % n_d}": 1} for i in range(n_q)}
    return RankingData("toy", queries, docs, qrels, cands, source="toy")


def test_judge_writes_graded_qrels_and_resumes(tiny_model_dir, tmp_path):
    from llmrank.backends.hf import HFBackend
    from llmrank.synth.judge import Judge, run_judge

    data = make_data()
    backend = HFBackend(str(tiny_model_dir))
    judge = Judge(backend, samples=5, temperature=1.0, aggregate="mean")
    path = tmp_path / "j.jsonl"
    first = run_judge(judge, data, data.candidates.subset(["q0", "q1"]), 3, path)
    assert (first["judged"], first["pairs"]) == (2, 6)
    again = run_judge(judge, data, data.candidates, 3, path)
    assert (again["judged"], again["skipped"]) == (4, 2)
    qrels = judged_qrels(path)
    assert sorted(qrels) == sorted(data.queries) and all(len(v) == 3 for v in qrels.values())
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    for r in recs:
        for s, g, p in zip(r["samples"], r["grades"], r["probs"]):
            assert len(s) == 5 and g == aggregate_grades(s, "mean") and sum(p) == pytest.approx(1, abs=1e-4)
    with pytest.raises(LlmrankError, match="answers with the grades"):
        Judge(backend, prompt="yes_no")


KILL_SCRIPT = """
import os, sys, time
sys.path.insert(0, {tests!r})
from test_judge import make_data
from llmrank.backends.hf import HFBackend
from llmrank.synth.judge import Judge, run_judge
path, log = sys.argv[1], sys.argv[2]
data = make_data(12, 4)
backend = HFBackend({model!r})
plain = backend.label_logprobs
def counted(prompts, labels, variants=True):
    out = plain(prompts, labels, variants)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, b"x\\n")
    os.close(fd)
    time.sleep(0.2)  # a slow model: the kill lands mid-run
    return out
backend.label_logprobs = counted
print("ready", flush=True)
run_judge(Judge(backend), data, data.candidates, 4, path)
print("finished", flush=True)
"""


def test_sigkill_during_judging_loses_at_most_the_query_in_flight(tiny_model_dir, tmp_path):
    script = tmp_path / "judge.py"
    script.write_text(KILL_SCRIPT.format(tests=str(HERE), model=str(tiny_model_dir)))
    path, log = tmp_path / "killed.jsonl", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    kills, partial = 0, 0
    for i in range(3):
        before = len(path.read_text().splitlines()) if path.exists() else 0
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(log)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        deadline = time.time() + 60
        while time.time() < deadline and (len(path.read_text().splitlines()) if path.exists() else 0) <= before:
            time.sleep(0.01)
        time.sleep(0.05 * i)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        kills += proc.returncode == -signal.SIGKILL
        partial += 0 < len(judged_qrels(path)) < 12
    assert kills >= 2 and partial >= 1, (kills, partial)
    final = subprocess.run([sys.executable, str(script), str(path), str(log)], capture_output=True, text=True,
                           env=env, timeout=300)
    assert final.returncode == 0 and "finished" in final.stdout, final.stderr
    assert path.read_bytes().endswith(b"\n")
    assert sorted(judged_qrels(path)) == sorted(f"q{i}" for i in range(12))
    assert len(log.read_text().split()) <= 12 + kills  # one scoring call per query, one lost per kill at most


def test_judge_cli_reports_kappa_and_tau(tiny_model_dir, tmp_path, capsys):
    from llmrank.cli import main
    from llmrank.data import write_run

    d = tmp_path / "beir"
    (d / "qrels").mkdir(parents=True)
    data = make_data(5, 4)
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": x.docid, "text": x.text}) + "\n"
                                            for x in data.docs.values()))
    (d / "queries.jsonl").write_text("".join(json.dumps({"_id": q.qid, "text": q.text}) + "\n"
                                             for q in data.queries.values()))
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{doc}\t{g}\n" for q, docs in data.qrels.items() for doc, g in docs.items()))
    runs = []
    for name, order in (("a", 1), ("b", -1), ("c", 0)):
        c = Candidates({q: sorted(items, key=lambda t: (order * t[1], t[0]))
                        for q, items in data.candidates.items()})
        write_run(c, tmp_path / f"{name}.trec", tag=name)
        runs += ["--run", f"{name}={tmp_path / f'{name}.trec'}"]
    out = tmp_path / "judged.qrels"
    rc = main(["judge", str(d), "-o", str(out), "--model", str(tiny_model_dir), "--dtype", "float32",
               "--top-k", "4", "--first-stage-k", "4", *runs])
    assert rc == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 20 and all(len(x.split()) == 4 and x.split()[3] in "0123" for x in lines)
    rep = json.loads((tmp_path / "judged.agreement.json").read_text())
    assert rep["kappa"]["pairs"] == 20 and set(rep["system_order"]["systems"]) == {"a", "b", "c"}
    assert "Kendall tau" in capsys.readouterr().out
    assert main(["judge", str(d), "-o", str(out), "--samples", "3"]) == 2  # samples > 1 needs a temperature
