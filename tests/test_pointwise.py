"""The hf backend and the pointwise reranker: scores equal a plain full forward pass, whatever the
batching or prefix reuse; prompts, truncation and bad input behave as documented."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmrank.backends.base import label_token_ids, two_way
from llmrank.backends.hf import HFBackend
from llmrank.data.types import Doc, Query
from llmrank.errors import LlmrankError
from llmrank.prompts import load_prompt
from llmrank.rerankers.pointwise import PointwiseReranker, build_pointwise_prompt

QUERY = "what is the boiling point of water"
DOCS = [f"document {i}: " + "water boils at one hundred degrees " * (i + 1) for i in range(7)]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(str(tiny_model_dir), batch_size=3, prefix_reuse=True)


def reference_p_yes(backend, prompt: str, variants: bool = True) -> float:
    """P(yes)/(P(yes)+P(no)) from a plain full forward pass over the whole prompt."""
    tok = backend.tokenizer
    ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
    with torch.no_grad():
        logp = backend.lm(input_ids=ids).logits[0, -1].float().log_softmax(-1)
    y = torch.logsumexp(logp[label_token_ids(tok, "yes", variants)], 0).item()
    n = torch.logsumexp(logp[label_token_ids(tok, "no", variants)], 0).item()
    return 1.0 / (1.0 + np.exp(n - y))


def test_scores_equal_full_forward_with_and_without_prefix_reuse(backend, tiny_model_dir):
    reranker = PointwiseReranker(backend)
    scores = reranker.score(QUERY, DOCS)
    assert backend.stats["prefix_tokens_saved"] > 0  # the shared prefix was really reused
    plain = PointwiseReranker(HFBackend(str(tiny_model_dir), batch_size=1, prefix_reuse=False)).score(QUERY, DOCS)
    prompts, _ = reranker.prompts_for(QUERY, DOCS)
    ref = [reference_p_yes(backend, p) for p in prompts]
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    np.testing.assert_allclose(plain, ref, atol=1e-5)


def test_single_token_pair_is_sigmoid_of_logit_difference(backend):
    reranker = PointwiseReranker(backend, variants=False)
    prompts, _ = reranker.prompts_for(QUERY, DOCS[:3])
    np.testing.assert_allclose(reranker.score(QUERY, DOCS[:3]), [reference_p_yes(backend, p, False) for p in prompts], atol=1e-5)
    assert len(label_token_ids(backend.tokenizer, "yes", variants=False)) == 1
    assert len(label_token_ids(backend.tokenizer, "yes", variants=True)) > 1  # yes, Yes, " yes", " Yes"


def test_rerank_orders_by_score_and_counts_cost(backend):
    reranker = PointwiseReranker(backend)
    docs = [Doc(str(i), t) for i, t in enumerate(DOCS)]
    ranking = reranker.rerank(Query("q", QUERY), docs)
    assert sorted(ranking.docids) == [d.docid for d in docs]
    assert ranking.scores == sorted(ranking.scores, reverse=True)
    assert ranking.cost["calls"] == len(docs) and ranking.cost["prompt_tokens"] > 0
    direct = reranker.score(QUERY, DOCS)
    assert ranking.docids[0] == str(int(np.argmax(direct)))


def test_graded_prompt_gives_expected_grade(backend):
    reranker = PointwiseReranker(backend, "graded")
    lp = backend.label_logprobs(reranker.prompts_for(QUERY, DOCS[:2])[0], ["0", "1", "2", "3"])
    p = np.exp(lp - lp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = p @ np.arange(4)
    np.testing.assert_allclose(reranker.score(QUERY, DOCS[:2]), expected, atol=1e-9)
    assert ((expected >= 0) & (expected <= 3)).all()


def test_long_document_truncated_from_the_document_side(backend):
    prompt = load_prompt("yes_no")
    long_doc = "alpha beta gamma " * 400
    text, truncated = build_pointwise_prompt(prompt, backend.tokenizer, QUERY, long_doc, max_doc_tokens=50)
    assert truncated and QUERY in text and text.rstrip().endswith("assistant")
    assert "Does the document answer the query?" in text
    short, truncated2 = build_pointwise_prompt(prompt, backend.tokenizer, QUERY, "short", max_doc_tokens=50)
    assert not truncated2
    ranking = PointwiseReranker(backend, max_doc_tokens=50).rerank(Query("q", QUERY), [Doc("a", long_doc), Doc("b", "short")])
    assert ranking.cost["truncated_docs"] == 1


def test_two_way_handles_missing_labels():
    out = two_way(np.array([-1.0, -np.inf, -np.inf]), np.array([-2.0, -1.0, -np.inf]))
    assert out[0] == pytest.approx(1 / (1 + np.exp(-1.0)))
    assert out[1] == 0.0 and out[2] == 0.5


def test_users_prompt_file_and_bad_prompt_files(tmp_path, backend):
    good = tmp_path / "mine.yaml"
    good.write_text('name: mine\nmethod: pointwise\ntemplate: "Q: {{ query }} D: {{ document }} Relevant?"\n'
                    'answers: {"yes": "yes", "no": "no"}\n')
    reranker = PointwiseReranker(backend, str(good))
    assert "Q: " + QUERY in reranker.prompts_for(QUERY, ["x"])[0][0]
    missing = tmp_path / "missing.yaml"
    missing.write_text("name: x\nmethod: pointwise\n")
    with pytest.raises(LlmrankError, match=r"missing.yaml: missing required key 'template'"):
        load_prompt(str(missing))
    unquoted = tmp_path / "bool.yaml"
    unquoted.write_text('name: b\nmethod: pointwise\ntemplate: "{{ query }}"\nanswers: {yes: "yes", no: "no"}\n')
    with pytest.raises(LlmrankError, match="quoted strings"):
        load_prompt(str(unquoted))
    typo = tmp_path / "typo.yaml"
    typo.write_text('name: t\nmethod: pointwise\ntemplate: "{{ query }}"\nanwsers: {}\n')
    with pytest.raises(LlmrankError, match="unknown key 'anwsers'"):
        load_prompt(str(typo))
    with pytest.raises(LlmrankError, match="not found"):
        load_prompt("no_such_prompt")


def test_unknown_model_alias_lists_known_ones():
    from llmrank.models import prepare_model

    with pytest.raises(LlmrankError, match="smollm2-135m"):
        prepare_model("smollm9-1t")


def test_rerank_cli_refuses_a_query_with_no_candidates_before_scoring(tmp_path, tiny_model_dir, capsys):
    """A query without candidate documents is named by file:line and qid; nothing is scored or written."""
    from llmrank.cli import main

    data = tmp_path / "mine.jsonl"
    rows = [{"qid": "q1", "query": QUERY, "docs": [{"docid": f"d{i}", "text": t, "label": int(i == 2)} for i, t in enumerate(DOCS)]},
            {"qid": "q2", "query": "empty one", "docs": []}]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run.trec"
    rc = main(["rerank", str(data), "--model", str(tiny_model_dir), "--top-k", "5", "-o", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{data}:2" in err and "'docs' is an empty list" in err and "'q2'" in err
    assert not out.exists()


def test_rerank_cli_end_to_end_keeps_the_tail_in_first_stage_order(tmp_path, tiny_model_dir):
    from llmrank.cli import main

    data = tmp_path / "mine.jsonl"
    rows = [{"qid": "q1", "query": QUERY, "docs": [{"docid": f"d{i}", "text": t, "label": int(i == 2)} for i, t in enumerate(DOCS)]}]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run.trec"
    rc = main(["rerank", str(data), "--model", str(tiny_model_dir), "--top-k", "5", "-o", str(out)])
    assert rc == 0
    lines = out.read_text().splitlines()
    assert len(lines) == len(DOCS)  # top-5 reranked + the tail
    assert {ln.split()[2] for ln in lines} == {f"d{i}" for i in range(len(DOCS))}
    assert [ln.split()[2] for ln in lines][5:] == ["d5", "d6"]  # the tail keeps first-stage order


@pytest.mark.slow
def test_real_smollm2_pointwise_on_dl19(smollm2_dir):
    """Bounded: 2 DL19 queries × top-5 on the real model; a valid run whose scores are probabilities."""
    from llmrank.data import load_dataset
    from llmrank.rerankers.pointwise import PointwiseReranker

    from tests.test_real_data import DATA

    path = DATA / "trec-dl19" / "bm25_top100.json"
    if not path.is_file():
        pytest.skip("no ../shared/data")
    data = load_dataset(path).first_queries(2)
    reranker = PointwiseReranker(HFBackend(str(smollm2_dir), dtype="bfloat16"))
    run, rankings = reranker.rerank_all(data, data.candidates, top_k=5, progress=False)
    for qid in data.queries:
        assert sorted(run.docids(qid)) == sorted(data.candidates.docids(qid))
        assert all(0.0 <= s <= 1.0 for s in rankings[qid].scores)


def test_documents_cut_in_one_call_equal_documents_cut_one_by_one(backend):
    from llmrank.rerankers.pointwise import truncate_document, truncate_documents

    docs = ["short", "", "word " * 300, "Ünïcödé text, with punctuation; " * 20, "exactly ten " * 5]
    for n in (None, 1, 10, 64, 1000):
        assert truncate_documents(backend.tokenizer, docs, n) == [truncate_document(backend.tokenizer, d, n) for d in docs]
    cut = truncate_documents(backend.tokenizer, docs, 10)
    assert [c for _, c in cut] == [False, False, True, True, True]
    assert len(backend.tokenizer.encode(cut[2][0], add_special_tokens=False)) <= 10
    assert truncate_documents(backend.tokenizer, [], 10) == []
