"""FIRST (listwise ranking from the first identifier's logits): exact logits on the hf backend, the order and
bookkeeping on a backend whose identifier log-probabilities are known, unseen identifiers, the teacher-file
round trip and the training groups built from its per-window distributions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llmrank.backends.base import Backend
from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.rerankers import build_reranker
from llmrank.rerankers.first import FirstReranker, order_from_logprobs, window_distribution

QUERY = Query("q1", "boiling water temperature")


def _docs(n):
    return [Doc(f"d{i}", f"document number {i} about topic {i}") for i in range(n)]


class ScriptedBackend(Backend):
    """Identifier log-probabilities given by a function of the passages shown, read back from the prompt;
    ``top`` keeps only that many identifiers visible (as a server's top_logprobs would)."""

    name = "scripted"

    def __init__(self, tokenizer, score, top=None):
        super().__init__("scripted")
        self.tokenizer, self.score, self.top, self.prompts = tokenizer, score, top, []

    def label_logprobs(self, prompts, labels, variants=True):
        out = np.full((len(prompts), len(labels)), -math.inf)
        for r, p in enumerate(prompts):
            self.prompts.append(p)
            self.stats["calls"] += 1
            vals = []
            for lab in labels:
                line = p.split(f"[{lab}] ", 1)[1].split("\n", 1)[0]
                vals.append(self.score(line))
            vals = np.log(np.exp(vals) / np.exp(vals).sum() * 0.9)  # 0.9 of the mass on identifiers
            keep = np.argsort(-vals, kind="stable")[: self.top or len(vals)]
            out[r, keep] = vals[keep]
        return out

    def generate(self, prompts, params=None):
        raise AssertionError("FIRST never generates")


@pytest.fixture(scope="module")
def smol_tokenizer():
    from transformers import AutoTokenizer

    from llmrank.models import tokenizer_dir

    return AutoTokenizer.from_pretrained(str(tokenizer_dir("smollm2-135m")))


def _number(line: str) -> float:
    return float(line.split("number ")[1].split()[0])


def test_order_from_logprobs_ties_and_unseen_keep_input_order():
    assert order_from_logprobs([-1.0, -0.5, -math.inf, -0.5, None]) == [1, 3, 0, 2, 4]


def test_window_distribution_renormalises_over_seen_identifiers():
    p = window_distribution([math.log(0.2), math.log(0.6), None])
    assert p == pytest.approx([0.25, 0.75, 0.0])
    assert window_distribution([None, None]) == pytest.approx([0.5, 0.5])


def test_first_sorts_windows_by_identifier_logprob(smol_tokenizer):
    # higher document number = more probable identifier; windows 10–20, 5–15, 0–10 each sort their slice
    backend = ScriptedBackend(smol_tokenizer, _number)
    docs = _docs(20)
    r = FirstReranker(backend, window=10, step=5, max_doc_tokens=None)
    ranking = r.rerank(QUERY, docs)
    expect = [19, 18, 17, 16, 15, 4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 14, 13, 12, 11, 10]
    assert ranking.docids == [f"d{i}" for i in expect]
    assert sorted(ranking.docids) == sorted(d.docid for d in docs)
    assert ranking.cost["windows"] == 3 and backend.stats["calls"] == 3  # one forward pass per window
    assert not any(k.startswith("repair") for k in ranking.cost)
    assert all(p.endswith("<|im_start|>assistant\n[") for p in backend.prompts)
    assert "[J] document number 19" in backend.prompts[0] and "[K]" not in backend.prompts[0]
    wins = ranking.extra["windows"]
    assert [w["docids"] for w in wins][0] == [f"d{i}" for i in range(10, 20)]
    lp = wins[0]["logprobs"]  # bottom window: d10..d19, softmax of 10..19 times 0.9
    expect = np.log(np.exp(np.arange(10.0, 20.0)) / np.exp(np.arange(10.0, 20.0)).sum() * 0.9)
    assert lp == pytest.approx(expect, abs=1e-4)
    json.dumps(ranking.extra, allow_nan=False)  # storable as a teacher record


def test_unseen_identifiers_rank_below_in_input_order(smol_tokenizer):
    backend = ScriptedBackend(smol_tokenizer, _number, top=3)
    ranking = FirstReranker(backend, window=6, step=6, max_doc_tokens=None).rerank(QUERY, _docs(6))
    assert ranking.docids == ["d5", "d4", "d3", "d0", "d1", "d2"]
    assert ranking.cost["first_unseen"] == 3
    assert ranking.extra["windows"][0]["logprobs"][:3] == [None, None, None]


def test_number_identifiers_that_are_not_one_token_fail_before_scoring(smol_tokenizer):
    backend = ScriptedBackend(smol_tokenizer, _number)
    with pytest.raises(LlmrankError, match="'10' is not one token"):
        FirstReranker(backend, window=12, identifiers="numbers")
    with pytest.raises(LlmrankError, match="identifiers"):
        FirstReranker(backend, identifiers="roman")
    with pytest.raises(LlmrankError, match="not for method .first."):
        build_reranker("first", backend, prompt="rankgpt")


def test_first_on_hf_reads_the_exact_next_token_logits(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrank.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), dtype="float32")
    r = build_reranker("first", backend, window=5, step=5, max_doc_tokens=16)
    docs = _docs(5)
    ranking = r.rerank(QUERY, docs)
    # by hand: the model's log-softmax at the end of the same prompt, at the token of each letter
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompt = r.build_prompt(QUERY.text, [d.contents for d in docs])
    ids = tok.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
        logp = torch.log_softmax(lm(torch.tensor([ids])).logits[0, -1].double(), -1)
    letters = [tok.encode(c, add_special_tokens=False)[0] for c in "ABCDE"]
    expect = logp[letters].numpy()
    assert ranking.extra["windows"][0]["logprobs"] == pytest.approx(expect, abs=1e-4)
    assert ranking.docids == [docs[i].docid for i in np.argsort(-expect, kind="stable")]
    assert ranking.cost["calls"] == 1 and ranking.cost["completion_tokens"] == 0


def test_teacher_file_keeps_windows_and_groups_distil_them(tmp_path, smol_tokenizer):
    from llmrank.teacher import read_teacher_run, run_teacher
    from llmrank.students.examples import build_groups

    docs = _docs(12)
    data = RankingData(name="t", queries={"q1": QUERY}, docs={d.docid: d for d in docs}, qrels={"q1": {"d11": 1}})
    cands = Candidates({"q1": [(d.docid, 0.0) for d in docs]})
    r = FirstReranker(ScriptedBackend(smol_tokenizer, _number), window=8, step=4, max_doc_tokens=None)
    path = tmp_path / "teacher.jsonl"
    run_teacher(r, data, cands, 12, path, progress=False)
    recs = read_teacher_run(path)
    wins = recs["q1"]["extra"]["windows"]
    assert len(wins) == 2 and all(len(w["docids"]) == 8 for w in wins)
    groups = build_groups(data, recs, group_size=4, seed=0)
    assert len(groups) == 2  # one per window
    g = groups[0]  # bottom window shows d4..d11: the two most probable are d11, d10
    assert g["docids"][:2] == ["d11", "d10"] and g["labels"][0] == 1.0
    lp = dict(zip(wins[0]["docids"], wins[0]["logprobs"]))
    assert g["teacher_scores"] == [lp[d] for d in g["docids"]]
