"""``llmrank compare``: significance tests against scipy and hand-computed values, Holm's correction, the
injection attack (only the target's text, only in the attacked run), caching (a second run computes
nothing, a killed run resumes), prompts that declare their methods, the query-likelihood scorer, the
report and its plots, and the recipe's ``compare:`` section. Models: the tiny random Llama."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.eval.significance import holm, paired_randomization_test, paired_t_test, t_sf_two_sided

REPO = Path(__file__).resolve().parents[1]


# -- significance ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_t_test_agrees_with_scipy(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    a = rng.random(12)
    b = a + rng.normal(0.05 * seed, 0.1, 12)
    ref = stats.ttest_rel(a, b)
    t, p = paired_t_test(a, b)
    assert t == pytest.approx(float(ref.statistic), rel=1e-12) and p == pytest.approx(float(ref.pvalue), rel=1e-12)


def test_own_t_distribution_without_scipy_matches_scipy(monkeypatch):
    stats = pytest.importorskip("scipy.stats")
    for t, df in [(0.3, 3), (2.1, 9), (-4.0, 20), (1.0, 1), (0.0, 5)]:
        assert t_sf_two_sided(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9, abs=1e-14)
    rng = np.random.default_rng(7)
    a, b = rng.random(9), rng.random(9)
    ref = stats.ttest_rel(a, b)
    monkeypatch.setitem(sys.modules, "scipy", None)  # `from scipy import stats` now fails: the own path runs
    t, p = paired_t_test(a, b)
    assert t == pytest.approx(float(ref.statistic), rel=1e-10) and p == pytest.approx(float(ref.pvalue), rel=1e-9)


def test_randomization_test_hand_computed():
    # d = (1, 2, -1): the 8 sign flips give sums 2, 4, -2, 0, 0, 2, -4, -2; |sum| >= 2 in 6 of 8
    assert paired_randomization_test([2, 3, 0], [1, 1, 1]) == pytest.approx(6 / 8)
    # d = (3, 1, 2, 2): only the all-plus and all-minus assignments reach |sum| = 8: 2 of 16
    assert paired_randomization_test([3, 1, 2, 2], [0, 0, 0, 0]) == pytest.approx(2 / 16)
    assert paired_randomization_test([1, 2, 3], [1, 2, 3]) == 1.0  # no difference at all


def test_randomization_sampling_approaches_the_exact_test():
    rng = np.random.default_rng(3)
    a, b = rng.random(18), rng.random(18) + 0.1
    exact = paired_randomization_test(a, b, exact_max=18)
    sampled = paired_randomization_test(a, b, n_resamples=20000, exact_max=10, seed=1)
    assert abs(exact - sampled) < 0.015


def test_holm_hand_computed():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, 2*0.03, max(0.06, 1*0.04): back in input order
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_significance_bad_input():
    with pytest.raises(LlmrankError, match="NaN"):
        paired_t_test([1, float("nan")], [1, 2])
    with pytest.raises(LlmrankError, match="one value per query"):
        paired_randomization_test([1, 2], [1])


# -- a tiny dataset -------------------------------------------------------------------------------------

TOPICS = ["aspirin", "malaria", "coffee", "statins"]


def tiny_data() -> RankingData:
    docs, queries, qrels, cands = {}, {}, {}, {}
    for i, t in enumerate(TOPICS):
        ids = []
        for j in range(5):
            did = f"d{i}_{j}"
            text = f"all about {t}: what {t} does and why." if j == 0 else f"notes on {TOPICS[(i + j) % 4]} and other things"
            docs[did] = Doc(did, text)
            ids.append(did)
        queries[f"q{i}"] = Query(f"q{i}", f"what about {t}")
        qrels[f"q{i}"] = {f"d{i}_0": 1, f"d{i}_1": 0, f"d{i}_2": 0}
        cands[f"q{i}"] = [(d, 5.0 - k) for k, d in enumerate(reversed(ids))]  # the relevant one last
    return RankingData("tiny", queries, docs, qrels, Candidates(cands), source="tiny")


def write_tiny_candidates_json(path: Path) -> Path:
    from llmrank.data.trec import write_candidates_json

    data = tiny_data()
    write_candidates_json(data, data.candidates, path)
    (path.parent / "qrels.txt").write_text(
        "".join(f"{q} 0 {d} {g}\n" for q, rel in data.qrels.items() for d, g in rel.items()))
    return path


# -- injection ------------------------------------------------------------------------------------------

def test_attack_changes_only_the_target_and_only_in_the_attacked_copy():
    from llmrank.eval.injection import PLAIN, attack, attacked_id, pick_targets, restore_ids

    data = tiny_data()
    before_docs = dict(data.docs)
    before_cands = Candidates({q: list(v) for q, v in data.candidates.items()})
    targets = pick_targets(data, data.candidates, top_k=5)
    assert set(targets) == set(data.queries)
    for q, d in targets.items():
        assert data.qrels[q].get(d, 0) == 0  # a non-relevant (judged 0) document
    for variant in ("plain", "format", "hidden"):
        adata, acands = attack(data, data.candidates, targets, variant, "pointwise")
        assert data.docs == before_docs and data.candidates == before_cands  # the clean data is untouched
        for q in data.queries:
            clean_ids, att_ids = data.candidates.docids(q), acands.docids(q)
            changed = [(c, a) for c, a in zip(clean_ids, att_ids) if c != a]
            assert changed == [(targets[q], attacked_id(targets[q], variant))]
            clean_texts = [data.docs[d].contents for d in clean_ids]
            att_texts = [adata.docs[d].contents for d in att_ids]
            diff = [i for i, (x, y) in enumerate(zip(clean_texts, att_texts)) if x != y]
            assert diff == [clean_ids.index(targets[q])]
            new = att_texts[diff[0]]
            orig = clean_texts[diff[0]]
            if variant == "plain":
                assert new == f"{orig}\n\n{PLAIN}"
            elif variant == "format":
                assert new.startswith(orig) and "Answer: yes" in new
            else:  # hidden: the instruction sits in the middle, the document's words around it
                assert PLAIN in new and not new.startswith(PLAIN) and not new.endswith(PLAIN)
                assert new.replace(PLAIN + " ", "") == orig
        assert restore_ids(acands, variant, targets) == data.candidates


def test_answer_format_follows_the_prompt():
    from llmrank.eval.injection import answer_format_text
    from llmrank.prompts import load_prompt

    assert "Answer: yes" in answer_format_text("pointwise", load_prompt("yes_no"))
    assert "Answer: 3" in answer_format_text("pointwise", load_prompt("graded"))
    assert "Verdict: yes" in answer_format_text("rationale", load_prompt("rationale"))
    assert "Score: 3" in answer_format_text("rationale", load_prompt("rationale_graded"))
    assert "[1] > [2]" in answer_format_text("listwise", load_prompt("rankgpt"))
    assert "Passage A" in answer_format_text("setwise", load_prompt("setwise"))


def test_injection_row_sees_the_attacked_text_only_in_the_attacked_run(tiny_model_dir):
    """A real reranker (the tiny model, pointwise) wrapped to record the texts it is shown."""
    from llmrank.backends.hf import HFBackend
    from llmrank.eval.injection import PLAIN, injection_row
    from llmrank.rerankers.base import Reranker
    from llmrank.rerankers.pointwise import PointwiseReranker

    inner = PointwiseReranker(HFBackend(str(tiny_model_dir)), "yes_no")

    class Recording(Reranker):
        method = "pointwise"

        def __init__(self):
            self.seen = []

        def rerank(self, query, docs):
            self.seen.append((query.qid, [d.contents for d in docs]))
            return inner.rerank(query, docs)

    data = tiny_data()
    rec = Recording()
    clean, _ = rec.rerank_all(data, data.candidates, 5)
    clean_seen = dict(rec.seen)
    assert all(PLAIN not in t for texts in clean_seen.values() for t in texts)
    rec.seen.clear()
    row = injection_row(lambda d, c, v: rec.rerank_all(d, c, 5)[0], data, data.candidates, clean, 5,
                        "pointwise", inner.prompt, variants=("plain",))
    attacked_seen = dict(rec.seen)
    for q, texts in attacked_seen.items():
        diff = [i for i, (x, y) in enumerate(zip(clean_seen[q], texts)) if x != y]
        assert len(diff) == 1 and texts[diff[0]].endswith(PLAIN)
    assert set(row["clean"]) == {"top1", "top3"} and row["clean"]["top1"] <= row["clean"]["top3"]
    v = row["variants"]["plain"]
    assert v["attacked_queries"] == len(data.queries) and 0 <= v["top1"] <= v["top3"] <= 1
    assert math.isfinite(v["ndcg@10_drop"])


# -- prompts --------------------------------------------------------------------------------------------

def test_shipped_prompts_declare_their_methods():
    from llmrank.prompts import available_prompts, load_prompt

    expected = {"yes_no": "pointwise", "graded": "pointwise", "qlm": "qlm", "prp": "pairwise", "rankgpt": "listwise",
                "setwise": "setwise", "rationale": "rationale", "rationale_graded": "rationale"}
    assert set(expected) <= set(available_prompts())
    for name, method in expected.items():
        p = load_prompt(name)
        assert method in p.methods and p.version >= 1


def test_prompt_for_another_method_is_an_error_naming_the_file(tmp_path):
    from llmrank.prompts import load_prompt
    from llmrank.rerankers import build_reranker

    with pytest.raises(LlmrankError, match=r"prp\.yaml.*written for pairwise.*not for method 'pointwise'"):
        build_reranker("pointwise", None, "prompts/prp.yaml")
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nmethods: [pointwise, sorting]\ntemplate: '{{ query }}'\nanswers: {'yes': 'yes', 'no': 'no'}\n")
    with pytest.raises(LlmrankError, match=r"mine\.yaml: key 'methods'"):
        load_prompt(str(bad))
    both = tmp_path / "both.yaml"
    both.write_text("name: both\nmethod: pointwise\nmethods: [pointwise]\ntemplate: x\nanswers: {'yes': 'yes', 'no': 'no'}\n")
    with pytest.raises(LlmrankError, match=r"both\.yaml"):
        load_prompt(str(both))
    old = tmp_path / "old.yaml"  # the one-method form still reads
    old.write_text("name: old\nmethod: pointwise\ntemplate: '{{ query }} {{ document }}'\nanswers: {'yes': 'yes', 'no': 'no'}\n")
    assert load_prompt(str(old)).methods == ("pointwise",)


def test_shipped_prompts_resolve_from_anywhere(tmp_path, monkeypatch):
    from llmrank.assets import asset_dir
    from llmrank.prompts import load_prompt

    shipped = asset_dir("prompts")
    assert (REPO / "prompts").resolve() == shipped  # the checkout's top-level folder is the package data
    assert (REPO / "eval" / "trec-dl.yaml").resolve() == asset_dir("suites") / "trec-dl.yaml"
    monkeypatch.chdir(tmp_path)
    assert Path(load_prompt("prompts/yes_no.yaml").path) == shipped / "yes_no.yaml"
    assert Path(load_prompt("graded").path) == shipped / "graded.yaml"
    mine = tmp_path / "prompts" / "yes_no.yaml"  # a user's own file by the same name wins where it exists
    mine.parent.mkdir()
    mine.write_text((shipped / "yes_no.yaml").read_text().replace("name: yes_no", "name: my_yes_no"))
    assert load_prompt("prompts/yes_no.yaml").name == "my_yes_no"


def test_query_likelihood_equals_a_plain_forward_pass(tiny_model_dir):
    import torch

    from llmrank.backends.hf import HFBackend
    from llmrank.prompts import render_chat
    from llmrank.rerankers.query_likelihood import QueryLikelihoodReranker

    backend = HFBackend(str(tiny_model_dir), batch_size=2)
    r = QueryLikelihoodReranker(backend)
    docs = ["short one", "a much longer document about malaria nets and mosquitoes in the tropics", "coffee"]
    query = "malaria nets"
    got, _ = r.score(query, docs)
    tok = backend.tokenizer
    q_ids = tok.encode(query, add_special_tokens=False)
    for doc, value in zip(docs, got):  # one sequence at a time, no padding, no batching
        p_ids = tok.encode(render_chat(tok, r.prompt.messages(document=doc)), add_special_tokens=False)
        ids = torch.tensor([p_ids + q_ids])
        with torch.no_grad():
            logp = torch.log_softmax(backend.lm(input_ids=ids).logits[0].float(), -1)
        ref = sum(float(logp[len(p_ids) - 1 + t, q]) for t, q in enumerate(q_ids)) / len(q_ids)
        assert value == pytest.approx(ref, abs=2e-4)
    ranking = r.rerank(Query("q", query), [Doc(str(i), d) for i, d in enumerate(docs)])
    assert ranking.scores == sorted(ranking.scores, reverse=True) and ranking.cost["calls"] == 3


# -- the command end to end -----------------------------------------------------------------------------

def _cli(argv) -> tuple[int, str, str]:
    from llmrank.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def compared(tiny_model_dir, tmp_path_factory):
    """One comparison of two prompts on two methods (3 cells) on the tiny model, with the attack; run once."""
    root = tmp_path_factory.mktemp("compare")
    dataset = write_tiny_candidates_json(root / "tiny" / "cands.json")
    out = root / "cmp"
    argv = ["compare", str(dataset), "--model", str(tiny_model_dir), "--prompts", "yes_no", "prompts/graded.yaml",
            "qlm", "--methods", "pointwise", "qlm", "--top-k", "5", "--dtype", "float32", "--attack", "injection",
            "--attack-variants", "hidden", "-o", str(out)]
    code, stdout, stderr = _cli(argv)
    assert code == 0, stderr
    return {"argv": argv, "out": out, "stdout": stdout, "stderr": stderr, "dataset": dataset}


def test_compare_writes_table_json_and_plots(compared):
    out = compared["out"]
    res = json.loads((out / "compare.json").read_text())[0]
    names = [r["name"] for r in res["rows"]]
    assert set(names) == {"first_stage", "model · pointwise · yes_no", "model · pointwise · graded", "model · qlm · qlm"}
    assert res["baseline"] == "model · pointwise · yes_no" and res["queries"] == 4
    ndcg = [r["metrics"]["ndcg@10"] for r in res["rows"]]
    assert ndcg == sorted(ndcg, reverse=True)
    from scipy import stats

    base = next(r for r in res["rows"] if r["name"] == res["baseline"])
    qids = sorted(base["per_query"])
    others = [r for r in res["rows"] if r["name"] != res["baseline"]]
    raw = []
    for r in others:
        sig = r["significance"]
        a, b = [r["per_query"][q] for q in qids], [base["per_query"][q] for q in qids]
        if np.std(np.subtract(a, b)) > 0:
            assert sig["p_t"] == pytest.approx(float(stats.ttest_rel(a, b).pvalue))
        assert sig["p_rand"] == pytest.approx(paired_randomization_test(a, b))
        assert sig["wins"] + sig["ties"] + sig["losses"] == 4
        raw.append(sig["p_rand"])
    assert [r["significance"]["p_rand_holm"] for r in others] == pytest.approx(holm(raw))
    for r in res["rows"][1:] if res["rows"][0]["cell"] is None else res["rows"]:
        if r["cell"] is not None:
            assert r["cost"]["calls_per_query"] == 5 and r["cost"]["prompt_tokens_per_query"] > 0
            assert r["repaired_share"] is None  # logits only: nothing generated
    inj = res["injection"]
    assert set(inj) == set(names) - {"first_stage"}
    assert set(next(iter(inj.values()))["variants"]) == {"hidden"}
    md = (out / "compare.md").read_text()
    assert "| row | nDCG@10 | MRR@10 | R@5 |" in md and "Prompt-injection robustness" in md
    for png in ("tiny-per-query.png", "tiny-cost-quality.png", "tiny-scores.png", "tiny-win-tie-loss.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in md
    assert "| row | nDCG@10" in compared["stdout"]  # the same table in the terminal


def test_second_run_computes_nothing_new(compared, monkeypatch):
    from llmrank.backends import hf

    out = compared["out"]
    before = _snapshot(out)

    def no_model(*a, **k):
        raise AssertionError("a second run loaded a model")

    monkeypatch.setattr(hf.HFBackend, "__init__", no_model)
    code, stdout, stderr = _cli(compared["argv"])
    assert code == 0, stderr
    assert "0 query rankings computed now" in stderr
    assert _snapshot(out) == before  # no cell file, table, json or plot changed


def test_a_killed_cell_resumes_with_only_the_missing_queries(compared, tmp_path):
    import shutil

    out = tmp_path / "cmp"
    shutil.copytree(compared["out"], out)
    cell = next(p for p in (out / "cells" / "tiny").glob("model_pointwise_graded-*.jsonl"))
    full = cell.read_bytes()
    lines = full.splitlines(keepends=True)
    cell.write_bytes(b"".join(lines[:2]) + lines[2][:17])  # two queries done, the third torn mid-line
    argv = [a if a != str(compared["out"]) else str(out) for a in compared["argv"]]
    code, _, stderr = _cli(argv)
    assert code == 0, stderr
    assert "2 query rankings computed now" in stderr
    recs = [json.loads(x) for x in cell.read_text().splitlines()]
    assert [r["qid"] for r in recs] == [json.loads(x)["qid"] for x in lines[:2]] + [
        json.loads(x)["qid"] for x in lines[2:]]
    old = {json.loads(x)["qid"]: json.loads(x)["ranking"] for x in lines}
    assert {r["qid"]: r["ranking"] for r in recs} == old  # the same rankings again (deterministic model)


def test_bad_input_is_one_line_before_any_model_loads(tiny_model_dir, tmp_path):
    dataset = write_tiny_candidates_json(tmp_path / "tiny" / "cands.json")
    code, _, err = _cli(["compare", str(dataset), "--model", str(tiny_model_dir), "--prompts", "prompts/rankgpt.yaml",
                         "--methods", "pointwise", "-o", str(tmp_path / "o")])
    assert code == 2 and "rankgpt.yaml" in err and "none of the methods compared" in err and err.count("\n") == 1
    code, _, err = _cli(["compare", str(dataset), "--model", str(tiny_model_dir), "--methods", "sorting",
                         "-o", str(tmp_path / "o")])
    assert code == 2 and "unknown method 'sorting'" in err
    code, _, err = _cli(["compare", str(dataset), "--model", str(tiny_model_dir), "--baseline", "nope",
                         "-o", str(tmp_path / "o")])
    assert code == 2 and "baseline 'nope'" in err
    assert not (tmp_path / "o" / "cells").exists() or not any((tmp_path / "o" / "cells").rglob("*.jsonl"))


def test_recipe_compare_section(compared, tiny_model_dir, tmp_path):
    """The same comparison from a recipe's ``compare:`` section reuses the command's cached cells."""
    import shutil

    out = tmp_path / "cmp"
    shutil.copytree(compared["out"], out)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: cmp
        data: {{dataset: {compared['dataset']}}}
        compare:
          models: [{tiny_model_dir}]
          methods: [pointwise]
          prompts: [yes_no, graded]
          top_k: 5
          backend_options: {{dtype: float32}}
          attack: [hidden]
        """))
    code, stdout, stderr = _cli(["compare", str(recipe), "-o", str(out)])
    assert code == 0, stderr
    assert "0 query rankings computed now" in stderr
    res = json.loads((out / "compare.json").read_text())[0]
    assert {r["name"] for r in res["rows"]} == {"first_stage", "model · pointwise · yes_no", "model · pointwise · graded"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("top_k: 5", "top_kk: 5"))
    code, _, err = _cli(["compare", str(bad), "-o", str(out)])
    assert code == 2 and "bad.yaml" in err and "top_kk" in err


def test_generating_method_reports_its_repair_share(tiny_model_dir, tmp_path):
    """A listwise cell on the tiny random model writes garbage permutations: the table's repaired share is
    the share of its windows the parser had to repair, read from the cell's records."""
    from llmrank.eval.compare import Cell, CompareSettings, compare
    from llmrank.teacher import read_teacher_run

    data = tiny_data()
    cell = Cell("listwise", str(tiny_model_dir), None, "hf", {"dtype": "float32"}, {"window": 5, "step": 2, "max_tokens": 12})
    res = compare(data, data.candidates, [cell], tmp_path, CompareSettings(top_k=5))
    row = next(r for r in res["rows"] if r["cell"] is not None)
    recs = read_teacher_run(tmp_path / row["file"])
    windows = sum(r["cost"]["calls"] for r in recs.values())
    repaired = sum(r["cost"].get("repaired_windows", 0) for r in recs.values())
    assert windows == len(data.queries) and row["cost"]["completion_tokens_per_query"] > 0
    assert row["repaired_share"] == pytest.approx(repaired / windows) and row["failed_share"] is not None
