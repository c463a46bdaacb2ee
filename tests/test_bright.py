"""BRIGHT as published, on a hand-written task in the public schema (tests/fixtures/bright/biology):
excluded ids never reach a ranking, long documents are judged by ``gold_ids_long``, LLM reasoning queries
come from their ``*_reason`` configuration and rows say which query text they used; the annotators'
``reasoning`` field only under its honest name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmrank.data import load_dataset
from llmrank.data.bm25 import retrieve
from llmrank.errors import LlmrankError
from llmrank.recipe import EvalDataset, load_suite

TASK = Path(__file__).parent / "fixtures" / "bright" / "biology"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path / "cache"))


def test_excluded_ids_are_dropped_from_the_first_stage_short_and_long():
    short = load_dataset(TASK, "biology")
    assert short.excluded == {"0": set(), "1": {"plant_gravity/Gravitropism_3.txt", "plant_gravity/Gravitropism.txt"}}
    run = retrieve(short, k=10)
    # the excluded page is the best BM25 match of query 1 (it repeats the question) and must not appear
    assert "plant_gravity/Gravitropism_3.txt" not in run.docids("1")
    assert len(run.docids("1")) == len(short.docs) - 1 and len(run.docids("0")) == len(short.docs)
    long = load_dataset(TASK, "biology", documents="long")
    assert "plant_gravity/Gravitropism.txt" not in retrieve(long, k=10).docids("1")


def test_long_documents_are_judged_by_gold_ids_long():
    short = load_dataset(TASK, "biology")
    long = load_dataset(TASK, "biology", documents="long")
    assert short.qrels["0"] == {"moth_light/Phototaxis_0.txt": 1, "moth_light/Transverse_orientation_2.txt": 1}
    assert long.qrels == {"0": {"moth_light/Phototaxis.txt": 1, "moth_light/Transverse_orientation.txt": 1},
                          "1": {"plant_gravity/Statolith.txt": 1}}
    assert set(long.docs) == {"moth_light/Phototaxis.txt", "moth_light/Transverse_orientation.txt",
                              "plant_gravity/Statolith.txt", "plant_gravity/Gravitropism.txt", "misc/Porch.txt"}
    assert long.name == "biology-long" and short.name == "biology"
    assert EvalDataset(dataset=str(TASK), split="biology", documents="long").label() == "biology-biology-long"


def test_reasoning_queries_come_from_their_configuration_and_are_labelled(tmp_path):
    plain = load_dataset(TASK, "biology")
    gpt4 = load_dataset(TASK, "biology", query_field="gpt4_reason")
    assert gpt4.queries["1"].text.startswith("How do plants sense which way is up?\nReasoning: Plants sense gravity")
    assert gpt4.queries["1"].meta["original_query"] == plain.queries["1"].text
    assert gpt4.qrels == plain.qrels and gpt4.excluded == plain.excluded
    assert gpt4.name == "biology-gpt4_reason" and "gpt4_reason" in gpt4.query_source and "LLM" in gpt4.query_source
    assert plain.query_source == ""
    human = load_dataset(TASK, "biology", query_field="human-reasoning")
    assert human.queries["0"].text.startswith("Annotator:") and "human-written" in human.query_source
    assert human.name == "biology-human-reasoning"
    entry = EvalDataset(dataset=str(TASK), split="biology", query_field="gpt4_reason")
    assert entry.label().endswith("-gpt4_reason")
    # the old name is refused with the reason; a configuration not on disk is named
    with pytest.raises(LlmrankError, match="written by the annotators.*human-reasoning"):
        load_dataset(TASK, "biology", query_field="reasoning")
    with pytest.raises(ValueError, match="human-reasoning"):
        EvalDataset(dataset=str(TASK), split="biology", query_field="reasoning")
    bare = tmp_path / "biology"
    shutil.copytree(TASK, bare)
    (bare / "gpt4_reason.jsonl").unlink()
    with pytest.raises(LlmrankError, match="gpt4_reason configuration.*not here"):
        load_dataset(bare, "biology", query_field="gpt4_reason")
    (bare / "long_documents.jsonl").unlink()
    with pytest.raises(LlmrankError, match="long_documents"):
        load_dataset(bare, "biology", documents="long")


def test_a_reasoning_file_missing_a_query_is_an_error(tmp_path):
    bare = tmp_path / "biology"
    shutil.copytree(TASK, bare)
    lines = (bare / "gpt4_reason.jsonl").read_text().splitlines()
    (bare / "gpt4_reason.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(LlmrankError, match="no reasoning query for 1 example"):
        load_dataset(bare, "biology", query_field="gpt4_reason")


def test_suite_names_each_rows_query_source():
    _, plain = load_suite("bright")
    _, gpt4 = load_suite("bright:gpt4-reason")
    _, human = load_suite("bright:human-reasoning")
    _, long = load_suite("bright:long")
    assert [d.split for d in plain] == [d.split for d in gpt4] == [d.split for d in human] == [d.split for d in long]
    assert all(d.query_field == "gpt4_reason" and d.name == f"{d.split}-gpt4_reason" for d in gpt4)
    assert all(d.query_field == "human-reasoning" and d.name == f"{d.split}-human-reasoning" for d in human)
    assert all(d.documents == "long" and d.name == f"{d.split}-long" for d in long)
    with pytest.raises(LlmrankError, match="no variant 'reasoning'"):
        load_suite("bright:reasoning")


def test_eval_rows_drop_excluded_ids_judge_long_documents_and_name_their_query_source(tmp_path, capsys):
    """The same three rules through ``llmrank run``'s eval stage: every row of the LLM-reasoning table and the
    long-document table leaves the excluded pages out, the long table is judged by ``gold_ids_long`` (the
    oracle, which ranks by the qrels, is perfect there; with the passage ids as qrels it would score 0), and
    the reasoning table says in its row files, report and terminal which query text it ranked."""
    import json

    from llmrank.cli import main
    from llmrank.data import load_run

    recipe = tmp_path / "b.yaml"
    recipe.write_text(f"name: b\ndata: {{dataset: {TASK}, train_split: biology, k: 6}}\nteacher: {{method: oracle}}\n"
                      "eval:\n  datasets:\n"
                      f"    - {{dataset: {TASK}, split: biology, query_field: gpt4_reason}}\n"
                      f"    - {{dataset: {TASK}, split: biology, documents: long}}\n"
                      "  baselines: [first_stage, teacher]\n  top_k: 5\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "runs")]) == 0
    ev = tmp_path / "runs" / "b" / "eval"
    gpt4, long = "biology-biology-gpt4_reason", "biology-biology-long"
    assert list(json.loads((ev / "results.json").read_text())) == [gpt4, long]
    source = "LLM reasoning-expanded query (gpt4_reason configuration)"
    for row in ("first_stage", "teacher"):
        rec = json.loads((ev / gpt4 / f"{row}.json").read_text())
        assert rec["query_field"] == "gpt4_reason" and rec["query_source"] == source
        assert json.loads((ev / long / f"{row}.json").read_text())["query_source"] == ""
        assert "plant_gravity/Gravitropism_3.txt" not in load_run(ev / gpt4 / f"{row}.trec").docids("1")
        assert "plant_gravity/Gravitropism.txt" not in load_run(ev / long / f"{row}.trec").docids("1")
    teacher = json.loads((ev / long / "teacher.json").read_text())
    assert teacher["metrics"]["ndcg@10"] == pytest.approx(1.0)
    run = load_run(ev / long / "teacher.trec")
    assert set(run.docids("0")[:2]) == {"moth_light/Phototaxis.txt", "moth_light/Transverse_orientation.txt"}
    assert run.docids("1")[0] == "plant_gravity/Statolith.txt"
    report = (tmp_path / "runs" / "b" / "report.md").read_text()
    assert report.count(f"Queries: {source}.") == 1
    assert report.index(f"## {gpt4}") < report.index(f"Queries: {source}.") < report.index(f"## {long}")
    assert f"{gpt4} (2 queries); queries: {source}" in capsys.readouterr().out
