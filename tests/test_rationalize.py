"""Rationalization (STaR) in the rationale teacher: the judged label goes into the prompt, the verdict is the
label, the record says it was rationalized, and the reasoning student's SFT targets all end in the label."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrank.backends.base import Backend, Generation
from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.prompts import load_prompt
from llmrank.rerankers import build_reranker
from llmrank.teacher import read_teacher_run, run_teacher

DOCS = {d.docid: d for d in [
    Doc("d0", "Water boils at 100 degrees Celsius at sea level."),
    Doc("d1", "The Eiffel Tower is in Paris."),
    Doc("d2", "Boiling point depends on pressure.", title="Boiling"),
    Doc("d3", "Cats sleep most of the day."),
]}
QUERIES = {"q1": Query("q1", "boiling point of water"), "q2": Query("q2", "where is the eiffel tower")}
# d3 of q1 and d0/d2/d3 of q2 are unjudged: label "no"; a grade 0 judgement is "no" too
QRELS = {"q1": {"d0": 2, "d2": 1, "d1": 0}, "q2": {"d1": 1}}
CANDS = Candidates({"q1": [("d3", 4.0), ("d1", 3.0), ("d2", 2.0), ("d0", 1.0)],
                    "q2": [("d0", 4.0), ("d1", 3.0), ("d2", 2.0), ("d3", 1.0)]})
DATA = RankingData("toy", QUERIES, DOCS, QRELS, CANDS, source="toy")
LABELS = {"q1": {"d3": "no", "d1": "no", "d2": "yes", "d0": "yes"}, "q2": {"d0": "no", "d1": "yes", "d2": "no", "d3": "no"}}


class RecordingBackend(Backend):
    """Generations are given texts, in turn; the prompts it was asked are kept."""

    name = "canned"

    def __init__(self, outputs):
        super().__init__("canned")
        self.outputs, self.prompts = list(outputs), []

    def label_logprobs(self, prompts, labels, variants=True):
        raise NotImplementedError

    def generate(self, prompts, params=None):
        self.prompts += prompts
        out = [Generation(self.outputs.pop(0), 7, 3) for _ in prompts]
        self.stats["calls"] += len(out)
        return out


def test_rationalize_prompt_shows_the_label_and_the_verdict_is_the_label(tmp_path):
    # q1 candidates d3 d1 d2 d0 (labels no no yes yes): one agrees, one contradicts, one has no verdict line
    outputs = ["About cats.\nVerdict: no", "It names the boiling point.\nVerdict: yes", "Pressure changes it.",
               "States 100 C.\nVerdict: yes"]
    backend = RecordingBackend(outputs)
    rr = build_reranker("rationale", backend, "rationale", rationalize=True, qrels=QRELS)
    assert rr.prompt.name == "rationale_rationalize" and "label" in rr.prompt.fields
    ranking = rr.rerank(QUERIES["q1"], [DOCS[d] for d in ("d3", "d1", "d2", "d0")])
    for p, label in zip(backend.prompts, ["no", "no", "yes", "yes"]):
        assert f'The correct answer is "{label}"' in p and f'exactly "Verdict: {label}"' in p
    assert ranking.extra["verdicts"] == {"d3": 0.0, "d1": 0.0, "d2": 1.0, "d0": 1.0}
    assert ranking.docids == ["d2", "d0", "d3", "d1"]  # judged relevant first, ties in candidate order
    assert ranking.rationales == {"d3": "About cats.", "d1": "It names the boiling point.",
                                  "d2": "Pressure changes it.", "d0": "States 100 C."}
    assert ranking.cost["rationalize_mismatch"] == 1 and ranking.cost["parse_failures"] == 1

    # min_grade 2: only d0 (grade 2) is "yes"
    strict = build_reranker("rationale", RecordingBackend(["x"] * 4), rationalize=True, qrels=QRELS, min_grade=2)
    assert strict.rerank(QUERIES["q1"], [DOCS[d] for d in ("d3", "d1", "d2", "d0")]).extra["verdicts"] == \
        {"d3": 0.0, "d1": 0.0, "d2": 0.0, "d0": 1.0}
    # a graded prompt of the user's that reads {{ label }} is given the grade (at most the top one)
    graded = load_prompt("rationale_graded")
    mine = tmp_path / "graded_explain.yaml"
    mine.write_text(Path(graded.path).read_text().replace("name: rationale_graded", "name: graded_explain")
                    .replace("How relevant", "The grade is {{ label }}. How relevant"))
    backend = RecordingBackend(["a", "b", "c"])
    rg = build_reranker("rationale", backend, str(mine), rationalize=True, qrels={"q": {"d0": 2, "d1": 5}})
    r = rg.rerank(Query("q", "x"), [DOCS["d0"], DOCS["d1"], DOCS["d2"]])
    assert [p.count("The grade is 2.") + 10 * p.count("The grade is 3.") + 100 * p.count("The grade is 0.")
            for p in backend.prompts] == [1, 10, 100]
    assert r.extra["verdicts"] == {"d0": 2.0, "d1": 3.0, "d2": 0.0} and r.docids == ["d1", "d0", "d2"]
    plain = build_reranker("rationale", RecordingBackend([]))
    assert "rationalize" not in plain.cache_key
    assert rr.cache_key == {**plain.cache_key, "prompt": "rationale_rationalize@1", "rationalize": True, "min_grade": 1}


def test_rationalize_mistakes_are_named(tmp_path):
    with pytest.raises(LlmrankError, match="needs a dataset with judgements"):
        build_reranker("rationale", RecordingBackend([]), rationalize=True)
    with pytest.raises(LlmrankError, match="no prompt 'rationale_graded_rationalize'"):
        build_reranker("rationale", RecordingBackend([]), "rationale_graded", rationalize=True, qrels=QRELS)
    with pytest.raises(LlmrankError, match="use it with option rationalize: true"):
        build_reranker("rationale", RecordingBackend([]), "rationale_rationalize")
    with pytest.raises(LlmrankError, match="expected true or false"):
        build_reranker("rationale", RecordingBackend([]), rationalize="yes", qrels=QRELS)
    rr = build_reranker("rationale", RecordingBackend(["a"] * 4), rationalize=True, qrels={"q1": QRELS["q1"]})
    with pytest.raises(LlmrankError, match="query 'q2' has no judgements"):
        rr.rerank(QUERIES["q2"], [DOCS["d0"]])
    # the runner's teacher factory hands the qrels over, and names a dataset without any
    from llmrank.recipe import TeacherConfig
    from llmrank.rerankers import build_teacher

    section = TeacherConfig(method="rationale", model="x", backend="hf", options={"rationalize": True})
    with pytest.raises(LlmrankError, match="needs judgements"):
        build_teacher(section, None)


def test_rationalized_teacher_run_and_sft_targets_on_the_tiny_model(tiny_model_dir, tmp_path):
    """A real (tiny random) model writes the explanations: whatever it writes, the records' verdicts are the
    labels and every SFT target ends in the label's verdict."""
    from transformers import AutoTokenizer

    from llmrank.backends.hf import HFBackend
    from llmrank.students.reasoning import build_sft_examples

    backend = HFBackend(str(tiny_model_dir), device="cpu")
    # sampled: greedy decoding of the random model repeats whitespace after the chat header (empty explanations)
    rr = build_reranker("rationale", backend, "rationale", rationalize=True, qrels=QRELS, max_tokens=12, temperature=1.0)
    path = tmp_path / "teacher.jsonl"
    stats = run_teacher(rr, DATA, CANDS, 4, path, require_rationales=True)
    assert stats["done"] == 2
    run = read_teacher_run(path)
    for qid, rec in run.items():
        assert rec["rationalized"] is True and rec["reranker"]["rationalize"] is True
        assert rec["prompt"] == "rationale_rationalize@1"
        assert {d: ("yes" if v == 1.0 else "no") for d, v in rec["extra"]["verdicts"].items()} == LABELS[qid]
    examples = build_sft_examples(DATA, run, "rationale", tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir))
    assert {(e["qid"], e["docid"]) for e in examples} <= {(q, d) for q in LABELS for d in LABELS[q]}
    assert len(examples) == 8  # sampled text is never empty: nothing is skipped
    for e in examples:
        label = LABELS[e["qid"]][e["docid"]]
        assert e["verdict"] == label and e["messages"][-1]["content"].endswith(f"\nVerdict: {label}")
        # the student's turn is the plain rationale prompt: the label is not in it
        assert "correct answer" not in e["messages"][-2]["content"]

    # turning the option off is another teacher configuration: the same file refuses it, a new one re-teaches
    plain = build_reranker("rationale", backend, "rationale", max_tokens=12, temperature=1.0)
    with pytest.raises(LlmrankError, match="another configuration"):
        run_teacher(plain, DATA, CANDS, 4, path)
    run_teacher(plain, DATA, CANDS, 4, tmp_path / "plain.jsonl")
    for rec in read_teacher_run(tmp_path / "plain.jsonl").values():
        assert rec["rationalized"] is False and rec["prompt"] == "rationale@1"
        assert rec["key"] != run[rec["qid"]]["key"]


def test_rationalize_prompt_is_valid():
    p = load_prompt("rationale_rationalize")
    base = load_prompt("rationale")
    assert p.method == "rationale" and p.fields == {"query", "document", "label"}
    assert p.answers == base.answers and p.output_regex == base.output_regex
