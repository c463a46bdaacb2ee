"""Refinement (llmrank.training.grpo / dpo / refined): GRPO and DPO train a new LoRA over the distilled
student on the tiny model and save it in the distilled layout; DPO pairs are the ones the student misorders;
the recipe's refine section is checked at load; ``llmrank run`` refines, evaluates the refined student next
to the distilled one, exports the newest, re-runs only refine/eval/export when the refine section changes,
and gives the same checkpoint layout under a 2-process ``accelerate launch``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmrank.data.types import Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.students import STUDENT_FILE

REPO = Path(__file__).resolve().parents[1]
DOCS = {d.docid: d for d in [Doc("d0", "Water boils at 100 C at sea level."), Doc("d1", "The Eiffel Tower is in Paris."),
                             Doc("d2", "Boiling point depends on pressure."), Doc("d3", "Cats sleep most of the day.")]}
QUERIES = {"q1": Query("q1", "boiling point of water"), "q2": Query("q2", "where is the eiffel tower")}
DATA = RankingData("toy", QUERIES, DOCS, qrels={"q1": {"d0": 1, "d2": 1}}, source="toy")
TEACHER = {
    "q1": {"qid": "q1", "ranking": ["d0", "d2", "d1", "d3"],
           "rationales": {"d0": "It gives the boiling point.", "d2": "It is about boiling.", "d1": "It is about Paris.",
                          "d3": "It is about cats."},
           "extra": {"verdicts": {"d0": 1.0, "d2": 1.0, "d1": 0.0, "d3": 1.0}}},
    "q2": {"qid": "q2", "ranking": ["d1", "d0", "d3", "d2"],
           "rationales": {"d1": "It names the tower's city.", "d0": "It is about water.", "d3": "Cats.", "d2": "Pressure."},
           "extra": {"verdicts": {"d1": 1.0, "d0": 0.0, "d3": 0.0, "d2": None}}},
}


def _student(root: Path, tiny: Path, kind: str) -> Path:
    """A saved student of ``kind`` whose weights are the tiny random model (a merged folder, as distill writes)."""
    from llmrank.prompts import load_prompt
    from llmrank.students.reasoning import ReasoningFields, reasoning_meta

    st = root / kind
    if not (st / "merged").is_dir():
        shutil.copytree(tiny, st / "merged")
        if kind == "pointwise":
            from llmrank.students.pointwise import PointwiseFields, student_meta

            meta = student_meta(PointwiseFields(model=str(tiny), max_doc_tokens=32), str(tiny), load_prompt("yes_no"))
        else:
            meta = reasoning_meta(ReasoningFields(model=str(tiny), max_doc_tokens=32, max_new_tokens=12), str(tiny),
                                  load_prompt("rationale"))
        (st / "merged" / STUDENT_FILE).write_text(json.dumps(meta))
    return st


def _lora_b_norm(adapter: Path) -> float:
    from safetensors.torch import load_file

    w = load_file(str(adapter / "adapter_model.safetensors"))
    return sum(float(v.abs().sum()) for k, v in w.items() if "lora_B" in k)


def _assert_layout(out: Path, kind: str, method: str, start: Path):
    for sub in ("adapter", "merged"):
        meta = json.loads((out / sub / STUDENT_FILE).read_text())
        assert meta["kind"] == kind and meta["refined"]["method"] == method
        assert Path(meta["base_model"]) == (start / "merged").resolve()
    assert (out / "adapter" / "adapter_config.json").is_file() and not (out / "merged" / "adapter_config.json").exists()
    assert (out / "merged" / "model.safetensors").is_file()
    assert _lora_b_norm(out / "adapter") > 0  # LoRA B starts at zero: training moved it


def _common(out: Path, **kw) -> dict:
    return dict(output_dir=str(out), learning_rate=1e-2, logging_steps=1, save_steps=2, report_to=[], use_cpu=True,
                bf16=False, gradient_checkpointing=False, seed=0, disable_tqdm=True, **kw)


# -- GRPO ----------------------------------------------------------------------------------------------

def test_grpo_prompts_are_the_served_prompts_balanced_with_labels(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from llmrank.prompts import load_prompt
    from llmrank.rerankers.rationale import build_rationale_prompt
    from llmrank.training.grpo import build_grpo_prompts

    st = _student(tmp_path, Path(tiny_model_dir), "reasoning")
    meta = json.loads((st / "merged" / STUDENT_FILE).read_text())
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = build_grpo_prompts(DATA, TEACHER, meta, tok, per_query=3)
    by = {(r["qid"], r["docid"]): r for r in rows}
    # q1 is judged: labels from qrels (unjudged = 0), 1 relevant (per_query // 2) + the best-ranked others
    assert set(by) == {("q1", "d0"), ("q1", "d1"), ("q1", "d3"), ("q2", "d1"), ("q2", "d0"), ("q2", "d3")}
    assert [by["q1", d]["label"] for d in ("d0", "d1", "d3")] == [1.0, 0.0, 0.0]
    # q2 is not judged: the teacher's verdicts (d2's is unknown, so it is never a prompt)
    assert by["q2", "d1"]["label"] is None and by["q2", "d1"]["teacher_label"] == 1.0
    assert by["q2", "d0"]["teacher_label"] == 0.0
    want, _ = build_rationale_prompt(load_prompt("rationale"), tok, QUERIES["q1"].text, DOCS["d0"].contents, 32)
    assert by["q1", "d0"]["prompt"] == want
    # q3 is judged, but its relevant document is not among the candidates: all its targets are "no". Balanced
    # (the default), it gives no prompts and the prompts are 2 "yes" and 2 "no"; unbalanced, 2 more "no"s
    data = RankingData("toy", {**QUERIES, "q3": Query("q3", "do cats purr")}, DOCS,
                       qrels={**DATA.qrels, "q3": {"d9": 1}}, source="toy")
    teacher = {**TEACHER, "q3": {"qid": "q3", "ranking": ["d3", "d1", "d0"], "rationales": {}}}
    rows = build_grpo_prompts(data, teacher, meta, tok, per_query=2)
    assert sorted((r["qid"], r["docid"]) for r in rows) == [("q1", "d0"), ("q1", "d1"), ("q2", "d0"), ("q2", "d1")]
    rows = build_grpo_prompts(data, teacher, meta, tok, per_query=2, balance=False)
    assert sorted((r["qid"], r["docid"], r["label"]) for r in rows if r["qid"] == "q3") == [
        ("q3", "d1", 0.0), ("q3", "d3", 0.0)]
    with pytest.raises(LlmrankError, match="no 'yes' target"):
        build_grpo_prompts(data, {"q3": teacher["q3"]}, meta, tok, per_query=2)


def test_grpo_trains_a_new_lora_and_saves_the_distilled_layout(tiny_model_dir, tmp_path):
    from trl import GRPOConfig

    from llmrank.students import load_student
    from llmrank.students.reasoning import ReasoningStudentReranker
    from llmrank.training.grpo import build_grpo_prompts, train_grpo

    st = _student(tmp_path, Path(tiny_model_dir), "reasoning")
    from transformers import AutoTokenizer

    rows = build_grpo_prompts(DATA, TEACHER, json.loads((st / "merged" / STUDENT_FILE).read_text()),
                              AutoTokenizer.from_pretrained(tiny_model_dir), per_query=2)
    out = tmp_path / "grpo"
    # the random model never writes a verdict (format and relevance are 0): a reward of the user's own (trl's
    # signature), the share of letters among the characters, varies between samples, so there is a gradient

    def letters(prompts, completions, **columns):
        return [sum(ch.isalpha() for ch in c) / max(1, len(c)) for c in completions]

    args = GRPOConfig(**_common(out, max_steps=2, per_device_train_batch_size=4, num_generations=4,
                                max_completion_length=12))
    train_grpo(st, rows, args, rewards=[{"name": "format", "weight": 0.5}, {"name": "relevance"},
                                        {"function": letters, "weight": 1.0}])
    _assert_layout(out, "reasoning", "grpo", st)
    log = json.loads((out / "adapter" / "trainer_log.json").read_text())
    assert [r["step"] for r in log] == [1, 2]
    assert all({"reward", "rewards/format/mean", "rewards/relevance/mean", "rewards/letters/mean"} <= set(r) for r in log)
    assert log[0]["reward"] == pytest.approx(log[0]["rewards/letters/mean"]) and log[0]["reward_std"] > 0
    meta = json.loads((out / "merged" / STUDENT_FILE).read_text())
    assert meta["refined"]["rewards"] == [{"name": "format", "weight": 0.5}, {"name": "relevance", "weight": 1.0},
                                          {"name": "letters", "weight": 1.0}]
    assert isinstance(load_student(out / "merged"), ReasoningStudentReranker)
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()


def test_grpo_refuses_a_pointwise_student_and_vllm_without_vllm(tiny_model_dir, tmp_path):
    from trl import GRPOConfig

    from llmrank.training.grpo import train_grpo

    st = _student(tmp_path, Path(tiny_model_dir), "pointwise")
    args = GRPOConfig(**_common(tmp_path / "g", max_steps=1, per_device_train_batch_size=2, num_generations=2))
    with pytest.raises(LlmrankError, match="refine.method: 'grpo' does not fit a pointwise student.*builds no prompts"):
        train_grpo(st, [{"prompt": "x"}], args)
    args.use_vllm = True
    with pytest.raises(LlmrankError, match=r"refine.training.use_vllm: true needs vLLM installed"):
        train_grpo(st, [{"prompt": "x"}], args)


# -- DPO -----------------------------------------------------------------------------------------------

class FixedScores:
    """A reranker with given scores (what the distilled student would say), for choosing pairs by hand."""

    def __init__(self, scores):
        self.scores = scores

    def rerank(self, query, docs):
        from llmrank.rerankers.base import ranking_from_scores

        return ranking_from_scores(docs, [self.scores[query.qid][d.docid] for d in docs])


def test_pointwise_dpo_pairs_are_the_misordered_ones_on_the_answer_token(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from llmrank.prompts import load_prompt
    from llmrank.rerankers.pointwise import build_pointwise_prompt
    from llmrank.students.pointwise import answer_token_ids
    from llmrank.students.pointwise import pointwise_pairs

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    meta = json.loads((_student(tmp_path, Path(tiny_model_dir), "pointwise") / "merged" / STUDENT_FILE).read_text())
    yes, no = answer_token_ids(tok, load_prompt("yes_no"))
    # q1 (judged): relevant d0, d2; not d1, d3. The student misorders (d2 < d1: 0.3 gap) and (d2 < d3: 0.1 gap)
    # q2 (teacher's top 1 with top_m=1... here its verdicts: d1 yes; d0, d3 no; d2 unknown): student has d0 > d1
    scores = {"q1": {"d0": 0.9, "d2": 0.4, "d1": 0.7, "d3": 0.5}, "q2": {"d1": 0.2, "d0": 0.6, "d3": 0.1, "d2": 0.9}}
    rows, stats = pointwise_pairs(DATA, TEACHER, FixedScores(scores), tok, meta, pairs_per_query=8, anchors=0)
    assert stats == {"queries": 2, "pairs_misordered": 3, "pairs_kept": 3, "pairs_anchor": 0}
    got = [(r["qid"], r["docid"], r["chosen_ids"], r["rejected_ids"]) for r in rows]
    # hardest first: (d2, d1) then (d2, d3); each document once, relevant: yes > no, not relevant: no > yes
    assert got == [("q1", "d2", [yes], [no]), ("q1", "d1", [no], [yes]), ("q1", "d3", [no], [yes]),
                   ("q2", "d1", [yes], [no]), ("q2", "d0", [no], [yes])]
    text, _ = build_pointwise_prompt(load_prompt("yes_no"), tok, QUERIES["q1"].text, DOCS["d2"].contents, 32)
    assert rows[0]["prompt_ids"] == tok.encode(text, add_special_tokens=False)
    rows, stats = pointwise_pairs(DATA, TEACHER, FixedScores(scores), tok, meta, pairs_per_query=1, anchors=0)
    assert [(r["qid"], r["docid"]) for r in rows] == [("q1", "d2"), ("q1", "d1"), ("q2", "d1"), ("q2", "d0")]
    # anchors (the default, 1 per misordered pair): pairs the student orders right, closest first, so that DPO
    # does not learn "invert the student" from errors alone. q1: (d0, d1) gap 0.2 before (d0, d3) gap 0.4;
    # q2: (d1, d3) gap 0.1
    rows, stats = pointwise_pairs(DATA, TEACHER, FixedScores(scores), tok, meta, pairs_per_query=8)
    assert stats == {"queries": 2, "pairs_misordered": 3, "pairs_kept": 3, "pairs_anchor": 3}
    got = [(r["qid"], r["docid"], r["chosen_ids"]) for r in rows]
    assert got == [("q1", "d2", [yes]), ("q1", "d1", [no]), ("q1", "d3", [no]), ("q1", "d0", [yes]),
                   ("q2", "d1", [yes]), ("q2", "d0", [no]), ("q2", "d3", [no])]
    rows, _ = pointwise_pairs(DATA, TEACHER, FixedScores(scores), tok, meta, pairs_per_query=1)
    assert [(r["qid"], r["docid"]) for r in rows] == [("q1", "d2"), ("q1", "d1"), ("q1", "d0"),
                                                      ("q2", "d1"), ("q2", "d0"), ("q2", "d3")]
    with pytest.raises(LlmrankError, match="anchors"):
        pointwise_pairs(DATA, TEACHER, FixedScores(scores), tok, meta, anchors=-1)
    # without a bar (a log), the pair scoring prints periodic lines: the first and the last query at least
    err = capsys.readouterr().err
    assert "[refine] student scores for DPO pairs: 1/2 queries" in err
    assert "[refine] student scores for DPO pairs: 2/2 queries" in err and ", done" in err


def test_dpo_trains_pointwise_and_reasoning_students(tiny_model_dir, tmp_path):
    from trl import DPOConfig

    from llmrank.rerankers.pointwise import PointwiseReranker
    from llmrank.students import load_student
    from llmrank.training.dpo import build_dpo_rows, train_dpo

    for kind, opts in (("pointwise", {"top_m": 1}), ("reasoning", {"samples": 2})):
        st = _student(tmp_path, Path(tiny_model_dir), kind)
        out = tmp_path / f"dpo-{kind}"
        rows, stats = build_dpo_rows(st, DATA, TEACHER, out, opts)
        if kind == "reasoning":
            # q1: d0, d2 relevant (qrels) with the teacher agreeing; d1 not relevant, teacher agrees; d3: the
            # teacher says yes, qrels say no -> no pair. q2: d1 yes, d0 no. The random student never
            # writes a verdict, so every other document gives a pair whose chosen answer is the teacher's.
            assert stats["teacher_disagrees_with_label"] == 1 and stats["pairs"] == len(rows) == 6
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tiny_model_dir)
            chosen = tok.decode(rows[0]["chosen_ids"])
            assert chosen.startswith("It gives the boiling point.\nVerdict: yes") and chosen.endswith("<|im_end|>\n")
        args = DPOConfig(**_common(out, max_steps=2, per_device_train_batch_size=2))
        train_dpo(st, rows, args)
        _assert_layout(out, kind, "dpo", st)
        log = json.loads((out / "adapter" / "trainer_log.json").read_text())
        assert [r["step"] for r in log] == [1, 2] and all("rewards/accuracies" in r for r in log)
        if kind == "pointwise":
            assert isinstance(load_student(out / "adapter"), PointwiseReranker)


# -- the recipe's refine section ------------------------------------------------------------------------

BASE = """\
name: t
data:
  dataset: /data/beir
teacher:
  method: rationale
distill:
  kind: {kind}
"""
BAD = [
    ("grpo-on-pointwise", "pointwise", "refine:\n  method: grpo\n",
     ["r.yaml:9", "key 'refine.method'", "'grpo' does not fit a pointwise student", "it fits: dpo"]),
    ("unknown-reward", "reasoning", "refine:\n  method: grpo\n  rewards:\n    - {name: relevence}\n",
     ["r.yaml:11", "key 'refine.rewards[0]'", "unknown reward 'relevence'", "did you mean 'relevance'"]),
    ("reward-option", "reasoning", "refine:\n  method: grpo\n  rewards:\n    - {name: listwise_ndcg, options: {penalti: 1}}\n",
     ["no option 'penalti'", "did you mean 'penalty'"]),
    ("training-key", "reasoning", "refine:\n  method: grpo\n  training:\n    num_generation: 4\n",
     ["r.yaml:11", "key 'refine.training.num_generation'", "did you mean 'num_generations'", "GRPOConfig"]),
    ("training-type", "pointwise", "refine:\n  method: dpo\n  training:\n    beta: high\n",
     ["key 'refine.training.beta'", "expected float", "got 'high'"]),
    ("training-impossible", "reasoning", "refine:\n  method: grpo\n  training:\n    num_generations: 1\n",
     ["key 'refine.training.num_generations'", ">= 2"]),
    ("training-reserved", "reasoning", "refine:\n  method: grpo\n  training:\n    reward_weights: [1.0]\n",
     ["key 'refine.training.reward_weights'", "set by llmrank"]),
    ("dpo-with-rewards", "pointwise", "refine:\n  method: dpo\n  rewards: [{name: format}]\n",
     ["key 'refine.rewards'", "rewards are for method 'grpo'"]),
    ("refine-option", "pointwise", "refine:\n  method: dpo\n  options: {pairs_per_qeury: 4}\n",
     ["key 'refine.options.pairs_per_qeury'", "did you mean 'pairs_per_query'"]),
    ("refine-lora", "pointwise", "refine:\n  method: dpo\n  lora: {rank: 4}\n", ["key 'refine.lora.rank'", "unknown LoRA key"]),
    ("refine-without-distill", None, "refine:\n  method: dpo\n", ["key 'refine'", "add a 'distill' section"]),
]


@pytest.mark.parametrize("case,kind,text,parts", BAD, ids=[b[0] for b in BAD])
def test_bad_refine_section_names_the_key(tmp_path, case, kind, text, parts):
    from llmrank.recipe import load_recipe

    head = BASE.format(kind=kind) if kind else "name: t\ndata:\n  dataset: /data/beir\n"
    path = tmp_path / "r.yaml"
    path.write_text(head + text)
    with pytest.raises(LlmrankError) as e:
        load_recipe(path)
    for part in parts:
        assert part in str(e.value), (part, str(e.value))


def test_good_refine_section_loads(tmp_path):
    from llmrank.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(BASE.format(kind="reasoning") + textwrap.dedent("""\
        refine:
          method: grpo
          rewards: [{name: format, weight: 0.2}, {name: relevance}]
          training: {max_steps: 10, num_generations: 4, loss_type: dapo, use_vllm: false, learning_rate: 1e-6}
        """))
    r = load_recipe(path).refine
    assert [(x.name, x.weight) for x in r.rewards] == [("format", 0.2), ("relevance", 1.0)]


# -- llmrank run ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def refined_run(tiny_model_dir, tmp_path_factory):
    """The tiny pipeline of test_recipe with a DPO refine section, run once in process."""
    from test_recipe import _mtimes, _run_cli, write_tiny_beir, write_tiny_recipe

    tmp = tmp_path_factory.mktemp("refined")
    mp = pytest.MonkeyPatch()
    mp.setenv("LLMRANK_CACHE", str(tmp / "cache"))
    try:
        beir = write_tiny_beir(tmp / "beir")
        recipe = write_tiny_recipe(tmp / "tiny.yaml", beir, Path(tiny_model_dir))
        recipe.write_text(recipe.read_text() + textwrap.dedent("""\
            refine:
              method: dpo
              options: {pairs_per_query: 2}
              lora: {r: 4, alpha: 8, dropout: 0.0}
              training: {max_steps: 4, save_steps: 2, logging_steps: 1, learning_rate: 1e-3, per_device_train_batch_size: 2}
            export: {enabled: true, dtype: float32}
            """))
        out = tmp / "runs"
        rc, stdout, stderr = _run_cli(["run", str(recipe), "--out", str(out)])
        assert rc == 0, stderr[-3000:]
        yield {"tmp": tmp, "recipe": recipe, "out": out, "root": out / "tiny", "stdout": stdout, "mtimes": _mtimes(out / "tiny")}
    finally:
        mp.undo()


def test_run_refines_evaluates_both_students_and_exports_the_refined(refined_run):
    root = refined_run["root"]
    assert json.loads((root / "refine" / "manifest.json").read_text())["pairs"]["pairs_kept"] > 0
    _assert_layout(root / "refine", "pointwise", "dpo", root / "distill")
    assert {"student", "student_refined"} <= set(json.loads((root / "eval" / "results.json").read_text())["tiny-test"])
    report = (root / "report.md").read_text()
    assert "student, refined" in report and "Refined − distilled student: ndcg@10" in report
    assert "Refinement: reward accuracy" in report and (root / "refine-reward.png").is_file()
    assert "student, refined" in refined_run["stdout"]
    exported = json.loads((root / "export" / "model" / STUDENT_FILE).read_text())
    assert exported["refined"]["method"] == "dpo"


def test_changed_refine_section_reruns_only_refine_eval_export(refined_run):
    from test_recipe import _mtimes, _run_cli

    root = refined_run["root"]
    before = refined_run["mtimes"]
    rc, _, stderr = _run_cli(["run", str(refined_run["recipe"]), "--out", str(refined_run["out"]),
                              "--set", "refine.training.learning_rate=2e-3"])
    assert rc == 0, stderr[-3000:]
    assert "[teach] up to date" in stderr and "[distill] up to date" in stderr
    after = _mtimes(root)
    for f in ("teach/manifest.json", "distill/manifest.json", "distill/merged/model.safetensors",
              "eval/tiny-test/student.json", "eval/tiny-test/teacher.json"):
        assert after[f] == before[f], f
    for f in ("refine/manifest.json", "refine/merged/model.safetensors", "eval/tiny-test/student_refined.json",
              "export/manifest.json"):
        assert after[f] != before[f], f


def test_accelerate_two_processes_refine_gives_the_one_process_layout(refined_run):
    """``accelerate launch --multi_gpu --num_processes 2 … -m llmrank run … --stage refine`` on CPU."""
    import socket

    src, tmp = refined_run["root"], refined_run["tmp"]
    out = tmp / "accelerate"
    shutil.rmtree(out, ignore_errors=True)
    for stage in ("teach", "distill"):
        shutil.copytree(src / stage, out / "tiny" / stage)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LLMRANK_CACHE": str(tmp / "cache"), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           "-m", "llmrank", "run", str(refined_run["recipe"]), "--stage", "refine", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    def layout(root: Path) -> list[str]:  # each process saves its own RNG state into a checkpoint
        import re

        return sorted({re.sub(r"rng_state(_\d+)?\.pth$", "rng_state*.pth", str(p.relative_to(root)))
                       for p in root.rglob("*") if p.is_file() and p.name != "started.json"})

    assert layout(out / "tiny" / "refine") == layout(src / "refine")
    one = json.loads((src / "refine" / "adapter" / "training_info.json").read_text())
    two = json.loads((out / "tiny" / "refine" / "adapter" / "training_info.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2) and one["global_step"] == two["global_step"] == 4
    assert json.loads((out / "tiny" / "refine" / "pairs.json").read_text())["rows"] == \
        json.loads((src / "refine" / "pairs.json").read_text())["rows"]


def test_refine_command_needs_a_refine_section(tmp_path):
    from test_recipe import _run_cli

    path = tmp_path / "r.yaml"
    path.write_text("name: t\ndata:\n  dataset: /data/beir\ndistill:\n  kind: pointwise\n")
    rc, _, err = _run_cli(["refine", str(path)])
    assert rc == 2 and "has no 'refine' section" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
