"""Passage scoring (MaxP / FirstP / SumP / mean of the top-k) and the IDCM cascade: windows cut in the
scorer's tokens, aggregation by hand, the selector keeping the windows that match the query, costs per
window, a pointwise scorer giving the same window scores through both paths, recipe validation, and a
dense selector trained on the scorer's window scores."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from llmrank.data.types import Doc, Query
from llmrank.errors import LlmrankError
from llmrank.rerankers.base import Reranker, ranking_from_scores
from llmrank.rerankers.passages import (PassageConfig, PassageReranker, aggregate, check_passage_options,
                                        selector_examples, split_windows)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from llmrank.models import tokenizer_dir

    return AutoTokenizer.from_pretrained(str(tokenizer_dir("smollm2-135m")))


class KeywordScorer(Reranker):
    """Scores a text by how often 'water' occurs in it; records every text it was shown."""

    method = "keyword"

    def __init__(self, tokenizer):
        class B:  # the scorer's backend is where passage scoring finds the tokenizer
            pass

        self.backend = B()
        self.backend.tokenizer = tokenizer
        self.seen: list[str] = []

    def rerank(self, query, docs):
        self.seen += [d.contents for d in docs]
        return ranking_from_scores(docs, [d.contents.count("water") for d in docs], cost=Counter(calls=len(docs)))


def _filler(n_words: int, word: str = "stone") -> str:
    return " ".join([word] * n_words)


def test_split_windows_covers_the_document_in_tokens(tok):
    text = " ".join(f"w{i}" for i in range(120))
    ids = tok.encode(text, add_special_tokens=False)
    wins = split_windows(tok, text, 64, 64)
    assert len(wins) == math.ceil(len(ids) / 64)
    assert [i for w in wins for i in tok.encode(w, add_special_tokens=False)] == ids
    half = split_windows(tok, text, 64, 32)
    assert len(half) == math.ceil((len(ids) - 64) / 32) + 1
    assert split_windows(tok, "short text", 64, 64) == ["short text"]
    assert len(split_windows(tok, text, 64, 32, max_passages=2)) == 2


def test_aggregations_by_hand():
    s = [0.2, 0.9, 0.4]
    assert aggregate(s, "max") == 0.9
    assert aggregate(s, "first") == 0.2
    assert aggregate(s, "sum") == pytest.approx(1.5)
    assert aggregate(s, "mean_top_k", k=2) == pytest.approx(0.65)
    assert aggregate([0.3], "mean_top_k", k=2) == pytest.approx(0.3)


def _docs():
    # d0: 'water' only deep in the document (beyond the first window); d1: 'water' once at the head
    d0 = Doc("d0", _filler(100) + " water water water " + _filler(100))
    d1 = Doc("d1", "water " + _filler(250))
    d2 = Doc("d2", _filler(40))
    return [d0, d1, d2]


def test_maxp_finds_what_head_truncation_misses(tok):
    q = Query("q", "water")
    first = PassageReranker(KeywordScorer(tok), {"tokens": 64, "aggregate": "first"}).rerank(q, _docs())
    maxp = PassageReranker(KeywordScorer(tok), {"tokens": 64, "aggregate": "max"}).rerank(q, _docs())
    assert first.docids[0] == "d1" and dict(zip(first.docids, first.scores))["d0"] == 0
    assert maxp.docids[0] == "d0" and dict(zip(maxp.docids, maxp.scores))["d0"] == 3
    assert first.cost["passages_scored"] == 3  # FirstP scores one window per document
    n = sum(len(split_windows(tok, d.contents, 64, 64)) for d in _docs())
    assert maxp.cost["passages_scored"] == n == maxp.cost["passages_total"]
    summed = PassageReranker(KeywordScorer(tok), {"tokens": 64, "aggregate": "sum"}).rerank(q, _docs())
    assert dict(zip(summed.docids, summed.scores)) == {"d0": 3, "d1": 1, "d2": 0}


def test_idcm_scores_only_the_selected_windows(tok):
    q = Query("q", "water")
    scorer = KeywordScorer(tok)
    idcm = PassageReranker(scorer, {"tokens": 64, "select": 1, "selector": "bm25"})
    r = idcm.rerank(q, _docs())
    assert r.docids[0] == "d0" and dict(zip(r.docids, r.scores))["d0"] == 3
    assert r.cost["passages_scored"] == 3  # one window per document reached the scorer
    assert r.cost["selector_passages"] == r.cost["passages_total"] > 3
    assert len(scorer.seen) == 3 and all("water" in t for t in scorer.seen[:2])
    p = r.extra["passages"]["d0"]
    assert p["index"] == [int(np.argmax(p["selector"]))] and p["windows"] == len(p["selector"])


def test_idcm_keep_first_always_reads_the_head_and_selects_the_rest(tok):
    q = Query("q", "water")
    # one window per document: d0's 'water' is deep, so keeping its head leaves nothing for the selector
    one = PassageReranker(KeywordScorer(tok), {"tokens": 64, "select": 1, "keep_first": True}).rerank(q, _docs())
    assert one.extra["passages"]["d0"]["index"] == [0] and dict(zip(one.docids, one.scores))["d0"] == 0
    assert one.docids[0] == "d1"
    # two: the head and the selector's best other window, in document order
    two = PassageReranker(KeywordScorer(tok), {"tokens": 64, "select": 2, "keep_first": True}).rerank(q, _docs())
    p = two.extra["passages"]["d0"]
    best_other = 1 + int(np.argmax(p["selector"][1:]))
    assert p["index"] == [0, best_other] and p["scores"] == [0, 3] and two.docids[0] == "d0"
    assert two.cost["passages_scored"] == 2 + 2 + 1  # d2 is one window
    assert "keep_first" in PassageReranker(KeywordScorer(tok), {"select": 2, "keep_first": True}).cache_key["passages"]
    assert "keep_first" not in PassageReranker(KeywordScorer(tok), {"select": 2}).cache_key["passages"]


def test_pointwise_window_scores_equal_scoring_the_windows_directly(tiny_model_dir, tok):
    from llmrank.backends.hf import HFBackend
    from llmrank.rerankers import build_reranker
    from llmrank.rerankers.pointwise import PointwiseReranker

    backend = HFBackend(str(tiny_model_dir), dtype="float32")
    wrapped = build_reranker("pointwise", backend, max_doc_tokens=64, passages={"tokens": 48, "aggregate": "max"})
    assert isinstance(wrapped, PassageReranker)
    q = Query("q", "water")
    docs = _docs()
    r = wrapped.rerank(q, docs)
    plain = PointwiseReranker(backend, max_doc_tokens=64)
    for d in docs:
        direct = plain.score(q.text, split_windows(tok, d.contents, 48, 48))
        assert dict(zip(r.docids, r.scores))[d.docid] == pytest.approx(float(direct.max()), abs=1e-6)
        assert r.extra["passages"][d.docid]["scores"] == pytest.approx(list(direct), abs=1e-5)
    with pytest.raises(LlmrankError, match="cut again"):
        build_reranker("pointwise", backend, max_doc_tokens=32, passages={"tokens": 48})
    with pytest.raises(LlmrankError, match="does not score documents one by one"):
        build_reranker("listwise", backend, passages={"tokens": 48})


@pytest.mark.parametrize("opts,key", [({"tokens": 4}, "tokens"), ({"aggregate": "median"}, "aggregate"),
                                      ({"tokens": 64, "stride": 80}, "stride"), ({"select": 0}, "select"),
                                      ({"selector": "splade"}, "selector"), ({"windows": 3}, "windows"),
                                      ({"aggregate": "first", "select": 2}, "select"),
                                      ({"keep_first": True}, "keep_first"), ({"keep_first": "yes", "select": 2}, "keep_first")])
def test_bad_passage_options_name_the_key(opts, key):
    problems = check_passage_options(opts)
    assert problems and problems[0][0] == key


def test_recipe_validates_passage_options_at_load(tmp_path):
    from llmrank.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("name: t\ndata: {dataset: /x}\nteacher:\n  method: pointwise\n  model: smollm2-135m\n"
                    "  options: {passages: {tokens: 64, aggregate: median}}\n")
    with pytest.raises(LlmrankError, match=r"teacher\.options\.passages\.aggregate.*one of max"):
        load_recipe(path)
    path.write_text("name: t\ndata: {dataset: /x}\nteacher:\n  method: listwise\n  model: smollm2-135m\n"
                    "  options: {passages: {tokens: 64}}\n")
    with pytest.raises(LlmrankError, match="does not score documents one by one"):
        load_recipe(path)


def test_dense_selector_learns_the_scorers_window_preferences(tok):
    """The IDCM hook: window scores of a scorer run without select become examples; distilling them into
    the MiniLM selector moves its window distribution toward the scorer's."""
    import torch

    from llmrank.rerankers.passages import DenseSelector, distill_selector

    selector = DenseSelector("minilm-l6")
    cfg = PassageConfig(tokens=16)
    # the scorer (keyword count) prefers the window about water; MiniLM starts out indifferent-ish
    docs = {f"d{i}": Doc(f"d{i}", f"the cat sat on the mat number {i} today " * 2 + "water boils fast " * 5)
            for i in range(4)}
    queries = {"q": Query("q", "quick facts")}
    r = PassageReranker(KeywordScorer(tok), cfg).rerank(queries["q"], list(docs.values()))
    examples = selector_examples({"q": r}, queries, docs, tok, cfg)
    assert len(examples) == 4 and all(len(e["passages"]) >= 2 for e in examples)

    def agreement():  # probability mass the selector puts on the scorer's best window, mean over docs
        out = []
        for e in examples:
            s = torch.softmax(torch.tensor(20 * selector.score(e["query"], e["passages"])), 0)
            out.append(float(s[int(np.argmax(e["scores"]))]))
        return sum(out) / len(out)

    before = agreement()
    losses = distill_selector(selector, examples, epochs=4, lr=1e-4, batch_size=4)
    assert losses[-1] < losses[0]
    assert agreement() > before


def test_bench_summary_keeps_a_share_only_of_a_real_gain():
    """eval/bench_passages.py's summary: with MaxP below head (the measured SciFact rows) no share of the gain is
    given (it printed 1533% before); with a gain, the share and cost fractions by hand."""
    from eval.bench_passages import summarize

    def row(ndcg, windows, tokens, seconds):
        return {"ndcg@10": ndcg, "passages_scored_per_query": windows, "prompt_tokens_per_query": tokens,
                "seconds_per_query": seconds}

    measured = {"head": row(0.7135, 20, 2615, 5.83), "maxp": row(0.7074, 121.7, 15357, 39.81),
                "idcm": row(0.6200, 40, 5127, 18.52)}
    s = summarize(measured)
    assert s["gain_kept"] is None and s["maxp_gain"] == pytest.approx(-0.0061)
    assert s["idcm_gain"] == pytest.approx(-0.0935)
    assert s["passages_fraction"] == pytest.approx(40 / 121.7) and s["seconds_fraction"] == pytest.approx(18.52 / 39.81)
    gained = {"head": row(0.50, 20, 2000, 4.0), "maxp": row(0.60, 100, 10000, 20.0), "idcm": row(0.58, 40, 4000, 9.0)}
    s = summarize(gained)
    assert s["gain_kept"] == pytest.approx(0.8) and s["tokens_fraction"] == pytest.approx(0.4)
    assert summarize({"head": gained["head"], "maxp": gained["maxp"]}) == {}
