"""Pairwise (PRP), listwise (RankGPT) and setwise rerankers, and the permutation parser.

Two kinds of backend: the tiny random Llama (real prompts, real tokenizer, real HFBackend: the outputs
are noise, so only validity and bookkeeping are checked) and small test doubles of the ``Backend``
protocol whose answers follow the documents' content, so the sorting logic can be checked exactly.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmrank.backends.base import Backend, Generation, GenerationParams
from llmrank.data.types import Doc, Query
from llmrank.rerankers import RERANKERS, build_reranker
from llmrank.rerankers.listwise import ListwiseReranker, sliding_windows
from llmrank.rerankers.pairwise import PairwiseReranker, heap_top_k, parse_choice
from llmrank.rerankers.permutation import is_permutation, parse_permutation
from llmrank.rerankers.setwise import SetwiseReranker

TINY_SOURCE = Path("/tmp/tiny")

# ------------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _tiny_dir(request, tmp_path_factory) -> Path:
    """The shared ``tiny_model_dir`` fixture when conftest has it; otherwise a 2-layer random Llama with
    the SmolLM2 tokenizer copied from /tmp/tiny (a fallback kept local to this file)."""
    try:
        return Path(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        pass
    if not (TINY_SOURCE / "tokenizer.json").is_file():
        pytest.skip("no tiny_model_dir fixture and no tokenizer at /tmp/tiny")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (TINY_SOURCE / name).is_file():
            shutil.copy(TINY_SOURCE / name, out / name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=2048,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_backend(_tiny_dir):
    pytest.importorskip("llmrank.models", reason="HFBackend needs llmrank.models (resolve_model)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrank.backends.hf import HFBackend

    tok = AutoTokenizer.from_pretrained(_tiny_dir)
    lm = AutoModelForCausalLM.from_pretrained(_tiny_dir)
    return HFBackend(str(_tiny_dir), model_obj=lm, tokenizer=tok, device="cpu", batch_size=32)


QUERY = Query("q1", "what is the boiling point of water")
DOCS = [
    Doc("d0", "Water boils at 100 degrees Celsius at sea level."),
    Doc("d1", "The Eiffel Tower is in Paris."),
    Doc("d2", "At higher altitude water boils at a lower temperature.", title="Boiling"),
    Doc("d3", "Cats sleep for most of the day."),
    Doc("d4", "The boiling point depends on pressure."),
    Doc("d5", "Ice melts at zero degrees."),
    Doc("d6", "Pasta is cooked in boiling water."),
]


# ------------------------------------------------------------------------------------------------------
# test doubles of the Backend protocol
# ------------------------------------------------------------------------------------------------------
_PASSAGE = re.compile(r'Passage ([A-Z]): "(.*?)"')


def relevance(text: str) -> int:
    return text.count("relevant")


class ContentBackend(Backend):
    """Answers from the passages' content: the one saying "relevant" most often wins. ``a_bias`` adds
    log-odds to the label "A" (a position-biased judge)."""

    name = "content"

    def __init__(self, a_bias: float = 0.0):
        super().__init__("content-double")
        self.a_bias = a_bias
        self.prompts: list[str] = []

    def _passages(self, prompt: str) -> dict[str, str]:
        return dict(_PASSAGE.findall(prompt))

    def label_logprobs(self, prompts, labels, variants=True):
        out = np.empty((len(prompts), len(labels)))
        for r, p in enumerate(prompts):
            self.prompts.append(p)
            passages = self._passages(p)
            logits = np.array([2.0 * relevance(passages.get(lab, "")) + (self.a_bias if lab == "A" else 0.0)
                               for lab in labels])
            out[r] = logits - np.log(np.exp(logits).sum() + 1.0)  # some mass left for other tokens
        self.stats["calls"] += len(prompts)
        self.stats["prompt_tokens"] += sum(len(p) // 4 for p in prompts)
        return out

    def generate(self, prompts, params=None):
        gens = []
        for p in prompts:
            self.prompts.append(p)
            passages = self._passages(p)
            best = max(passages, key=lambda lab: relevance(passages[lab])) if passages else ""
            gens.append(Generation(f"Passage {best}", len(p) // 4, 2))
        self.stats["calls"] += len(prompts)
        self.stats["completion_tokens"] += 2 * len(prompts)
        return gens


class GenerateOnlyBackend(ContentBackend):
    """A backend with no logits (an API that only generates)."""

    def label_logprobs(self, prompts, labels, variants=True):
        raise NotImplementedError


class ScriptedBackend(Backend):
    """``generate`` returns the given strings in turn (the last one again when they run out)."""

    name = "scripted"

    def __init__(self, outputs: list[str]):
        super().__init__("scripted-double")
        self.outputs = list(outputs)
        self.prompts: list[str] = []
        self.params: list[GenerationParams] = []

    def label_logprobs(self, prompts, labels, variants=True):
        raise NotImplementedError

    def generate(self, prompts, params=None):
        out = []
        for p in prompts:
            self.prompts.append(p)
            self.params.append(params)
            text = self.outputs.pop(0) if len(self.outputs) > 1 else self.outputs[0]
            out.append(Generation(text, len(p) // 4, len(text) // 4))
        self.stats["calls"] += len(prompts)
        return out


# relevance counts 1, 0, 3, 5, 2, 4, 6: the true order is g6 g3 g5 g2 g4 g0 g1
GRADED = [Doc(f"g{i}", " ".join(["relevant"] * r + ["text"])) for i, r in enumerate([1, 0, 3, 5, 2, 4, 6])]
TRUE_ORDER = ["g6", "g3", "g5", "g2", "g4", "g0", "g1"]


# ------------------------------------------------------------------------------------------------------
# every method on the tiny model: a valid permutation, cost counted
# ------------------------------------------------------------------------------------------------------
CONFIGS = [
    ("pairwise", {"strategy": "allpair"}),
    ("pairwise", {"strategy": "heapsort", "top_k": 3}),
    ("pairwise", {"strategy": "bubble", "top_k": 3}),
    ("pairwise", {"strategy": "heapsort", "use_logits": False, "max_tokens": 3}),
    ("setwise", {"strategy": "heapsort", "top_k": 3}),
    ("setwise", {"strategy": "bubble", "top_k": 3, "set_size": 3}),
    ("setwise", {"strategy": "heapsort", "use_logits": False, "max_tokens": 3}),
    ("listwise", {"window": 4, "step": 2, "max_tokens": 12}),
    ("listwise", {"max_tokens": 20}),
]


@pytest.mark.parametrize("method,options", CONFIGS, ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for m, o in CONFIGS])
def test_methods_return_a_permutation_on_the_tiny_model(tiny_backend, method, options):
    reranker = build_reranker(method, tiny_backend, **options)
    ranking = reranker.rerank(QUERY, DOCS)
    assert sorted(ranking.docids) == sorted(d.docid for d in DOCS)
    assert len(ranking.scores) == len(DOCS)
    assert all(a >= b for a, b in zip(ranking.scores, ranking.scores[1:]))
    assert ranking.cost["calls"] > 0 and ranking.cost["prompt_tokens"] > 0 and ranking.cost["seconds"] > 0
    key = reranker.cache_key
    assert key["method"] == method and key["model"] == tiny_backend.model and "@" in key["prompt"]
    if method != "listwise":
        assert ranking.cost["comparisons"] > 0
    if method == "pairwise":
        assert ranking.cost["calls"] == 2 * ranking.cost["comparisons"]
        assert 0.0 <= ranking.extra["a_rate"] <= 1.0 and 0.0 <= ranking.extra["inconsistent"] <= 1.0
    if method == "listwise":
        assert ranking.cost["windows"] == len(sliding_windows(len(DOCS), reranker.window, reranker.step))


def test_sort_strategies_score_top_k_then_input_order(tiny_backend):
    ranking = PairwiseReranker(tiny_backend, strategy="heapsort", top_k=2).rerank(QUERY, DOCS)
    assert ranking.scores == [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    rest = [d.docid for d in DOCS if d.docid not in ranking.docids[:2]]
    assert ranking.docids[2:] == rest


@pytest.mark.parametrize("use_logits", [True, False])
def test_pairwise_preferences_are_exactly_symmetric(tiny_backend, use_logits):
    reranker = PairwiseReranker(tiny_backend, use_logits=use_logits, max_tokens=3)
    P = reranker.preference_matrix(QUERY, DOCS)
    assert P.shape == (7, 7)
    assert np.all(P + P.T == 1.0)
    assert np.all((P >= 0) & (P <= 1))


def test_pairwise_prompts_show_each_pair_in_both_orders(tiny_backend):
    before = tiny_backend.stats["calls"]
    PairwiseReranker(tiny_backend).preference_matrix(QUERY, DOCS[:3])
    assert tiny_backend.stats["calls"] - before == 6  # 3 pairs x 2 orders


# ------------------------------------------------------------------------------------------------------
# pairwise on the content double
# ------------------------------------------------------------------------------------------------------
def test_pairwise_allpair_recovers_the_order_and_counts_comparisons():
    backend = ContentBackend()
    ranking = PairwiseReranker(backend, strategy="allpair").rerank(QUERY, GRADED)
    n = len(GRADED)
    assert ranking.docids == TRUE_ORDER
    assert ranking.scores == sorted(ranking.scores, reverse=True)
    assert ranking.cost["comparisons"] == n * (n - 1) // 2
    assert ranking.cost["calls"] == n * (n - 1)
    assert len(set(backend.prompts)) == len(backend.prompts) == n * (n - 1)
    assert ranking.extra["a_rate"] == 0.5  # the double has no position bias...
    assert ranking.extra["inconsistent"] == 0.0  # ...so both orders always agree
    # expected wins: the best document beats all 6 others, the closest (5 vs 6 mentions) with p = sigmoid(2)
    expected = sum(1 / (1 + np.exp(-2.0 * (6 - r))) for r in [1, 0, 3, 5, 2, 4])
    assert ranking.scores[0] == pytest.approx(expected)


@pytest.mark.parametrize("strategy", ["heapsort", "bubble"])
@pytest.mark.parametrize("use_logits", [True, False])
def test_pairwise_sorts_put_the_true_top3_first(strategy, use_logits):
    backend = ContentBackend()
    ranking = PairwiseReranker(backend, strategy=strategy, top_k=3, use_logits=use_logits).rerank(QUERY, GRADED)
    assert ranking.docids[:3] == TRUE_ORDER[:3]
    assert sorted(ranking.docids) == sorted(d.docid for d in GRADED)
    # never a pair asked twice: every prompt sent is new
    assert len(set(backend.prompts)) == len(backend.prompts) == 2 * ranking.cost["comparisons"]
    assert ranking.cost["comparisons"] < 21  # fewer than allpair for top-3
    if strategy == "bubble":
        # 3 passes over 6, 5, 4 adjacent pairs; pairs seen in an earlier pass come from the cache
        assert ranking.cost["comparisons"] + ranking.cost["cache_hits"] == 6 + 5 + 4
        assert ranking.cost["cache_hits"] > 0


def test_pairwise_full_heapsort_sorts_everything():
    ranking = PairwiseReranker(ContentBackend(), strategy="heapsort", top_k=100).rerank(QUERY, GRADED)
    assert ranking.docids == TRUE_ORDER


def test_pairwise_position_bias_is_reported_and_cancelled():
    # a judge that always says "A" no matter the passages: every preference is 0.5, the input order stays
    backend = ContentBackend(a_bias=50.0)
    docs = [Doc(f"x{i}", "same text") for i in range(5)]
    ranking = PairwiseReranker(backend).rerank(QUERY, docs)
    assert ranking.extra["a_rate"] == 1.0
    assert ranking.extra["inconsistent"] == 1.0
    assert ranking.docids == [d.docid for d in docs]
    assert set(ranking.scores) == {2.0}
    # a bias stronger than the closest pairs' evidence (log-odds 3 vs 2) flips those pairs' single-order
    # answers, but averaging both orders keeps every winner
    ranking = PairwiseReranker(ContentBackend(a_bias=3.0)).rerank(QUERY, GRADED)
    assert ranking.docids == TRUE_ORDER
    assert ranking.extra["a_rate"] > 0.5 and ranking.extra["inconsistent"] > 0.0


def test_pairwise_falls_back_to_generation_and_counts_unparseable():
    ranking = PairwiseReranker(GenerateOnlyBackend()).rerank(QUERY, GRADED)
    assert ranking.docids == TRUE_ORDER
    scripted = ScriptedBackend(["I am not sure."])
    ranking = PairwiseReranker(scripted, strategy="allpair").rerank(QUERY, GRADED[:3])
    assert ranking.cost["unparseable"] == 6
    assert ranking.docids == [d.docid for d in GRADED[:3]]  # no information: input order


def test_parse_choice():
    assert parse_choice("A", ["A", "B"]) == 0
    assert parse_choice("Passage B is more relevant", ["A", "B"]) == 1
    assert parse_choice(" B.", ["A", "B"]) == 1
    assert parse_choice("According to a passage, B", ["A", "B"]) == 1  # 'a' and 'According' are not answers
    assert parse_choice("neither", ["A", "B"]) is None
    assert parse_choice("", ["A", "B"]) is None
    assert parse_choice("Passage C", ["A", "B", "C", "D"]) == 2


@pytest.mark.parametrize("n,k,arity", [(7, 3, 2), (20, 10, 3), (1, 5, 2), (2, 1, 3), (13, 13, 2), (9, 4, 5)])
def test_heap_top_k_sorts_with_any_arity(n, k, arity):
    values = random.Random(n * 31 + k).sample(range(1000), n)

    def best_of(group):
        return max(range(len(group)), key=lambda t: (values[group[t]], -t))

    top = heap_top_k(n, k, arity, best_of)
    assert [values[i] for i in top] == sorted(values, reverse=True)[: min(k, n)]


# ------------------------------------------------------------------------------------------------------
# setwise on the content double
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["heapsort", "bubble"])
@pytest.mark.parametrize("set_size", [2, 3, 4])
@pytest.mark.parametrize("use_logits", [True, False])
def test_setwise_picks_the_true_top3(strategy, set_size, use_logits):
    backend = ContentBackend()
    reranker = SetwiseReranker(backend, strategy=strategy, set_size=set_size, top_k=3, use_logits=use_logits)
    ranking = reranker.rerank(QUERY, GRADED)
    assert ranking.docids[:3] == TRUE_ORDER[:3]
    assert sorted(ranking.docids) == sorted(d.docid for d in GRADED)
    assert ranking.cost["comparisons"] == ranking.cost["calls"] == len(backend.prompts)
    assert 0.0 <= ranking.extra["first_rate"] <= 1.0
    for p in backend.prompts:
        assert 2 <= len(_PASSAGE.findall(p)) <= set_size


def test_setwise_bigger_sets_need_fewer_comparisons():
    counts = {c: SetwiseReranker(ContentBackend(), set_size=c, top_k=3).rerank(QUERY, GRADED).cost["comparisons"]
              for c in (2, 4)}
    assert counts[4] < counts[2]


def test_setwise_full_sort_and_generation_fallback():
    assert SetwiseReranker(ContentBackend(), top_k=7).rerank(QUERY, GRADED).docids == TRUE_ORDER
    assert SetwiseReranker(GenerateOnlyBackend(), top_k=7, strategy="bubble").rerank(QUERY, GRADED).docids == TRUE_ORDER
    # an answer with no letter keeps the first passage of the set: bubble passes then move nothing
    ranking = SetwiseReranker(ScriptedBackend(["?"]), top_k=3, strategy="bubble").rerank(QUERY, GRADED)
    assert ranking.cost["unparseable"] == ranking.cost["comparisons"] > 0
    assert ranking.docids == [d.docid for d in GRADED]
    assert ranking.extra["first_rate"] == 1.0


def test_setwise_rejects_bad_options():
    with pytest.raises(ValueError):
        SetwiseReranker(ContentBackend(), set_size=1)
    with pytest.raises(ValueError):
        SetwiseReranker(ContentBackend(), strategy="allpair")
    with pytest.raises(ValueError):
        PairwiseReranker(ContentBackend(), strategy="quicksort")


# ------------------------------------------------------------------------------------------------------
# listwise with scripted outputs
# ------------------------------------------------------------------------------------------------------
def test_sliding_windows_from_the_bottom():
    assert sliding_windows(20, 20, 10) == [(0, 20)]
    assert sliding_windows(20, 10, 5) == [(10, 20), (5, 15), (0, 10)]
    assert sliding_windows(7, 4, 2) == [(3, 7), (1, 5), (0, 3)]
    assert sliding_windows(100, 20, 10) == [(80 - 10 * i, 100 - 10 * i) for i in range(9)]
    assert sliding_windows(5, 20, 10) == [(0, 5)]
    assert sliding_windows(1, 20, 10) == []


def test_listwise_single_window_applies_the_permutation():
    backend = ScriptedBackend(["[3] > [1] > [2] > [7] > [6] > [5] > [4]"])
    ranking = ListwiseReranker(backend).rerank(QUERY, DOCS)
    assert ranking.docids == ["d2", "d0", "d1", "d6", "d5", "d4", "d3"]
    assert ranking.scores == [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert ranking.cost["windows"] == 1 and ranking.cost["calls"] == 1
    assert not any(k.startswith("repair_") for k in ranking.cost)
    prompt = backend.prompts[0]
    assert all(f"[{i}] " in prompt for i in range(1, 8)) and "[8]" not in prompt
    assert QUERY.text in prompt
    assert backend.params[0].max_tokens == 5 * 7 + 8


def test_listwise_truncated_and_messy_outputs_are_repaired():
    ranking = ListwiseReranker(ScriptedBackend(["[3] > [1] > ["])).rerank(QUERY, DOCS)
    assert ranking.docids == ["d2", "d0", "d1", "d3", "d4", "d5", "d6"]
    assert ranking.cost["repair_missing"] == 5 and ranking.cost["repair_truncated"] == 1
    assert ranking.cost["repaired_windows"] == 1

    ranking = ListwiseReranker(ScriptedBackend(["Sure! The ranking is:\n[2] > [2] > [12] > [1]\nHope it helps."])).rerank(QUERY, DOCS)
    assert ranking.docids == ["d1", "d0", "d2", "d3", "d4", "d5", "d6"]
    assert ranking.cost["repair_duplicate"] == 1 and ranking.cost["repair_out_of_range"] == 1
    assert ranking.cost["repair_missing"] == 5

    ranking = ListwiseReranker(ScriptedBackend([""])).rerank(QUERY, DOCS)
    assert ranking.docids == [d.docid for d in DOCS]
    assert ranking.cost["repair_unparseable"] == 1


def test_listwise_sliding_window_moves_the_best_to_the_top():
    # every window answers "reverse the order": windows (3,7), (1,5), (0,3) over d0..d6
    backend = ScriptedBackend(["[4] > [3] > [2] > [1]", "[4] > [3] > [2] > [1]", "[3] > [2] > [1]"])
    ranking = ListwiseReranker(backend, window=4, step=2).rerank(QUERY, DOCS)
    order = list(range(7))
    for start, end in [(3, 7), (1, 5), (0, 3)]:
        order[start:end] = order[start:end][::-1]
    assert ranking.docids == [f"d{i}" for i in order]
    assert ranking.cost["windows"] == 3
    assert [len(re.findall(r"^\[\d+\] ", p, re.M)) for p in backend.prompts] == [4, 4, 3]
    # the second window (positions 1-4) shows the first window's result: d6, moved to position 3, is [3]
    assert "[3] " + DOCS[6].contents in backend.prompts[1]


def test_listwise_passes_repeat_the_sweep():
    ranking = ListwiseReranker(ScriptedBackend(["[2] > [1]"]), window=4, step=2, passes=2).rerank(QUERY, DOCS)
    assert ranking.cost["windows"] == 6
    assert sorted(ranking.docids) == sorted(d.docid for d in DOCS)


# ------------------------------------------------------------------------------------------------------
# the permutation parser
# ------------------------------------------------------------------------------------------------------
HAND_CASES = [
    ("[3] > [1] > [2]", 3, [2, 0, 1], {}),
    ("3 > 1 > 2", 3, [2, 0, 1], {}),
    ("3, 1, 2", 3, [2, 0, 1], {}),
    ("[1] > [1] > [9]", 3, [0, 1, 2], {"duplicate": 1, "out_of_range": 1, "missing": 2}),
    ("", 4, [0, 1, 2, 3], {"unparseable": 1, "missing": 4}),
    ("I cannot rank these passages.", 2, [0, 1], {"unparseable": 1, "missing": 2}),
    (None, 3, [0, 1, 2], {"unparseable": 1, "missing": 3}),
    ("[2] > [3] > [", 4, [1, 2, 0, 3], {"truncated": 1, "missing": 2}),
    ("[3] > [1] > [2] > [1", 3, [2, 0, 1], {"truncated": 1}),
    ("Here are the 3 passages ranked: [2] > [3] > [1]", 3, [1, 2, 0], {}),
    ("[2]\n>\n[1]\n>\n[3]\n", 3, [1, 0, 2], {}),
    ("[0] > [2] > [1]", 2, [1, 0], {"out_of_range": 1}),
    ("[ 2 ] > [ 1 ]", 2, [1, 0], {}),
    ("2 > 1 > 2 > 1", 2, [1, 0], {"duplicate": 2}),
    ("[4] > [2]", 5, [3, 1, 0, 2, 4], {"missing": 3}),
    ("[1] > [2] > [3]", 0, [], {}),
    ("[10] > [2] > [1]", 10, [9, 1, 0, 2, 3, 4, 5, 6, 7, 8], {"missing": 7}),
    ("1. [2]\n2. [1]", 2, [1, 0], {}),
    ("[99999999999999999999999] > [1]", 2, [0, 1], {"out_of_range": 1, "missing": 1}),
    ("Ranking: 2 > 3.5 > 1", 3, [1, 0, 2], {"missing": 1}),
]


@pytest.mark.parametrize("text,n,order,repairs", HAND_CASES)
def test_parse_permutation_hand_written_cases(text, n, order, repairs):
    got_order, got_repairs = parse_permutation(text, n)
    assert got_order == order
    assert dict(got_repairs) == repairs


def _adversarial_strings(rng: random.Random, count: int) -> list[str]:
    pieces = ["[", "]", ">", " > ", ", ", "\n", " ", "[0]", "[-1]", "-", ".", "..", "[[", "]]", "[]", "> >",
              "passage", "Passage [", "\u0663", "\u00b2", "\u2460", "\U0001f600", "\x00", "\t", "[1e3]", "0x10",
              "[007]", "99999999999999999999999999", "3.14", "[ 2 ]", "A", "B", "rank:", "\\[1\\]", "{1}", "(2)"]
    out = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.3:  # well-formed, perhaps shuffled, duplicated, cut off
            n = rng.randint(1, 25)
            ids = rng.sample(range(1, n + 1), n)
            if rng.random() < 0.3:
                ids += rng.choices(range(0, n + 4), k=rng.randint(1, 4))
            text = " > ".join(f"[{i}]" for i in ids)
            out.append(text[: rng.randint(0, len(text))] if rng.random() < 0.5 else text)
        elif kind < 0.6:  # pieces and numbers glued at random
            toks = [rng.choice(pieces) if rng.random() < 0.6 else str(rng.randint(-5, 40)) for _ in range(rng.randint(0, 30))]
            out.append("".join(toks))
        elif kind < 0.8:  # random printable / unicode noise
            out.append("".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 60))))
        else:  # bare-number lists with separators
            sep = rng.choice([", ", " > ", " ", "\n", ";", "->", " >> "])
            out.append(sep.join(str(rng.randint(-3, 30)) for _ in range(rng.randint(0, 25))))
    return out


def test_parse_permutation_fuzz():
    rng = random.Random(20240601)
    strings = _adversarial_strings(rng, 3000) + [None, 123, b"[1] > [2]", "[" * 1000, "]" * 1000, "9" * 5000]
    for text in strings:
        for n in (0, 1, 2, 3, 7, 20, rng.randint(1, 40)):
            order, repairs = parse_permutation(text, n)
            assert is_permutation(order, n), (text, n, order)
            assert all(isinstance(v, int) and v > 0 for v in repairs.values())
            assert set(repairs) <= {"duplicate", "out_of_range", "missing", "unparseable", "truncated"}
            if n and repairs["unparseable"]:
                assert order == list(range(n)) and repairs["missing"] == n
            if n and not repairs["unparseable"]:
                # what was named (valid, first mention) comes first; the missing ones follow in input order
                named = n - repairs["missing"]
                assert order[named:] == sorted(order[named:])


def test_parse_permutation_round_trips_every_permutation_string():
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 30)
        perm = rng.sample(range(n), n)
        style = rng.choice(["[{}]", "{}"])
        sep = rng.choice([" > ", ", ", ">", "\n"])
        text = sep.join(style.format(i + 1) for i in perm)
        order, repairs = parse_permutation(text, n)
        assert order == perm and not repairs


# ------------------------------------------------------------------------------------------------------
# the registry
# ------------------------------------------------------------------------------------------------------
def test_registry_builds_each_method_with_its_default_prompt():
    for method, prompt in [("pairwise", "prp"), ("listwise", "rankgpt"), ("setwise", "setwise")]:
        assert RERANKERS[method][1] == prompt
        reranker = build_reranker(method, ContentBackend())
        assert reranker.method == method
        assert reranker.cache_key["prompt"] == f"{prompt}@1"
