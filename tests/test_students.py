"""The student layer: one module per kind behind a registry, one config per kind checked when the recipe is
read (before anything runs), no import cycles, and a saved student scored the same way whatever command
loads it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmrank.errors import LlmrankError
from test_layers import _imports, _module_name
from test_layers import loops as _cycles  # the strongly connected groups of more than one node (Tarjan)

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "llmrank"


# -- no import cycles --------------------------------------------------------------------------------------

def _module_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports (anywhere in its body, functions too)."""
    mods = {_module_name(f): f for f in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for t, _ in _imports(f, m):
            while t and t not in mods:
                t = t.rpartition(".")[0]
            # a module importing its own package (or the top package) is not an edge: the package is
            # initialised first either way
            if t and t != m and t != "llmrank" and not m.startswith(t + "."):
                edges[m].add(t)
    return edges


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycles():
    edges = _module_graph()
    assert "llmrank.students.pointwise" in edges and "llmrank.runner" in edges
    assert _cycles(edges) == []


# -- the registry and the configs ---------------------------------------------------------------------------

def test_registry_and_configs_extend_the_library_configs():
    from transformers import TrainingArguments
    from trl import SFTConfig

    from llmrank.students import STUDENT_KINDS, get_student

    assert {"pointwise", "reasoning", "cross-encoder"} <= set(STUDENT_KINDS)
    pw, rs = get_student("pointwise"), get_student("reasoning")
    assert issubclass(pw.config_class(), TrainingArguments) and issubclass(rs.config_class(), SFTConfig)
    assert tuple(pw.refine_options) == ("dpo",) and set(rs.refine_options) == {"grpo", "dpo"}
    with pytest.raises(LlmrankError, match="did you mean 'reasoning'"):
        get_student("reasoner")


def test_one_config_from_a_recipe_section(tmp_path):
    """The recipe's distill section becomes one config: the student's fields, the LoRA mapping and the
    training fields, with llmrank's defaults where the recipe is silent."""
    from llmrank.recipe import load_recipe
    from llmrank.students import get_student

    path = tmp_path / "r.yaml"
    path.write_text("name: t\ndata: {dataset: /x}\ndistill:\n  loss: ranknet\n  lora: {r: 4, alpha: 8}\n"
                    "  training: {max_steps: 7, learning_rate: 2.0e-4}\n")
    recipe = load_recipe(path)
    cfg = get_student("pointwise").make_config(recipe.distill, tmp_path / "out", seed=3)
    assert (cfg.loss, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == ("ranknet", 4, 8, 0.05)
    assert (cfg.max_steps, cfg.learning_rate, cfg.seed, cfg.per_device_train_batch_size) == (7, 2e-4, 3, 1)
    assert cfg.output_dir == str(tmp_path / "out") and cfg.report_to == []
    # epochs without max_steps: llmrank's default max_steps must not override them (reasoning-grpo.yaml)
    path.write_text("name: t\ndata: {dataset: /x}\nteacher: {method: rationale}\ndistill:\n  kind: reasoning\n"
                    "  training: {num_train_epochs: 2}\n")
    cfg = get_student("reasoning").make_config(load_recipe(path).distill, tmp_path / "out")
    assert (cfg.num_train_epochs, cfg.max_steps) == (2, -1)


BAD_RECIPES = [  # (id, distill/eval text, --set, what the message must name)
    ("misspelt-training-key", "distill:\n  training: {max_step: 40}\n", [],
     [":5: key 'distill.training.max_step'", "did you mean 'max_steps'"]),
    ("negative-learning-rate", "distill:\n  training:\n    learning_rate: -1.0e-3\n", [],
     [":6: key 'distill.training.learning_rate'", "a number > 0", "-0.001"]),
    ("set-not-a-number", "distill: {}\n", ["distill.training.max_steps=abc"],
     ["--set 'distill.training.max_steps=abc'", "key 'distill.training.max_steps'", "expected int"]),
    ("max-steps-zero", "distill:\n  training: {max_steps: 0}\n", [], ["key 'distill.training.max_steps'", ">= 1"]),
    ("group-size-zero", "distill:\n  group_size: 0\n", [], [":5: key 'distill.group_size'", "greater than or equal to 2"]),
    ("unknown-loss", "distill:\n  loss: rankent\n", [], [":5: key 'distill.loss'", "did you mean 'ranknet'"]),
    ("unknown-metric", "eval:\n  datasets: [{dataset: DATA}]\n  metrics: [ndcg@x]\n", [],
     [":6: key 'eval.metrics[0]'", "unknown metric 'ndcg@x'"]),
    ("missing-eval-dataset", "eval:\n  datasets: [{dataset: /no/such/dataset}]\n", [],
     ["key 'eval.datasets[0].dataset'", "/no/such/dataset does not exist"]),
    ("reasoning-key-on-pointwise", "distill:\n  max_new_tokens: 64\n", [], ["key 'distill.max_new_tokens'", "unknown key"]),
    ("pointwise-key-on-reasoning", "distill:\n  kind: reasoning\n  loss: listnet\n", [],
     ["key 'distill.loss'", "unknown key"]),
    ("refine-unfit", "distill: {}\nrefine: {method: grpo}\n", [], ["key 'refine.method'", "does not fit a pointwise student"]),
    ("refine-training", "distill: {kind: reasoning}\nrefine:\n  method: grpo\n  training: {num_generations: 1}\n", [],
     ["key 'refine.training.num_generations'", ">= 2"]),
]


@pytest.mark.parametrize("body,overrides,expected", [c[1:] for c in BAD_RECIPES], ids=[c[0] for c in BAD_RECIPES])
def test_recipe_mistakes_are_named_before_anything_runs(tmp_path, body, overrides, expected):
    """``llmrank run`` on each mistake: exit 2, one line naming the file (and line) and key, no traceback,
    and nothing computed (no run directory)."""
    data = tmp_path / "beir"
    data.mkdir()
    text = f"name: t\ndata:\n  dataset: {data}\n" + body.replace("DATA", str(data))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    cmd = [sys.executable, "-m", "llmrank", "run", str(recipe), "--out", str(tmp_path / "runs")]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert str(recipe) in err or "recipe" in err
    for part in expected:
        assert part in err, f"{part!r} not in {err}"
    assert not (tmp_path / "runs").exists()


def test_loss_options_follow_the_loss_and_are_checked_for_every_kind(tmp_path):
    """A kind's default loss options go with the loss they are for: a cross-encoder section that names another
    loss and no options trains with none (its combined-loss weights would be refused by ranknet), one that
    names nothing trains with them; a bi-encoder's loss options are checked at load like a pointwise one's."""
    from llmrank.recipe import load_recipe
    from llmrank.students import get_student

    data = tmp_path / "data.jsonl"
    data.write_text("")
    head = f"name: t\ndata: {{dataset: {data}}}\ndistill:\n"
    ce = get_student("cross-encoder")
    for body, loss, options in [("  kind: cross-encoder\n  loss: ranknet\n", "ranknet", {}),
                                ("  kind: cross-encoder\n", "combined", {"weights": {"ranknet": 1.0, "label_ce": 1.0}})]:
        (tmp_path / "r.yaml").write_text(head + body)
        cfg = ce.make_config(load_recipe(tmp_path / "r.yaml").distill, tmp_path / "out")
        assert (cfg.loss, cfg.loss_options) == (loss, options)
    (tmp_path / "bad.yaml").write_text(head + "  kind: bi-encoder\n  loss: ranknet\n  loss_options: {sigmaa: 2}\n")
    with pytest.raises(LlmrankError, match=r"bad.yaml:6: key 'distill.loss_options.sigmaa'.*did you mean 'sigma'"):
        load_recipe(tmp_path / "bad.yaml")


@pytest.mark.parametrize("flags,expected", [
    (["--learning-rate", "-0.001"], "--learning-rate: expected a number > 0"),
    (["--group-size", "0"], "--group-size"),
    (["--max-steps", "0"], "--max-steps: expected an integer >= 1"),
    (["--kind", "reasoning", "--loss", "ranknet"], "--loss is not a setting of a reasoning student"),
    (["--loss", "rankent"], "did you mean 'ranknet'"),
])
def test_distill_flags_are_checked_like_the_recipe(tmp_path, capsys, flags, expected):
    from llmrank.cli import main

    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"qid": "q", "query": "x", "docs": [{"docid": "a", "text": "t", "label": 1}]}))
    rc = main(["distill", "--dataset", str(data), "--oracle", "-o", str(tmp_path / "out"), *flags])
    assert rc == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- a saved student is scored as it was trained --------------------------------------------------------------

@pytest.fixture(scope="module")
def pointwise_student(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny pointwise student with trained-looking LoRA weights (random B), saved by the student layer,
    with a document length (24 tokens) unlike any reranker default."""
    from conftest import make_pointwise_student

    return make_pointwise_student(tiny_model_dir, tmp_path_factory.mktemp("pw-student"), max_doc_tokens=24, lora_r=4,
                                  lora_alpha=8, b_scale=0.5, merge=True)


def test_rerank_with_a_student_dir_scores_like_load_student(pointwise_student, tmp_path):
    from llmrank.cli import main
    from llmrank.data import load_dataset, read_run
    from llmrank.students import load_student

    long = " ".join(f"word{i}" for i in range(80))  # longer than the student's 24 document tokens
    rows = [{"qid": f"q{q}", "query": f"question {q} about topic",
             "docs": [{"docid": f"q{q}-{j}", "text": f"passage {j} on topic {q}. " + (long if j % 2 else ""),
                       "label": int(j == 0)} for j in range(4)]} for q in range(2)]
    data_path = tmp_path / "d.jsonl"
    data_path.write_text("\n".join(json.dumps(r) for r in rows))
    run_path = tmp_path / "run.trec"
    for folder in ("merged", "adapter"):
        assert main(["rerank", str(data_path), "--model", str(pointwise_student / folder), "--dtype", "float32",
                     "--top-k", "4", "-o", str(run_path)]) == 0
        cli = read_run(run_path)
        data = load_dataset(str(data_path))
        reranker = load_student(pointwise_student / folder, dtype="float32")
        assert reranker.max_doc_tokens == 24 and reranker.variants is False
        direct, _ = reranker.rerank_all(data, data.candidates, 4, progress=False)
        assert cli.qids() == direct.qids() == ["q0", "q1"]
        for q in direct.qids():
            assert cli.docids(q) == direct.docids(q)  # the same order
            got, want = dict(cli[q]), dict(direct[q])
            assert set(got) == set(want) and len(want) == 4
            np.testing.assert_allclose([got[d] for d in want], [want[d] for d in want], rtol=1e-4, atol=1e-5)
