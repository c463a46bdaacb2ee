"""Reference figures on the real data under ``$LLMRANK_DATA`` (default ``<repo>/../shared/data``).

Each test skips, saying why, where its data is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmrank.cli import main
from llmrank.data import load_dataset, load_run, read_qrels
from llmrank.data.bm25 import retrieve
from llmrank.errors import LlmrankError
from llmrank.eval.metrics import evaluate

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLMRANK_DATA") or REPO.parent / "shared" / "data")


def need(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found: {path} (set LLMRANK_DATA to the shared data directory)")
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path_factory.getbasetemp() / "llmrank-cache"))


@pytest.mark.parametrize("run_name", ["bm25_top100.json", "bm25_top100.run"])
def test_trec_dl19_bm25_ndcg10(run_name, capsys):
    run = need("trec-dl19", run_name)
    qrels = need("trec-dl19", "qrels.txt")
    code = main(["evaluate", str(run), "--qrels", str(qrels), "--metrics", "ndcg@10", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    scores = json.loads(out)
    assert list(scores) == ["ndcg@10", "rel_threshold"]
    assert scores["rel_threshold"] == 2  # TREC DL's graded passage judgements: grades 2 and 3 are relevant
    assert scores["ndcg@10"] == pytest.approx(0.5058, abs=0.0005)


def test_trec_dl19_json_and_run_agree():
    root = need("trec-dl19")
    data = load_dataset(root / "bm25_top100.json")
    assert len(data.queries) == 43
    assert data.qrels == read_qrels(root / "qrels.txt")  # the sibling qrels.txt is picked up
    assert all(len(v) == 100 for _, v in data.candidates.items())
    run = load_run(root / "bm25_top100.run")
    for qid in data.candidates:
        assert data.candidates.docids(qid) == run.docids(qid), qid


def test_scifact_bm25():
    root = need("scifact")
    data = load_dataset(root, split="test")
    assert len(data.queries) == 300
    run = retrieve(data, k=100)
    assert len(run) == 300 and all(len(v) == 100 for _, v in run.items())
    scores = evaluate(run, data.qrels, ["ndcg@10", "recall@100"])
    assert 0.66 <= scores["ndcg@10"] <= 0.70
    assert scores["recall@100"] > 0.85


def test_scifact_train_split_is_disjoint_from_test():
    root = need("scifact")
    test = load_dataset(root, split="test")
    train = load_dataset(root, split="train")
    assert len(train.queries) == 809
    assert not set(train.queries) & set(test.queries)


def test_bright_biology(tmp_path, capsys):
    root = need("bright", "biology")
    data = load_dataset(root, split="biology")
    assert data.kind == "bright"
    assert len(data.queries) == 103
    assert data.qrels == read_qrels(root / "qrels.tsv")
    assert data.docs == {}
    reasoning = load_dataset(root, split="biology", query_field="human-reasoning")
    assert reasoning.queries["0"].text == data.queries["0"].meta["reasoning"] != data.queries["0"].text

    with pytest.raises(LlmrankError, match="needs documents"):
        retrieve(data)
    code = main(["retrieve", str(root), "--split", "biology", "-o", str(tmp_path / "b.run")])
    _, err = capsys.readouterr()
    assert code == 2
    assert "documents" in err and "Traceback" not in err
    assert not (tmp_path / "b.run").exists()


def test_bright_excluded_ids_loaded():
    root = need("bright", "leetcode")
    data = load_dataset(root)
    assert len(data.queries) == 142
    assert any(data.excluded.values())
    assert all("N/A" not in v for v in data.excluded.values())
