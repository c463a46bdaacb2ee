"""A reasoning student exported for serving: the export reloads as the same student (same outputs, same
scores) and carries the parse rule the student was trained with."""

from __future__ import annotations

import json
import re

import pytest

from llmrank.data.types import Doc, Query, RankingData

DOCS = {d.docid: d for d in [
    Doc("d0", "Water boils at 100 degrees Celsius at sea level."),
    Doc("d1", "The Eiffel Tower is in Paris."),
    Doc("d2", "Boiling point depends on pressure.", title="Boiling"),
    Doc("d3", "Cats sleep most of the day."),
]}
QUERIES = {"q1": Query("q1", "boiling point of water"), "q2": Query("q2", "where is the eiffel tower")}
DATA = RankingData("toy", QUERIES, DOCS, source="toy")
RECORDS = {
    "q1": {"qid": "q1", "key": "k1", "method": "rationale", "prompt": "rationale_rationalize@1", "ranking": ["d0", "d2", "d1", "d3"],
           "rationales": {"d0": "It gives the boiling point.", "d2": "Pressure sets the boiling point.",
                          "d1": "It is about Paris.", "d3": "It is about cats."},
           "extra": {"verdicts": {"d0": 1.0, "d2": 1.0, "d1": 0.0, "d3": 0.0}}, "rationalized": True},
    "q2": {"qid": "q2", "key": "k2", "method": "rationale", "prompt": "rationale_rationalize@1", "ranking": ["d1", "d0"],
           "rationales": {"d1": "It names the tower's city.", "d0": "It is about water."},
           "extra": {"verdicts": {"d1": 1.0, "d0": 0.0}}, "rationalized": True},
}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A reasoning student SFT-trained on the tiny random model (adapter and merged), with its examples."""
    import torch
    from transformers import AutoTokenizer

    from llmrank.students.reasoning import ReasoningStudent, build_sft_examples

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = AutoTokenizer.from_pretrained(tiny_model_dir)
        examples = build_sft_examples(DATA, RECORDS, tokenizer=tok, max_doc_tokens=32)
        out = tmp_path_factory.mktemp("reasoning") / "student"
        cfg = ReasoningStudent.config_class()(
            model=str(tiny_model_dir), lora_r=4, lora_alpha=8, lora_dropout=0.0, max_doc_tokens=32, max_new_tokens=16,
            merge=True, output_dir=str(out), max_steps=6, per_device_train_batch_size=2, learning_rate=1e-2,
            lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, save_strategy="no", report_to=[],
            bf16=False, gradient_checkpointing=False, use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0)
        ReasoningStudent.train(cfg, examples)
        yield out, examples
    finally:
        torch.set_num_threads(threads)


def _rank(path, dtype="float32"):
    from llmrank.students import load_student
    from llmrank.students.reasoning import ReasoningStudentReranker

    student = load_student(path, dtype=dtype, device="cpu")
    assert isinstance(student, ReasoningStudentReranker)
    return student, student.rerank(QUERIES["q1"], [DOCS[d] for d in ("d1", "d0", "d3", "d2")])


@pytest.mark.parametrize("source", ["merged", "adapter"])
def test_export_reloads_with_the_students_own_scores(trained, tmp_path, source):
    from llmrank.serve.export import SERVE_FILE, export_student

    student_dir, _ = trained
    info = export_student(student_dir / source, tmp_path / "export", dtype="float32")
    assert info["kind"] == "reasoning" and info["runner"] == "generate"
    assert json.loads((tmp_path / "export" / SERVE_FILE).read_text()) == info
    student, before = _rank(student_dir / source)
    exported, after = _rank(tmp_path / "export")
    # the export is the same student: same prompt, budget and truncation, the same text and scores
    assert (exported.prompt.key, exported.params.max_tokens, exported.max_doc_tokens) == \
        (student.prompt.key, student.params.max_tokens, student.max_doc_tokens) == ("rationale@1", 16, 32)
    assert after.docids == before.docids and after.rationales == before.rationales
    assert after.extra["verdicts"] == before.extra["verdicts"]
    exact = source == "merged"  # the merged weights are copied; an adapter is merged by the export (float rounding)
    assert after.scores == (before.scores if exact else pytest.approx(before.scores, abs=1e-4))
    assert after.cost["calls"] == before.cost["calls"] and "parse_failures" in after.cost


def test_export_carries_the_trained_parse_rule(trained, tmp_path):
    from llmrank.serve.export import export_student
    from llmrank.students import STUDENT_FILE

    student_dir, examples = trained
    meta = json.loads((student_dir / "merged" / STUDENT_FILE).read_text())
    info = export_student(student_dir / "merged", tmp_path / "export", dtype="bfloat16")
    rule = info["parse"]
    assert rule == meta["parse"] and rule["verdict_regex"] and rule["output_format"]
    # the rule reads the verdict of every target the student was trained on, and the format wrote them
    for ex in examples:
        target = ex["messages"][-1]["content"]
        found = re.findall(rule["verdict_regex"], target)
        assert found and found[-1] == ex["verdict"]
        explanation = target.rsplit("\n", 1)[0]
        assert rule["output_format"].format(explanation=explanation, verdict=ex["verdict"]) == target
    assert {ex["verdict"] for ex in examples} == set(rule["answers"].values()) == {"yes", "no"}
    # the bf16 export reloads as a reasoning student too
    exported, ranking = _rank(tmp_path / "export", dtype="bfloat16")
    assert sorted(ranking.docids) == ["d0", "d1", "d2", "d3"] and all(0.0 <= s <= 1.0 for s in ranking.scores)
