"""The `llmrank` command end to end: retrieve and evaluate on fixtures, and its one-line user errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llmrank.cli import main
from llmrank.data import read_run

CORPUS = [
    {"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces the risk of heart attack."},
    {"_id": "d2", "title": "Vitamin D", "text": "Vitamin D deficiency is linked to bone loss."},
    {"_id": "d3", "title": "Coffee", "text": "Coffee consumption and sleep quality."},
    {"_id": "d4", "title": "Statins", "text": "Statins lower cholesterol in adults."},
    {"_id": "d5", "title": "Malaria", "text": "Mosquito nets prevent malaria infection."},
    {"_id": "d6", "title": "Exercise", "text": "Exercise improves heart health."},
]
QUERIES = [
    {"_id": "t1", "text": "aspirin and heart attack"},
    {"_id": "t2", "text": "malaria nets"},
    {"_id": "t3", "text": "coffee sleep"},
    {"_id": "tr1", "text": "vitamin d bone"},
]


def _jsonl(path: Path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def beir(tmp_path) -> Path:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    _jsonl(root / "corpus.jsonl", CORPUS)
    _jsonl(root / "queries.jsonl", QUERIES)
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nt1\td1\t2\nt1\td6\t1\nt2\td5\t1\nt3\td3\t1\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\ntr1\td2\t1\n")
    return root


@pytest.fixture
def run_and_qrels(tmp_path):
    run = tmp_path / "r.run"
    run.write_text("q1 Q0 a 1 3.0 x\nq1 Q0 b 2 2.0 x\nq2 Q0 c 1 1.0 x\nq2 Q0 d 2 0.5 x\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 a 1\nq2 0 d 1\nq3 0 e 1\n")
    return run, qrels


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *needles):
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("llmrank ") and ": error: " in lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_retrieve_writes_k_lines_per_query(beir, tmp_path, capsys):
    out_path = tmp_path / "runs" / "bm25.run"
    code, out, err = run_cli(capsys, "retrieve", beir, "--k", 3, "-o", out_path)
    assert code == 0, err
    lines = out_path.read_text().splitlines()
    by_query: dict[str, list[list[str]]] = {}
    for line in lines:
        fields = line.split()
        assert len(fields) == 6 and fields[1] == "Q0" and fields[5] == "llmrank-bm25"
        by_query.setdefault(fields[0], []).append(fields)
    assert set(by_query) == {"t1", "t2", "t3"}  # the test split only
    assert all(len(v) == 3 for v in by_query.values())
    assert [f[3] for f in by_query["t1"]] == ["1", "2", "3"]
    assert by_query["t1"][0][2] == "d1"
    assert by_query["t2"][0][2] == "d5"
    assert "ndcg@10=" in out and "recall@100(rel>=1)=" in out
    assert "wrote" in err and "DEBUG" not in err


def test_retrieve_then_evaluate_json(beir, tmp_path, capsys):
    run_path = tmp_path / "bm25.run"
    assert run_cli(capsys, "retrieve", beir, "--k", 5, "-o", run_path)[0] == 0
    code, out, err = run_cli(capsys, "evaluate", run_path, "--qrels", beir / "qrels" / "test.tsv",
                             "--metrics", "NDCG@10", "mrr@10", "recall@5", "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert list(scores) == ["NDCG@10", "mrr@10", "recall@5", "rel_threshold"]
    assert scores.pop("rel_threshold") == 1  # binary qrels: grade >= 1
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in scores.values())
    assert scores["mrr@10"] == 1.0  # each query's judged doc shares its rare terms and ranks first
    assert read_run(run_path).docids("t1")[0] == "d1"


def test_evaluate_values_and_text_output(run_and_qrels, capsys):
    run, qrels = run_and_qrels
    code, out, _ = run_cli(capsys, "evaluate", run, "--qrels", qrels, "--metrics", "mrr@10", "recall@1", "--json")
    assert code == 0
    assert json.loads(out) == pytest.approx({"mrr@10": (1 + 1 / 2) / 2, "recall@1": 1 / 2, "rel_threshold": 1})
    code, out, _ = run_cli(capsys, "evaluate", run, "--qrels", qrels, "--metrics", "mrr@10")
    assert code == 0
    assert out.split() == ["mrr@10(rel>=1)", "0.7500"]


def test_evaluate_rel_threshold(tmp_path, capsys):
    run = tmp_path / "r.run"
    run.write_text("q1 Q0 a 1 3.0 x\nq1 Q0 b 2 2.0 x\n")
    qrels = tmp_path / "q.txt"
    qrels.write_text("q1 0 a 1\nq1 0 b 2\n")
    args = ["evaluate", run, "--qrels", qrels, "--metrics", "mrr@10", "--json"]
    assert json.loads(run_cli(capsys, *args)[1]) == {"mrr@10": 1.0, "rel_threshold": 1}
    assert json.loads(run_cli(capsys, *args, "--rel-threshold", 2)[1]) == {"mrr@10": 0.5, "rel_threshold": 2}


# --------------------------------------------------------------------------- user errors


def test_error_missing_file(tmp_path, run_and_qrels, capsys):
    _, qrels = run_and_qrels
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "nope.run", "--qrels", qrels)
    assert_user_error(code, err, "nope.run", "not found")
    code, _, err = run_cli(capsys, "retrieve", tmp_path / "nothing", "-o", tmp_path / "o.run")
    assert_user_error(code, err, "nothing", "no such file")


def test_error_missing_qrels_file(run_and_qrels, tmp_path, capsys):
    run, _ = run_and_qrels
    code, _, err = run_cli(capsys, "evaluate", run, "--qrels", tmp_path / "missing-qrels.txt")
    assert_user_error(code, err, "missing-qrels.txt")


def test_error_beir_split_without_qrels(beir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "retrieve", beir, "--split", "dev", "-o", tmp_path / "o.run")
    assert_user_error(code, err, "'dev'", "splits found", "test", "train")
    assert not (tmp_path / "o.run").exists()


def test_error_run_names_unknown_queries(run_and_qrels, tmp_path, capsys):
    run, _ = run_and_qrels
    qrels = tmp_path / "only_q1.txt"
    qrels.write_text("q1 0 a 1\n")
    code, _, err = run_cli(capsys, "evaluate", run, "--qrels", qrels)
    assert_user_error(code, err, "q2")


def test_error_malformed_jsonl_line(tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"query": "q", "docs": ["a", "b"]}\n{"query": "r", "docs": ["c"\n')
    code, _, err = run_cli(capsys, "retrieve", path, "-o", tmp_path / "o.run")
    assert_user_error(code, err, f"{path}:2", "malformed JSON")


def test_error_unknown_metric(run_and_qrels, capsys):
    run, qrels = run_and_qrels
    code, _, err = run_cli(capsys, "evaluate", run, "--qrels", qrels, "--metrics", "ndcg@10", "bleu")
    assert_user_error(code, err, "unknown metric 'bleu'", "ndcg@k")


def test_error_unrecognised_dataset(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("just text\n")
    code, _, err = run_cli(capsys, "retrieve", path, "-o", tmp_path / "o.run")
    assert_user_error(code, err, "not a dataset llmrank recognises", "BEIR directory", "candidates JSON")


def test_error_malformed_run_line(tmp_path, run_and_qrels, capsys):
    _, qrels = run_and_qrels
    bad = tmp_path / "bad.run"
    bad.write_text("q1 Q0 a 1 3.0 x\nq1 a 2\n")
    code, _, err = run_cli(capsys, "evaluate", bad, "--qrels", qrels)
    assert_user_error(code, err, f"{bad}:2")


def test_no_command_prints_help(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 2 and "retrieve" in out and "evaluate" in out


# --------------------------------------------------------------------------- the installed console script


def test_console_script_subprocess(beir, tmp_path):
    exe = shutil.which("llmrank")
    if exe is None:
        pytest.skip("the llmrank console script is not installed (pip install -e .)")
    env = dict(os.environ, LLMRANK_CACHE=str(tmp_path / "cache"))
    run_path = tmp_path / "sub.run"
    p = subprocess.run([exe, "retrieve", str(beir), "--k", "2", "-o", str(run_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "DEBUG" not in p.stderr  # bm25s pins its logger at DEBUG; the CLI must not print it
    assert len(run_path.read_text().splitlines()) == 3 * 2
    p = subprocess.run([exe, "evaluate", str(run_path), "--qrels", str(beir / "qrels" / "test.tsv"),
                        "--metrics", "ndcg@10", "mrr@10", "--json"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    assert set(json.loads(p.stdout)) == {"ndcg@10", "mrr@10", "rel_threshold"}
    p = subprocess.run([exe, "evaluate", str(run_path), "--qrels", str(tmp_path / "absent.txt")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "absent.txt" in p.stderr
