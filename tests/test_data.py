"""Data loaders, layouts, TREC files and BM25 on small fixtures written into tmp_path."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from llmrank.data import (
    Candidates,
    Doc,
    Query,
    detect_layout,
    load_dataset,
    load_run,
    read_qrels,
    read_run,
    read_topics,
    write_run,
)
from llmrank.data.bm25 import BM25Index, ensure_candidates, retrieve
from llmrank.data.trec import write_candidates_json
from llmrank.errors import LlmrankError

# --------------------------------------------------------------------------- fixture writers


def write_jsonl(path: Path, records: list[dict], gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


BEIR_CORPUS = [
    {"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces the risk of heart attack."},
    {"_id": "d2", "title": "Vitamin D", "text": "Vitamin D deficiency is linked to bone loss."},
    {"_id": "d3", "title": "", "text": "Coffee consumption and sleep quality."},
    {"_id": "d4", "title": "Statins", "text": "Statins lower cholesterol in adults."},
    {"_id": 5, "title": "Malaria", "text": "Mosquito nets prevent malaria infection."},
]
BEIR_QUERIES = [
    {"_id": "t1", "text": "does aspirin prevent heart attack"},
    {"_id": "t2", "text": "malaria prevention with nets"},
    {"_id": "tr1", "text": "vitamin d and bones"},
    {"_id": "tr2", "text": "statins cholesterol"},
    {"_id": "unjudged", "text": "coffee and sleep"},
]


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    root = tmp_path / "toybeir"
    write_jsonl(root / "corpus.jsonl", BEIR_CORPUS)
    write_jsonl(root / "queries.jsonl", BEIR_QUERIES)
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nt1\td1\t2\nt2\t5\t1\nt2\td3\t0\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\ntr1\td2\t1\ntr2\td4\t1\n")
    return root


def bright_example(qid, query, gold, excluded=("N/A",), reasoning=None):
    return {
        "id": qid,
        "query": query,
        "reasoning": reasoning if reasoning is not None else f"reasoning for {qid}",
        "gold_ids": list(gold),
        "gold_ids_long": [g.rsplit("_", 1)[0] + ".txt" for g in gold],
        "excluded_ids": list(excluded),
        "gold_answer": f"answer {qid}",
    }


BRIGHT_EXAMPLES = [
    bright_example("0", "why do moths fly toward lamps", ["moth/phototaxis_0.txt", "moth/phototaxis_1.txt"],
                   reasoning="insects navigate by light sources"),
    bright_example("1", "how do plants sense gravity", ["plant/gravitropism_0.txt"]),
]
BRIGHT_DOCS = [
    {"id": "moth/phototaxis_0.txt", "content": "Phototaxis: moths fly toward lamps at night."},
    {"id": "moth/phototaxis_1.txt", "content": "Moths navigate by the moon."},
    {"id": "plant/gravitropism_0.txt", "content": "Plants sense gravity with statoliths."},
    {"id": "other/noise_0.txt", "content": "Unrelated text about cooking pasta."},
]


def check_bright(data, name=None):
    assert data.kind == "bright"
    assert list(data.queries) == ["0", "1"]
    assert data.queries["0"].text == "why do moths fly toward lamps"
    assert data.qrels == {"0": {"moth/phototaxis_0.txt": 1, "moth/phototaxis_1.txt": 1},
                          "1": {"plant/gravitropism_0.txt": 1}}
    assert data.excluded == {"0": set(), "1": set()}  # "N/A" is no id
    if name:
        assert data.name == name


# --------------------------------------------------------------------------- BEIR


def test_beir_loads_test_split_with_titles(beir_dir):
    data = load_dataset(beir_dir)
    assert detect_layout(beir_dir) == "beir"
    assert data.kind == "beir" and data.name == "toybeir"
    assert set(data.queries) == {"t1", "t2"}  # only the test split's judged queries
    assert data.queries["t1"].text == "does aspirin prevent heart attack"
    assert data.qrels == {"t1": {"d1": 2}, "t2": {"5": 1, "d3": 0}}
    assert len(data.docs) == 5 and "5" in data.docs  # integer _id becomes a string
    assert data.docs["d1"].title == "Aspirin"
    assert data.docs["d1"].contents == "Aspirin\nAspirin reduces the risk of heart attack."
    assert data.docs["d3"].contents == "Coffee consumption and sleep quality."  # no title, no leading newline
    assert data.candidates is None


def test_beir_split_awareness(beir_dir):
    test = load_dataset(beir_dir, split="test")
    train = load_dataset(beir_dir, split="train")
    assert set(train.queries) == {"tr1", "tr2"}
    assert set(train.qrels) == {"tr1", "tr2"}
    assert not set(train.queries) & set(test.queries)
    assert not set(train.qrels) & set(test.qrels)
    assert "unjudged" not in test.queries and "unjudged" not in train.queries


def test_beir_missing_split_lists_splits_found(beir_dir):
    with pytest.raises(LlmrankError, match=r"no qrels for split 'dev'.*test.*train"):
        load_dataset(beir_dir, split="dev")


def test_beir_judged_query_missing_from_queries(beir_dir):
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nt1\td1\t1\nghost\td2\t1\n")
    with pytest.raises(LlmrankError, match="ghost"):
        load_dataset(beir_dir)


def test_beir_malformed_corpus_line_names_file_and_line(beir_dir):
    lines = (beir_dir / "corpus.jsonl").read_text().splitlines()
    lines[2] = '{"_id": "d3", "text": '
    (beir_dir / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(LlmrankError, match=r"corpus\.jsonl:3: malformed JSON"):
        load_dataset(beir_dir)


def test_beir_gz_corpus(beir_dir):
    (beir_dir / "corpus.jsonl").unlink()
    write_jsonl(beir_dir / "corpus.jsonl.gz", BEIR_CORPUS, gz=True)
    assert detect_layout(beir_dir) == "beir"
    assert len(load_dataset(beir_dir).docs) == 5


# --------------------------------------------------------------------------- candidates JSON


def rankgpt_items():
    # hits deliberately not in rank order in the file; scores kept as given
    return [
        {"query": "what is a flea", "hits": [
            {"content": "Fleas are insects.", "qid": "q1", "docid": "p2", "rank": 2, "score": 11.5},
            {"content": "Flea life cycle.", "qid": "q1", "docid": "p1", "rank": 1, "score": 12.25},
            {"content": "Dogs and cats.", "qid": "q1", "docid": "p3", "rank": 3, "score": 9.0},
        ]},
        {"query": "rain in spain", "hits": [
            {"content": "Spain weather.", "qid": 7, "docid": 70, "rank": 1, "score": 3.5},
            {"content": "Rain gauge.", "qid": 7, "docid": 71, "rank": 2, "score": 3.25},
        ]},
    ]


def test_candidates_json_order_scores_and_sibling_qrels(tmp_path):
    path = tmp_path / "bm25_top3.json"
    path.write_text(json.dumps(rankgpt_items(), indent=1))
    (tmp_path / "qrels.txt").write_text("q1 0 p1 2\nq1 0 p3 0\n7 0 71 1\n")
    assert detect_layout(path) == "candidates-json"
    data = load_dataset(path)
    assert data.kind == "candidates-json"
    assert data.queries["q1"].text == "what is a flea"
    assert data.candidates["q1"] == [("p1", 12.25), ("p2", 11.5), ("p3", 9.0)]
    assert data.candidates["7"] == [("70", 3.5), ("71", 3.25)]
    assert data.docs["p2"].text == "Fleas are insects."
    assert data.qrels == {"q1": {"p1": 2, "p3": 0}, "7": {"71": 1}}
    # a directory holding exactly one candidates JSON is the same dataset
    assert detect_layout(tmp_path) == "candidates-json"
    assert load_dataset(tmp_path).candidates == data.candidates
    # and the same file is a run for `evaluate`
    assert load_run(path) == data.candidates


def test_candidates_json_without_sibling_qrels(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(rankgpt_items()))
    assert load_dataset(path).qrels is None


def test_candidates_json_without_qids_or_scores(tmp_path):
    items = [{"query": "a", "hits": [{"content": "x", "docid": "d1"}, {"content": "y", "docid": "d2"}]},
             {"query": "b", "hits": [{"content": "z", "docid": "d3"}]}]
    path = tmp_path / "noqid.json"
    path.write_text(json.dumps(items))
    data = load_dataset(path)
    # one query per item (positions as ids), not all of them folded onto one id
    assert list(data.queries) == ["0", "1"]
    assert data.candidates.docids("0") == ["d1", "d2"]
    assert data.candidates["0"][0][1] > data.candidates["0"][1][1]


def test_candidates_json_with_long_first_query_is_recognised(tmp_path):
    # BRIGHT queries reach 20k characters: "hits" then lies far past the head of the file
    items = [{"query": "long " * 2000, "hits": [{"content": "x", "qid": "q", "docid": "d", "rank": 1, "score": 1.0}]}]
    path = tmp_path / "long.json"
    path.write_text(json.dumps(items))
    assert detect_layout(path) == "candidates-json"
    assert load_run(path) == Candidates({"q": [("d", 1.0)]})


def test_write_candidates_json_round_trip(tmp_path):
    src = tmp_path / "src.json"
    src.write_text(json.dumps(rankgpt_items()))
    data = load_dataset(src)
    reranked = Candidates({"q1": [("p3", 0.9), ("p1", 0.95), ("p2", 0.1)]})
    out = tmp_path / "out" / "reranked.json"
    write_candidates_json(data, reranked, out)
    again = load_dataset(out)
    assert again.candidates == reranked
    assert again.queries["q1"].text == "what is a flea"


def test_candidates_json_bad_hit(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"query": "a", "hits": [{"content": "x"}]}]))
    with pytest.raises(LlmrankError, match=r"item 0, hit 0: missing key 'docid'"):
        load_dataset(path)


# --------------------------------------------------------------------------- TREC files


def test_read_run_trec_eval_tie_order(tmp_path):
    path = tmp_path / "ties.run"
    # ranks in the file are ignored: trec_eval sorts by score desc, then docid desc (string order)
    path.write_text(
        "q1 Q0 d1 1 2.0 t\n"
        "q1 Q0 d9 2 2.0 t\n"
        "q1 Q0 d10 3 2.0 t\n"
        "q1 Q0 d5 4 3.5 t\n"
        "q1 Q0 d2 5 -1 t\n"
        "\n"
        "q2 Q0 a 1 1.0 t\n"
        "q2 Q0 b 2 1.0 t\n"
    )
    run = read_run(path)
    assert run.docids("q1") == ["d5", "d9", "d10", "d1", "d2"]
    assert run["q1"][0] == ("d5", 3.5)
    assert run.docids("q2") == ["b", "a"]


def test_read_run_bad_lines(tmp_path):
    path = tmp_path / "bad.run"
    path.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 2.0\n")
    with pytest.raises(LlmrankError, match=r"bad\.run:2: .*6 fields"):
        read_run(path)
    path.write_text("q1 Q0 d1 1 high t\n")
    with pytest.raises(LlmrankError, match=r"bad\.run:1"):
        read_run(path)


def test_read_qrels_trec_and_beir(tmp_path):
    trec = tmp_path / "qrels.txt"
    trec.write_text("q1 0 d1 3\nq1 0 d2 0\nq2 Q0 d3 1\n")
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t3\nq1\td2\t0\nq2\td3\t1\n")
    expected = {"q1": {"d1": 3, "d2": 0}, "q2": {"d3": 1}}
    assert read_qrels(trec) == expected
    assert read_qrels(beir) == expected


def test_read_qrels_errors(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("q1 0 d1 1\nq1 d2\n")
    with pytest.raises(LlmrankError, match=r"q\.txt:2"):
        read_qrels(path)
    path.write_text("q1 0 d1 yes\n")
    with pytest.raises(LlmrankError, match="not a number"):
        read_qrels(path)
    path.write_text("\n")
    with pytest.raises(LlmrankError, match="no judgements"):
        read_qrels(path)
    with pytest.raises(LlmrankError, match="file not found"):
        read_qrels(tmp_path / "missing.txt")


def test_read_topics(tmp_path):
    path = tmp_path / "topics.tsv"
    path.write_bytes(b"19335\tanthropological definition of environment\r\n47923\taxon terminals\tor bulbs\n\n")
    topics = read_topics(path)
    assert list(topics) == ["19335", "47923"]
    assert topics["19335"] == Query("19335", "anthropological definition of environment")
    assert topics["47923"].text == "axon terminals\tor bulbs"  # only the first tab splits
    path.write_text("no tab here\n")
    with pytest.raises(LlmrankError, match=r"topics\.tsv:1"):
        read_topics(path)


def test_write_run_read_run_round_trip(tmp_path):
    run = Candidates({
        "q1": [("d3", 9.5), ("d1", 7.25), ("d2", 1.0)],  # decreasing: scores kept
        "q2": [("b", 0.1), ("a", 0.9), ("c", 0.5)],  # a reranked order whose scores aren't decreasing
        "q3": [("x", 1.0), ("y", 1.0), ("z", 1.0)],  # ties that trec_eval would reorder by docid
        "q4": [("p", 0.5000004), ("q", 0.5000001)],  # decreasing only past the 6th decimal
    })
    path = tmp_path / "out" / "run.trec"
    write_run(run, path, tag="mytag")
    lines = path.read_text().splitlines()
    assert len(lines) == 11
    assert lines[0].split() == ["q1", "Q0", "d3", "1", "9.5", "mytag"]
    back = read_run(path)
    for qid in run:
        assert back.docids(qid) == run.docids(qid), qid
    assert back["q1"] == run["q1"]
    assert load_run(path) == back


# --------------------------------------------------------------------------- BRIGHT


def test_bright_jsonl_layout(tmp_path):
    root = tmp_path / "biology"
    write_jsonl(root / "examples.jsonl", BRIGHT_EXAMPLES)
    write_jsonl(root / "documents.jsonl", BRIGHT_DOCS)
    assert detect_layout(root) == "bright"
    data = load_dataset(root)
    check_bright(data, name="biology")
    assert set(data.docs) == {d["id"] for d in BRIGHT_DOCS}
    assert data.docs["moth/phototaxis_1.txt"].text == "Moths navigate by the moon."
    assert data.queries["0"].meta["reasoning"] == "insects navigate by light sources"


def test_bright_gz_layout_without_documents(tmp_path):
    root = tmp_path / "pony"
    write_jsonl(root / "examples.jsonl.gz", BRIGHT_EXAMPLES, gz=True)
    assert detect_layout(root) == "bright"
    data = load_dataset(root)
    check_bright(data, name="pony")
    assert data.docs == {}
    with pytest.raises(LlmrankError, match="needs documents"):
        retrieve(data)


def write_parquet(path: Path, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path)


def test_bright_parquet_layout_split_picks_task(tmp_path):
    root = tmp_path / "BRIGHT"
    write_parquet(root / "examples" / "biology-00000-of-00001.parquet", BRIGHT_EXAMPLES)
    write_parquet(root / "documents" / "biology-00000-of-00001.parquet", BRIGHT_DOCS)
    econ_examples = [bright_example("e0", "why do prices rise", ["econ/inflation_0.txt"], excluded=["econ/x_0.txt"])]
    econ_docs = [{"id": "econ/inflation_0.txt", "content": "Inflation is a rise in prices."},
                 {"id": "econ/x_0.txt", "content": "Prices rise and fall."}]
    write_parquet(root / "examples" / "economics-00000-of-00001.parquet", econ_examples)
    write_parquet(root / "documents" / "economics-00000-of-00001.parquet", econ_docs)
    assert detect_layout(root) == "bright"

    bio = load_dataset(root, split="biology")
    check_bright(bio, name="biology")
    assert set(bio.docs) == {d["id"] for d in BRIGHT_DOCS}

    econ = load_dataset(root, split="economics")
    assert econ.name == "economics"
    assert list(econ.queries) == ["e0"]
    assert econ.qrels == {"e0": {"econ/inflation_0.txt": 1}}
    assert econ.excluded == {"e0": {"econ/x_0.txt"}}
    assert set(econ.docs) == {"econ/inflation_0.txt", "econ/x_0.txt"}

    with pytest.raises(LlmrankError, match="several BRIGHT tasks.*--split"):
        load_dataset(root)  # split "test" names no task


def test_bright_query_field_human_reasoning(tmp_path):
    root = tmp_path / "bio"
    write_jsonl(root / "examples.jsonl", BRIGHT_EXAMPLES)
    data = load_dataset(root, query_field="human-reasoning")
    assert data.queries["0"].text == "insects navigate by light sources"
    assert data.queries["1"].text == "reasoning for 1"
    assert data.qrels == load_dataset(root).qrels


def test_bright_excluded_ids_dropped_from_bm25(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "leetcode"
    examples = [bright_example("q", "dijkstra shortest path heap", ["sol/gold_0.txt"], excluded=["sol/self_0.txt"])]
    docs = [
        # the query's own source problem: the best BM25 match, and excluded
        {"id": "sol/self_0.txt", "content": "dijkstra shortest path heap dijkstra shortest path heap"},
        {"id": "sol/gold_0.txt", "content": "Use dijkstra with a binary heap for the shortest path."},
        {"id": "sol/a_0.txt", "content": "Sorting an array with merge sort."},
        {"id": "sol/b_0.txt", "content": "Breadth first search on a grid."},
        {"id": "sol/c_0.txt", "content": "Dynamic programming for knapsack."},
    ]
    write_jsonl(root / "examples.jsonl", examples)
    write_jsonl(root / "documents.jsonl", docs)
    data = load_dataset(root)
    assert data.excluded == {"q": {"sol/self_0.txt"}}

    raw = BM25Index(data.docs).search(list(data.queries.values()), k=3)
    assert raw.docids("q")[0] == "sol/self_0.txt"  # it would rank first

    run = retrieve(data, k=3)
    assert "sol/self_0.txt" not in run.docids("q")
    assert run.docids("q")[0] == "sol/gold_0.txt"
    assert len(run["q"]) == 3  # still k after dropping it

    # given candidates lose the excluded ids too
    data.candidates = Candidates({"q": [("sol/self_0.txt", 2.0), ("sol/gold_0.txt", 1.0)]})
    assert ensure_candidates(data).docids("q") == ["sol/gold_0.txt"]


def test_bright_hub_path_needs_a_task():
    assert detect_layout("hf://xlangai/BRIGHT") == "bright"
    with pytest.raises(LlmrankError, match="name the BRIGHT task with --split"):
        load_dataset("hf://xlangai/BRIGHT", split="test")


# --------------------------------------------------------------------------- users' jsonl


def test_user_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"qid": "a", "query": "red fruit", "docs": [
            {"docid": "apple", "text": "Apples are red.", "title": "Apple", "label": 2},
            {"docid": "banana", "text": "Bananas are yellow.", "label": 0},
        ]},
        {"query": "plain strings", "docs": ["first doc", "second doc", "third doc"]},
    ])
    assert detect_layout(path) == "jsonl"
    data = load_dataset(path)
    assert data.kind == "jsonl"
    assert list(data.queries) == ["a", "2"]  # a missing qid defaults to the line number
    assert data.candidates.docids("a") == ["apple", "banana"]
    assert data.candidates.docids("2") == ["2-0", "2-1", "2-2"]  # default docids: <qid>-<position>
    assert data.docs["2-1"] == Doc("2-1", "second doc")
    assert data.docs["apple"].contents == "Apple\nApples are red."
    assert data.qrels == {"a": {"apple": 2, "banana": 0}}  # labels become qrels; unlabelled queries have none
    # default scores keep the given order through a run file
    out = tmp_path / "mine.run"
    write_run(data.candidates, out)
    assert read_run(out).docids("2") == ["2-0", "2-1", "2-2"]


def test_user_jsonl_without_labels_has_no_qrels(tmp_path):
    path = write_jsonl(tmp_path / "nolabels.jsonl", [{"query": "q", "docs": ["x"]}])
    assert load_dataset(path).qrels is None


def test_user_jsonl_errors(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "q", "docs": ["x"]}\n{"query": "r", "docs": ["y"]\n')
    with pytest.raises(LlmrankError, match=r"bad\.jsonl:2: malformed JSON"):
        load_dataset(path)
    path.write_text('{"query": "q", "docs": [{"title": "no text"}]}\n')
    with pytest.raises(LlmrankError, match=r"bad\.jsonl:1: docs\[0\]: missing key 'text'"):
        load_dataset(path)
    path.write_text('{"qid": 1, "query": "q", "docs": ["x"]}\n{"qid": "1", "query": "r", "docs": ["y"]}\n')
    with pytest.raises(LlmrankError, match="duplicate qid '1'"):
        load_dataset(path)
    path.write_text('{"query": "q", "docs": [{"text": "x", "score": "high"}]}\n')
    with pytest.raises(LlmrankError, match=r"bad\.jsonl:1: docs\[0\]\.score"):
        load_dataset(path)


# --------------------------------------------------------------------------- detect_layout


def test_detect_layout_unrecognised_lists_layouts(tmp_path):
    odd = tmp_path / "notes.txt"
    odd.write_text("hello\n")
    other = write_jsonl(tmp_path / "other.jsonl", [{"a": 1}])
    empty = tmp_path / "emptydir"
    empty.mkdir()
    for path in (odd, other, empty):
        with pytest.raises(LlmrankError) as e:
            detect_layout(path)
        msg = str(e.value)
        assert "not a dataset llmrank recognises" in msg
        for layout in ("BEIR directory", "candidates JSON", "BRIGHT directory", "jsonl of your own"):
            assert layout in msg
        assert "\n" not in msg  # the CLI prints it as one line
    with pytest.raises(LlmrankError, match="no such file"):
        detect_layout(tmp_path / "nope")


def test_load_run_rejects_non_candidates_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"q1": {"d1": 1.0}}')
    with pytest.raises(LlmrankError, match="candidates list"):
        load_run(path)
    path.write_text("[1, 2")
    with pytest.raises(LlmrankError, match="malformed JSON"):
        load_run(path)
    with pytest.raises(LlmrankError, match="file not found"):
        load_run(tmp_path / "missing.run")


# --------------------------------------------------------------------------- BM25

TOY = {
    "d0": "The cat sat on the mat in the sun.",
    "d1": "Dogs chase cats around the garden.",
    "d2": "A bird sings in the morning sun.",
    "d3": "Fish swim in the cold water of the lake.",
    "d4": "The okapi is a rare forest giraffe relative.",
    "d5": "Cars drive on the busy roads of the city.",
}


def toy_docs(texts=TOY):
    return {d: Doc(d, t) for d, t in texts.items()}


def test_bm25_rare_term_ranks_first(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path))
    index = BM25Index(toy_docs())
    run = index.search([Query("q1", "where does the okapi live"), Query("q2", "cold lake water")], k=3)
    assert run.docids("q1")[0] == "d4"
    assert run.docids("q2")[0] == "d3"
    assert len(run["q1"]) == 3
    scores = [s for _, s in run["q1"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[1]
    assert len(index.search([Query("q", "okapi")], k=50)["q"]) == 6  # k capped at the corpus size


def test_bm25_index_cached_and_invalidated(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path))
    first = BM25Index(toy_docs())
    assert first.cached is False
    assert len(list((tmp_path / "bm25").iterdir())) == 1
    second = BM25Index(toy_docs())
    assert second.cached is True
    q = [Query("q", "okapi forest")]
    assert second.search(q, k=6) == first.search(q, k=6)

    changed = dict(TOY, d2="An okapi okapi okapi in the zoo.")
    third = BM25Index(toy_docs(changed))
    assert third.cached is False
    okapi = [Query("q", "okapi")]
    assert first.search(okapi, k=1).docids("q") == ["d4"]
    assert third.search(okapi, k=1).docids("q") == ["d2"]  # the new index, not the cached one
    assert len(list((tmp_path / "bm25").iterdir())) == 2


def test_retrieve_on_beir_fixture(beir_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path / "cache"))
    data = load_dataset(beir_dir)
    run = retrieve(data, k=2)
    assert set(run) == {"t1", "t2"}
    assert run.docids("t1")[0] == "d1"
    assert run.docids("t2")[0] == "5"
    assert all(len(run[q]) == 2 for q in run)


# --------------------------------------------------------------------------- types


def test_candidates_run_scores_and_views():
    c = Candidates({"q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)], 2: [("x", 0.2), ("y", 0.7)]})
    assert c.qids() == ["q1", "2"]  # qids become strings
    rs = c.run_scores()
    assert rs["q1"] == {"a": 3.0, "b": 2.0, "c": 1.0}  # decreasing scores are kept
    assert rs["2"] == {"x": 2.0, "y": 1.0}  # otherwise n - rank keeps the list order
    assert c.top(2)["q1"] == [("a", 3.0), ("b", 2.0)]
    assert c.subset(["2", "missing"]).qids() == ["2"]
    assert c.without({"q1": {"b"}}).docids("q1") == ["a", "c"]


def test_first_queries_follows_candidate_order(tmp_path):
    path = write_jsonl(tmp_path / "three.jsonl", [
        {"qid": "z", "query": "z?", "docs": [{"docid": "1", "text": "t", "label": 1}]},
        {"qid": "a", "query": "a?", "docs": [{"docid": "2", "text": "t", "label": 1}]},
        {"qid": "m", "query": "m?", "docs": ["t"]},
    ])
    data = load_dataset(path)
    two = data.first_queries(2)
    assert list(two.queries) == ["z", "a"]
    assert two.candidates.qids() == ["z", "a"]
    assert two.qrels == {"z": {"1": 1}, "a": {"2": 1}}
    assert data.first_queries(None) is data
