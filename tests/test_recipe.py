"""Recipes: validation that names the file and the key, ``${ENV}`` and ``--set``; ``llmrank run`` end to end
(skipping what is up to date, re-running what a change touches, resuming after a SIGKILL in each stage),
the teach stage sharded over two CPU processes by ``accelerate launch``; the eval suites and the shipped
recipes validate."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llmrank.errors import LlmrankError
from llmrank.recipe import apply_override, eval_entries, load_recipe, load_suite

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

BASE = """\
name: t
data:
  dataset: /data/beir
"""


def _write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- malformed recipes ----------------------------------------------------------------------------------
# (id, recipe text, --set overrides, substrings the one-line error must contain besides the file path)
BAD = [
    ("unknown-top-level", BASE + "distil: {model: x}\n", [],
     ["key 'distil'", "unknown key", "did you mean 'distill'", "keys of a recipe: name, seed, data"]),
    ("misspelled-teacher-key", BASE + "teacher:\n  mdoel: x\n", [],
     ["key 'teacher.mdoel'", "did you mean 'model'", "keys of teacher:"]),
    ("misspelled-data-key", "name: t\ndata:\n  datset: /x\n", [],
     ["key 'data.datset'", "did you mean 'dataset'", "key 'data.dataset': required key is missing"]),
    ("misspelled-distill-key", BASE + "distill:\n  los: listnet\n", [], ["key 'distill.los'", "did you mean 'loss'"]),
    ("misspelled-refine-key", BASE + "refine:\n  method: grpo\n  optoins: {}\n", [],
     ["key 'refine.optoins'", "did you mean 'options'"]),
    ("misspelled-eval-key", BASE + "eval:\n  topk: 5\n", [], ["key 'eval.topk'", "did you mean 'top_k'"]),
    ("misspelled-export-key", BASE + "export:\n  dtpye: bfloat16\n", [], ["key 'export.dtpye'", "did you mean 'dtype'"]),
    ("k-not-a-number", "name: t\ndata:\n  dataset: /x\n  k: twenty\n", [], ["key 'data.k'", "valid integer", "'twenty'"]),
    ("k-fractional", "name: t\ndata:\n  dataset: /x\n  k: 2.5\n", [], ["key 'data.k'", "fractional part"]),
    ("queries-negative", "name: t\ndata:\n  dataset: /x\n  queries: -3\n", [],
     ["key 'data.queries'", "greater than or equal to 1", "got -3"]),
    ("group-size-1", BASE + "distill:\n  group_size: 1\n", [], ["key 'distill.group_size'", "greater than or equal to 2"]),
    ("lora-unknown-key", BASE + "distill:\n  lora: {rank: 8}\n", [],
     ["key 'distill.lora.rank'", "unknown LoRA key", "expected r, alpha, dropout, target_modules"]),
    ("training-not-a-mapping", BASE + "distill:\n  training: [1, 2]\n", [],
     ["key 'distill.training'", "valid dictionary", "got a list"]),
    ("section-not-a-mapping", BASE + "distill: yes please\n", [], ["key 'distill'", "valid dictionary"]),
    ("missing-name", "data:\n  dataset: /x\n", [], ["key 'name'", "required key is missing"]),
    ("missing-data", "name: t\n", [], ["key 'data'", "required key is missing"]),
    ("missing-dataset", "name: t\ndata:\n  k: 5\n", [], ["key 'data.dataset'", "required key is missing"]),
    ("missing-refine-method", BASE + "refine:\n  options: {}\n", [], ["key 'refine.method'", "required key is missing"]),
    ("refine-method-ppo", BASE + "refine:\n  method: ppo\n", [], ["key 'refine.method'", "unknown refine method 'ppo'", "one of grpo, dpo"]),
    ("fusion-max", BASE + "teacher:\n  method: fusion\n  fusion: max\n", [],
     ["key 'teacher.fusion'", "'rrf' or 'borda'", "got 'max'"]),
    ("fusion-member-typo", BASE + "teacher:\n  method: fusion\n  members:\n    - mehtod: dense\n", [],
     ["key 'teacher.members[0].mehtod'", "did you mean 'method'"]),
    ("fusion-member-type", BASE + "teacher:\n  method: fusion\n  members:\n    - method: [dense]\n", [],
     ["key 'teacher.members[0].method'", "valid string", "got a list"]),
    ("distill-kind", BASE + "distill:\n  kind: listwise\n", [], ["key 'distill.kind'", "unknown student kind 'listwise'", "pointwise, reasoning"]),
    ("seed-text", BASE + "seed: abc\n", [], ["key 'seed'", "valid integer"]),
    ("export-enabled", BASE + "export:\n  enabled: maybe\n", [], ["key 'export.enabled'", "valid boolean"]),
    ("eval-top-k-0", BASE + "eval:\n  top_k: 0\n", [], ["key 'eval.top_k'", "greater than or equal to 1"]),
    ("eval-metrics-scalar", BASE + "eval:\n  metrics: ndcg@10\n", [], ["key 'eval.metrics'", "valid list"]),
    ("eval-dataset-unknown-key", BASE + "eval:\n  datasets:\n    - dataset: /x\n      splt: test\n", [],
     ["key 'eval.datasets[0].splt'", "did you mean 'split'", "query_field"]),
    ("eval-datasets-scalar", BASE + "eval:\n  datasets: /x\n", [], ["key 'eval.datasets'", "valid list"]),
    ("eval-duplicate-names", BASE + "eval:\n  datasets:\n    - {dataset: /x, split: test}\n"
                                    "    - {dataset: /y/x, split: test}\n", [],
     ["key 'eval.datasets'", "both named 'x-test'", "distinct 'name'"]),
    ("eval-suite-missing", BASE + "eval:\n  suite: no-such-suite\n", [], ["key 'eval.suite'", "not found", "beir"]),
    ("env-unset", "name: t\ndata:\n  dataset: ${LLMRANK_TEST_SURELY_UNSET}/beir\n", [],
     ["key 'data.dataset'", "${LLMRANK_TEST_SURELY_UNSET} is not set", ":-default"]),
    ("malformed-yaml", "name: t\ndata:\n  dataset: [a\n  k: 3\n", [], [":4: malformed YAML", "line 4"]),
    ("tab-indent", "name: t\ndata:\n\tdataset: /x\n", [], [":3: malformed YAML", "line 3"]),
    ("not-a-mapping", "- name: t\n- data: {}\n", [], ["a recipe is a mapping", "got a list"]),
    ("scalar-document", "just a string\n", [], ["a recipe is a mapping", "got 'just a string'"]),
    ("empty-file", "", [], ["a recipe is a mapping", "the file is empty"]),
    ("set-without-equals", BASE, ["distill.training.max_steps"], ["--set 'distill.training.max_steps'", "KEY.PATH=VALUE"]),
    ("set-empty-key", BASE, ["=3"], ["--set '=3'", "nothing before '='"]),
    ("set-empty-part", BASE, ["data..k=3"], ["--set 'data..k=3'", "is not a key"]),
    ("set-scalar-as-section", BASE, ["data.k.x=3"], ["--set 'data.k.x=3'", "'data.k' is a value (int), not a section"]),
    ("set-value-as-section", BASE, ["name.first=x"], ["--set 'name.first=x'", "'name' is a value (str), not a section"]),
    ("set-unknown-section", BASE, ["distil.loss=x"], ["--set 'distil.loss=x'", "unknown key 'distil'", "did you mean 'distill'"]),
    ("set-unknown-key", BASE, ["teacher.mdoel=x"], ["unknown key 'teacher.mdoel'", "did you mean 'model'"]),
    ("set-wrong-type", BASE, ["data.k=many"], ["--set 'data.k=many'", "key 'data.k'", "valid integer"]),
    ("set-list-index-out-of-range", BASE + "eval:\n  datasets:\n    - {dataset: /x}\n", ["eval.datasets[3].queries=5"],
     ["--set 'eval.datasets[3].queries=5'", "'eval.datasets[3]'", "the list has 1 item(s)"]),
    ("set-section-indexed", BASE, ["data[0]=x"], ["'data' is a section, not a list"]),
    ("set-bad-yaml-value", BASE, ["data.k=[1"], ["--set 'data.k=[1'", "not valid YAML"]),
]


@pytest.mark.parametrize("text,overrides,expected", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_malformed_recipe_is_rejected_naming_file_and_key(tmp_path, monkeypatch, text, overrides, expected):
    monkeypatch.delenv("LLMRANK_TEST_SURELY_UNSET", raising=False)
    path = _write(tmp_path, text)
    with pytest.raises(LlmrankError) as info:
        load_recipe(path, overrides)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    assert "\n" not in msg  # the CLI prints it as one line
    for part in expected:
        assert part in msg, f"{part!r} not in: {msg}"


def test_validation_errors_carry_the_line(tmp_path):
    path = _write(tmp_path, BASE + "distill:\n  model: x\n  group_size: 1\n")
    with pytest.raises(LlmrankError, match=re.escape(f"{path}:6: key 'distill.group_size'")):
        load_recipe(path)


def test_cli_reports_a_bad_recipe_in_one_line(tmp_path, capsys):
    from llmrank.cli import main

    path = _write(tmp_path, BASE + "teacher:\n  mdoel: x\n")
    assert main(["run", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmrank run: error: ") and str(path) in err and "teacher.mdoel" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_missing_recipe_file(tmp_path):
    with pytest.raises(LlmrankError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


# -- ${ENV} and --set ------------------------------------------------------------------------------------

def test_env_interpolation(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMRANK_T_DATA", "/data")
    monkeypatch.setenv("LLMRANK_T_K", "12")
    monkeypatch.setenv("LLMRANK_T_RUN", "0123")  # a name stays text (YAML would read the number 83)
    monkeypatch.delenv("LLMRANK_T_UNSET", raising=False)
    monkeypatch.setenv("LLMRANK_T_SET", "from-env")
    path = _write(tmp_path, """\
        name: ${LLMRANK_T_RUN}
        data:
          dataset: ${LLMRANK_T_DATA}/beir
          k: ${LLMRANK_T_K}
          queries: ${LLMRANK_T_UNSET:-}
        teacher:
          model: ${LLMRANK_T_SET:-default-model}
          backend: ${LLMRANK_T_UNSET:-hf}
        distill:
          training:
            max_steps: ${LLMRANK_T_UNSET:-60}
            learning_rate: ${LLMRANK_T_UNSET:-1e-4}
            bf16: ${LLMRANK_T_UNSET:-false}
            run_name: run-${LLMRANK_T_K}-${LLMRANK_T_UNSET:-x}
        export:
          enabled: ${LLMRANK_T_UNSET:-no}
        """)
    r = load_recipe(path)
    assert r.name == "0123" and r.export.enabled is False
    assert r.data.dataset == "/data/beir" and r.data.k == 12 and r.data.queries is None
    assert r.teacher.model == "from-env" and r.teacher.backend == "hf"
    # a value that is one ${...} alone takes the YAML type of its expansion (free-form sections included)
    assert r.distill.training == {"max_steps": 60, "learning_rate": 1e-4, "bf16": False, "run_name": "run-12-x"}


def test_set_overrides_parse_yaml_types(tmp_path):
    path = _write(tmp_path, BASE + textwrap.dedent("""\
        teacher:
          method: listwise
        distill:
          training: {max_steps: 3}
        eval:
          datasets:
            - {dataset: /a, split: test}
            - {dataset: /b, split: dev}
        """))
    r = load_recipe(path, [
        "distill.training.max_steps=10",
        "distill.training.learning_rate=1e-4",
        "distill.training.run_name=text",
        "teacher.options={window: 4, step: 2}",
        "eval.metrics=[ndcg@10, mrr@10]",
        "eval.datasets[1].queries=5",
        "data.queries=null",
        "seed=7",
        "export.enabled=false",
        "refine.method=dpo",  # a section not in the file is created
        "name=with=equals",   # only the first '=' splits
    ])
    assert r.distill.training == {"max_steps": 10, "learning_rate": 1e-4, "run_name": "text"}
    assert r.teacher.options == {"window": 4, "step": 2}
    assert r.eval.metrics == ["ndcg@10", "mrr@10"]
    assert r.eval.datasets[1].queries == 5 and r.eval.datasets[0].queries is None
    assert r.data.queries is None and r.seed == 7 and r.export.enabled is False
    assert r.refine.method == "dpo" and r.name == "with=equals"


def test_yaml_floats_without_a_dot_are_numbers(tmp_path):
    path = _write(tmp_path, BASE + "distill:\n  training: {learning_rate: 1e-4, weight_decay: 5E-2, adam_epsilon: .5e-8}\n")
    assert load_recipe(path).distill.training == {"learning_rate": 1e-4, "weight_decay": 5e-2, "adam_epsilon": 0.5e-8}


def test_apply_override_in_place():
    raw = {"name": "t", "data": {"dataset": "/x"}}
    assert apply_override(raw, "distill.training.max_steps=5") == ["distill", "training", "max_steps"]
    assert raw["distill"] == {"training": {"max_steps": 5}}
    with pytest.raises(LlmrankError, match="'data.dataset' is a value"):
        apply_override(raw, "data.dataset.x=1")


def test_relative_dataset_paths_resolve_from_the_recipe_folder(tmp_path, monkeypatch):
    (tmp_path / "sub" / "beir").mkdir(parents=True)
    path = _write(tmp_path / "sub", "name: t\ndata:\n  dataset: beir\neval:\n  datasets: [{dataset: beir}]\n")
    monkeypatch.chdir(tmp_path)
    r = load_recipe(path)
    assert r.data.dataset == str(tmp_path / "sub" / "beir") == r.eval.datasets[0].dataset


def test_section_hash_tracks_only_the_named_sections(tmp_path):
    path = _write(tmp_path, BASE + "distill: {model: m}\neval: {top_k: 5, datasets: [{dataset: /x}]}\n")
    a, b = load_recipe(path), load_recipe(path, ["eval.top_k=6"])
    assert a.section_hash("data", "teacher", "distill") == b.section_hash("data", "teacher", "distill")
    assert a.section_hash("eval") != b.section_hash("eval")



def test_section_hash_is_the_same_for_one_folder_spelled_two_ways(tmp_path, monkeypatch):
    """``${LLMRANK_DATA}`` as ``../data`` from one place and as an absolute path from another is one dataset:
    the stages and the eval rows are not redone for the spelling of the path; another folder is another hash."""
    from llmrank.eval.run_eval import row_key

    (tmp_path / "data" / "beir").mkdir(parents=True)
    (tmp_path / "data" / "other").mkdir()
    (tmp_path / "work").mkdir()
    note = "A note longer than a file name may be" * 8 + ", that names recipes/quickstart-cpu.yaml"
    path = _write(tmp_path, f"name: t\ndata:\n  dataset: ${{D}}/beir\n"
                            f"eval:\n  datasets: [{{dataset: '${{D}}/beir'}}]\n  note: {note}\n")
    monkeypatch.chdir(tmp_path / "work")
    hashes, rows = {}, set()
    for spelling in ("../data", str(tmp_path / "data"), str(tmp_path / "data" / "other" / "..")):
        monkeypatch.setenv("D", spelling)
        r = load_recipe(path)
        hashes[spelling] = r.section_hash("data", "teacher")
        # an eval row file is kept across the spellings too (its key names the dataset)
        rows.add(row_key(r, eval_entries(r.eval)[0], "first_stage"))
        assert r.section_hash("eval") == load_recipe(path).section_hash("eval")  # prose with a slash is no path
    assert len(set(hashes.values())) == 1 and len(rows) == 1, (hashes, rows)
    monkeypatch.setenv("D", str(tmp_path / "data" / "other"))
    (tmp_path / "data" / "other" / "beir").mkdir()
    assert load_recipe(path).section_hash("data", "teacher") not in hashes.values()

# -- eval suites and shipped recipes ---------------------------------------------------------------------

SUITES = sorted((REPO / "eval").glob("*.yaml"))


def test_suite_files_exist():
    assert {p.name for p in SUITES} >= {"beir.yaml", "bright.yaml", "trec-dl.yaml"}


@pytest.mark.parametrize("suite", SUITES, ids=[p.stem for p in SUITES])
def test_suite_loads_and_validates(suite):
    import yaml

    from llmrank.eval.run_eval import suite_datasets

    raw = yaml.safe_load(suite.read_text())
    for variant in [None, *(raw.get("variants") or {})]:
        ref = suite.stem + (f":{variant}" if variant else "")
        path, entries = load_suite(ref)
        assert path == suite.resolve() and entries
        labels = [d.label() for d in entries]
        assert len(set(labels)) == len(labels), labels
        dumped = suite_datasets(ref)
        assert [d["dataset"] for d in dumped] == [d.dataset for d in entries]
        assert all("${" not in d.dataset for d in entries)


def test_beir_suite():
    _, entries = load_suite("beir")
    names = {d.name for d in entries}
    assert {"trec-covid", "nfcorpus", "fiqa", "arguana", "webis-touche2020", "dbpedia-entity", "scidocs",
            "climate-fever", "scifact"} <= names
    assert all(d.split == "test" for d in entries)
    scifact = next(d for d in entries if d.name == "scifact")
    if SHARED_DATA.is_dir():
        assert Path(scifact.dataset).is_dir()


def test_bright_suite_has_the_12_tasks_and_reasoning_queries():
    from llmrank.data import BRIGHT_TASKS

    _, plain = load_suite("bright")
    _, reasoning = load_suite("bright:gpt4-reason")
    assert [d.split for d in plain] == [d.split for d in reasoning] and sorted(d.split for d in plain) == sorted(BRIGHT_TASKS)
    assert all(d.query_field == "query" and d.name == d.split for d in plain)
    assert all(d.query_field == "gpt4_reason" and d.name == f"{d.split}-gpt4_reason" for d in reasoning)
    if SHARED_DATA.is_dir():
        assert all(Path(d.dataset).is_dir() for d in plain)


def test_trec_dl_suite():
    _, entries = load_suite("trec-dl")
    assert [d.name for d in entries] == ["dl19"]
    if SHARED_DATA.is_dir():
        from llmrank.data import load_dataset

        data = load_dataset(entries[0].dataset, entries[0].split)
        assert len(data.queries) == 43 and data.qrels and data.candidates is not None


def test_bad_suite_entry_names_the_suite_file_and_key(tmp_path):
    suite = _write(tmp_path, """\
        datasets:
          - {dataset: /a, split: test}
          - dataset: /b
            splt: dev
        """, "mysuite.yaml")
    with pytest.raises(LlmrankError) as info:
        load_suite(str(suite))
    msg = str(info.value)
    assert f"{suite}:4: key 'datasets[1].splt'" in msg and "did you mean 'split'" in msg
    # a recipe naming that suite fails when it is loaded, before any stage runs
    recipe = _write(tmp_path, BASE + f"eval:\n  suite: {suite}\n")
    with pytest.raises(LlmrankError, match=re.escape(f"{suite}:4: key 'datasets[1].splt'")):
        load_recipe(recipe)
    for text, expected in [("- {dataset: /a}\n", "a mapping with a 'datasets' list (got a list)"),
                           ("datasets: [{dataset: /a}]\nvariants: {x: [{dataset: /b, name: 3}]}\nmore: 1\n",
                            "key 'more': unknown key"),
                           ("datasets: [{split: test}]\n", "key 'datasets[0].dataset': required key is missing")]:
        bad = _write(tmp_path, text, "bad.yaml")
        with pytest.raises(LlmrankError, match=re.escape(expected)):
            load_suite(str(bad))
    with pytest.raises(LlmrankError, match="no variant 'nope'"):
        load_suite("bright:nope")


def test_recipe_with_suite_lists_its_datasets(tmp_path):
    path = _write(tmp_path, BASE + "eval:\n  datasets: [{dataset: /x, split: test, name: mine}]\n  suite: bright:gpt4-reason\n")
    r = load_recipe(path)
    entries = eval_entries(r.eval)
    assert entries[0].name == "mine" and len(entries) == 13 and entries[-1].query_field == "gpt4_reason"
    # the suite's contents, not only its name, are part of what the eval stage depends on
    assert r.section_hash("eval") != load_recipe(path, ["eval.suite=bright"]).section_hash("eval")


RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipe_validates(recipe, monkeypatch):
    from llmrank.rerankers import RERANKERS

    text = recipe.read_text()
    header = [line for line in text.splitlines()[:40] if line.startswith("#")]
    assert header and re.search(r"(?i)hardware|cpu|gpu", " ".join(header)), "a header saying what it needs"
    for name in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)):  # required variables (no default)
        monkeypatch.setenv(name, f"/{name.lower()}")
    r = load_recipe(recipe)
    assert r.name == recipe.stem
    if r.eval is not None:
        assert eval_entries(r.eval)
    # teacher options are keyword arguments of the method's reranker
    for t in [r.teacher, *r.teacher.members]:
        if t.method in RERANKERS and t.options:
            module, cls = RERANKERS[t.method][0].split(":")
            import importlib

            params = inspect.signature(getattr(importlib.import_module(module), cls)).parameters
            assert set(t.options) <= set(params), (t.method, set(t.options) - set(params))


def test_gpu_recipes():
    by_name = {p.stem: load_recipe(p) for p in RECIPES}
    assert {"instruction-distill-7b", "listwise-margin-mse", "reasoning-grpo", "dpo"} <= set(by_name)
    r = by_name["instruction-distill-7b"]
    assert r.teacher.method == "pairwise" and r.teacher.backend == "vllm" and r.distill.model == r.teacher.model
    r = by_name["listwise-margin-mse"]
    assert r.teacher.method == "listwise" and r.distill.loss in ("margin_mse", "cprd") and "1.5B" in r.distill.model
    r = by_name["reasoning-grpo"]
    assert r.teacher.method == "rationale" and r.distill.kind == "reasoning" and r.refine.method == "grpo"
    assert by_name["dpo"].refine.method == "dpo"


def test_endpoint_teacher_from_env(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8000/v1")
    assert load_recipe(REPO / "recipes" / "listwise-margin-mse.yaml").teacher.backend == "http://localhost:8000/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert load_recipe(REPO / "recipes" / "listwise-margin-mse.yaml").teacher.backend == "vllm"


# -- the pipeline end to end -----------------------------------------------------------------------------

TOPICS = ["protein folding", "solar panels", "deep learning", "ocean tides", "bird migration", "stock markets",
          "volcano eruptions", "coffee health", "jazz music", "glacier melting", "chess openings", "tea ceremony",
          "mars rovers", "honey bees", "rust language", "paper folding"]
N_TRAIN = 12


def _jsonl(path: Path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def write_tiny_beir(root: Path) -> Path:
    """16 topics × 6 documents; queries 0-11 train, 12-15 test; document 0 of each topic is relevant."""
    docs, queries, train, test = [], [], [], []
    for i, topic in enumerate(TOPICS):
        others = [TOPICS[(i + j) % len(TOPICS)] for j in (1, 3, 5, 7)]
        docs.append({"_id": f"d{i}_0", "title": topic, "text": f"{topic} {topic} explained: all about {topic}."})
        for j in range(1, 6):
            docs.append({"_id": f"d{i}_{j}", "title": "",
                         "text": f"{topic} and {others[j % 4]}; notes on {others[(j + 1) % 4]} and {others[(j + 2) % 4]}."})
        queries.append({"_id": f"q{i}", "text": f"what about {topic}"})
        (train if i < N_TRAIN else test).append(f"q{i}\td{i}_0\t1\n")
        if i >= N_TRAIN:
            test.append(f"q{i}\td{i}_1\t1\n")
    (root / "qrels").mkdir(parents=True)
    _jsonl(root / "corpus.jsonl", docs)
    _jsonl(root / "queries.jsonl", queries)
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(train))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(test))
    return root


def write_tiny_recipe(path: Path, beir: Path, model: Path) -> Path:
    """A pointwise teacher and a LoRA student, both the tiny random Llama; 4 training steps, a checkpoint
    every 2; evaluation of the four rows on the 4 test queries."""
    path.write_text(textwrap.dedent(f"""\
        name: tiny
        seed: 0
        data:
          dataset: {beir}
          k: 6
        teacher:
          method: pointwise
          model: {model}
          backend: hf
          backend_options: {{batch_size: 8}}
        distill:
          model: {model}
          group_size: 4
          max_doc_tokens: 48
          lora: {{r: 4, alpha: 8, dropout: 0.0}}
          training: {{max_steps: 4, save_steps: 2, logging_steps: 1, learning_rate: 1e-3}}
        eval:
          datasets:
            - {{dataset: {beir}, split: test, name: tiny-test}}
          top_k: 6
        """))
    return path


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def _metrics(results_file: Path) -> dict:
    return {name: {row: rec["metrics"] for row, rec in rows.items()}
            for name, rows in json.loads(results_file.read_text()).items()}


def _teacher_records(path: Path) -> dict:
    from llmrank.teacher import read_teacher_run

    return {q: {"key": r["key"], "ranking": r["ranking"], "scores": r["scores"]} for q, r in read_teacher_run(path).items()}


def _assert_same_teacher(got: dict, want: dict) -> None:
    """The same queries in the same order, each with the same key and the same score per document. Batches
    that mix queries in flight sum floats in another order, so scores may differ in the last digits (and
    near-ties may come in another order): compared to 1e-5."""
    assert list(got) == list(want)
    for qid, rec in want.items():
        assert got[qid]["key"] == rec["key"], qid
        mine, theirs = dict(zip(got[qid]["ranking"], got[qid]["scores"])), dict(zip(rec["ranking"], rec["scores"]))
        assert mine.keys() == theirs.keys(), qid
        assert [mine[d] for d in theirs] == pytest.approx([theirs[d] for d in theirs], rel=1e-5, abs=1e-6), qid


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    from llmrank.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir, tmp_path_factory):
    """One clean, uninterrupted ``llmrank run`` of the tiny recipe (in process), with snapshots of what it
    wrote: the other tests compare against them (and may change the run directory afterwards)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    mp = pytest.MonkeyPatch()
    mp.setenv("LLMRANK_CACHE", str(tmp / "cache"))
    try:
        beir = write_tiny_beir(tmp / "beir")
        recipe = write_tiny_recipe(tmp / "tiny.yaml", beir, Path(tiny_model_dir))
        out = tmp / "runs"
        import torch

        t0 = time.perf_counter()
        rc, stdout, stderr = _run_cli(["run", str(recipe), "--out", str(out)])
        assert rc == 0, stderr[-3000:]
        root = out / "tiny"
        yield {"tmp": tmp, "recipe": recipe, "out": out, "root": root, "stdout": stdout, "stderr": stderr,
               "seconds": time.perf_counter() - t0, "mtimes": _mtimes(root), "threads": torch.get_num_threads(),
               "metrics": _metrics(root / "eval" / "results.json"),
               "teacher": _teacher_records(root / "teach" / "teacher.jsonl")}
    finally:
        mp.undo()


def test_run_writes_manifests_report_plots_and_table(pipeline):
    root, files = pipeline["root"], pipeline["mtimes"]
    for stage in ("teach", "distill", "eval"):
        m = json.loads((root / stage / "manifest.json").read_text())
        assert m["stage"] == stage and m["config_hash"] and m["versions"]["torch"]
    teach = json.loads((root / "teach" / "manifest.json").read_text())["teacher"]
    assert teach["processes"] == 1 and teach["queries"] == N_TRAIN and set(teach["metrics"]) == {"ndcg@10", "recall@6"}
    assert len(pipeline["teacher"]) == N_TRAIN
    assert (root / "distill" / "merged" / "llmrank_student.json").is_file()
    assert {"eval/tiny-test-scores.png", "eval/tiny-test-ndcg-deltas.png", "report.md", "eval/results.json"} <= set(files)
    for png in ("eval/tiny-test-scores.png", "eval/tiny-test-ndcg-deltas.png"):
        assert (root / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (root / "report.md").read_text()
    assert "## tiny-test (4 queries, top-6 reranked)" in report and "![tiny-test-scores.png](eval/tiny-test-scores.png)" in report
    table = pipeline["stdout"]
    assert "| ranker | ndcg@10 | recall@20(rel>=1) | mrr@10(rel>=1) |" in table
    for label in ("first stage (BM25)", "teacher", "student, zero-shot", "student, distilled"):
        assert f"| {label} |" in table and f"| {label} |" in report
    assert f"report: {root / 'report.md'}" in table
    assert set(pipeline["metrics"]["tiny-test"]) == {"first_stage", "teacher", "student_before", "student"}
    for stage in ("teach", "distill", "eval"):
        assert f"[{stage}] running" in pipeline["stderr"]
    # stderr is not a terminal here: periodic progress lines instead of bars, ending with the last query
    assert f"[pointwise] {N_TRAIN}/{N_TRAIN} queries" in pipeline["stderr"]  # teach (rerank_all's own lines)
    assert pipeline["stderr"].count("[pointwise] 4/4 queries") == 3  # eval: teacher, zero-shot, distilled student
    assert "| ranker | Kendall τ vs teacher | nDCG@10 vs teacher | nDCG@10 vs qrels |" in report
    assert "## Learning curve" in report and (root / "eval" / "learning-curve.png").is_file()


def test_rerun_skips_every_stage_and_set_reruns_only_what_changed(pipeline):
    root, recipe, out = pipeline["root"], pipeline["recipe"], pipeline["out"]
    before = _mtimes(root)
    rc, stdout, stderr = _run_cli(["run", str(recipe), "--out", str(out)])
    assert rc == 0
    for stage in ("teach", "distill", "eval"):
        assert f"[{stage}] up to date ({root / stage})" in stderr
    assert "running" not in stderr
    assert _mtimes(root) == before  # nothing rewritten: not the report, not a plot
    assert "| student, distilled |" in stdout

    rc, stdout, stderr = _run_cli(["run", str(recipe), "--out", str(out), "--set", "distill.training.max_steps=3"])
    assert rc == 0, stderr[-3000:]
    assert "[teach] up to date" in stderr and "[distill] running" in stderr and "[eval] running" in stderr
    after = _mtimes(root)
    assert all(after[f] == before[f] for f in before if f.startswith("teach/"))
    assert after["distill/manifest.json"] != before["distill/manifest.json"]
    # trained afresh for 3 steps, not resumed from the 4-step run's checkpoint
    assert sorted(p.name for p in (root / "distill").glob("checkpoint-*")) == ["checkpoint-3"]
    trainer_state = json.loads((root / "distill" / "checkpoint-3" / "trainer_state.json").read_text())
    assert trainer_state["global_step"] == 3 and trainer_state["log_history"][0]["step"] == 1
    # only the distilled student's row is evaluated again
    for row in ("first_stage", "teacher", "student_before"):
        assert after[f"eval/tiny-test/{row}.json"] == before[f"eval/tiny-test/{row}.json"]
    assert after["eval/tiny-test/student.json"] != before["eval/tiny-test/student.json"]
    assert "[eval] tiny-test: student …" in stderr and "tiny-test: teacher" not in stderr


def _spawn(recipe: Path, out: Path, log: Path, env: dict) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "llmrank", "run", str(recipe), "--out", str(out)],
                                stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))


def _kill_when(proc: subprocess.Popen, ready, what: str, log: Path, timeout: float = 120) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ends (or takes too long) first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"no {what} after {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def test_sigkill_in_each_stage_then_resume(pipeline):
    tmp, recipe = pipeline["tmp"], pipeline["recipe"]
    out = tmp / "killed"
    root = out / "tiny"
    env = {**os.environ, "LLMRANK_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": str(pipeline["threads"])}
    teacher_file = root / "teach" / "teacher.jsonl"
    manifest = {s: root / s / "manifest.json" for s in ("teach", "distill", "eval")}

    # 1. killed while teaching: some records are on disk, the stage is not finished
    log1 = tmp / "run1.log"
    proc = _spawn(recipe, out, log1, env)
    _kill_when(proc, lambda: _complete_lines(teacher_file) >= 2, "two teacher records", log1)
    assert not manifest["teach"].exists()
    written = teacher_file.read_bytes()
    written = written[: written.rfind(b"\n") + 1]
    assert 2 <= written.count(b"\n") < N_TRAIN

    # 2. resumes teaching (the records written are kept, not redone), killed while training
    log2 = tmp / "run2.log"
    proc = _spawn(recipe, out, log2, env)
    checkpoint = root / "distill" / "checkpoint-2" / "trainer_state.json"  # the last file of a checkpoint
    _kill_when(proc, checkpoint.is_file, "a training checkpoint", log2)
    assert manifest["teach"].is_file() and not manifest["distill"].exists()
    assert teacher_file.read_bytes().startswith(written) and _complete_lines(teacher_file) == N_TRAIN
    teach_mtime = manifest["teach"].stat().st_mtime_ns

    # 3. teach is up to date; training resumes and finishes; killed while evaluating
    log3 = tmp / "run3.log"
    first_row = root / "eval" / "tiny-test" / "first_stage.json"
    proc = _spawn(recipe, out, log3, env)
    _kill_when(proc, first_row.is_file, "the first eval row", log3)
    text = log3.read_text()
    assert "[teach] up to date" in text and "[distill] running" in text
    assert manifest["distill"].is_file() and not manifest["eval"].exists()
    assert manifest["teach"].stat().st_mtime_ns == teach_mtime
    distill_mtime, row_mtime = manifest["distill"].stat().st_mtime_ns, first_row.stat().st_mtime_ns

    # 4. runs to completion without redoing anything done (in this process: one import of torch fewer)
    rc, stdout, stderr = _run_cli(["run", str(recipe), "--out", str(out)])
    assert rc == 0, stderr[-3000:]
    assert "[teach] up to date" in stderr and "[distill] up to date" in stderr and "[eval] running" in stderr
    assert "tiny-test: first_stage" not in stderr and "tiny-test: student …" in stderr
    assert manifest["teach"].stat().st_mtime_ns == teach_mtime
    assert manifest["distill"].stat().st_mtime_ns == distill_mtime and first_row.stat().st_mtime_ns == row_mtime
    assert "| student, distilled |" in stdout and (root / "report.md").is_file()
    # the same table as the uninterrupted run
    assert _metrics(root / "eval" / "results.json") == pipeline["metrics"]
    _assert_same_teacher(_teacher_records(teacher_file), pipeline["teacher"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_two_cpu_processes_shard_the_teacher(pipeline):
    """``accelerate launch --multi_gpu --num_processes 2`` starts two processes through torch.distributed
    even without a GPU (``--cpu`` would start one); the runner joins them in a gloo group."""
    tmp, recipe = pipeline["tmp"], pipeline["recipe"]
    out = tmp / "accelerate"
    # torchrun gives each process one thread unless told otherwise; with the clean run's thread count the
    # scores are the same to the last bit (with fewer threads they differ by ~1e-7, enough to swap near-ties
    # of the random tiny model)
    env = {**os.environ, "LLMRANK_CACHE": str(tmp / "cache-accelerate"), "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": str(pipeline["threads"])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "llmrank", "run", str(recipe), "--stage", "teach", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    teach = out / "tiny" / "teach"
    manifest = json.loads((teach / "manifest.json").read_text())
    assert manifest["teacher"]["processes"] == 2
    assert sorted(p.name for p in teach.iterdir()) == ["manifest.json", "teacher.jsonl"]  # parts joined, removed
    assert not (out / "tiny" / "distill").exists()  # --stage teach only
    two = _teacher_records(teach / "teacher.jsonl")
    one = pipeline["teacher"]
    _assert_same_teacher(two, one)  # joined in query order


# -- stage bookkeeping without a model -------------------------------------------------------------------

def test_checkpoints_of_another_configuration_or_half_written_are_not_resumed(tmp_path):
    from llmrank.runner import _last_checkpoint, _stale_checkpoints

    out = tmp_path / "distill"
    for step, complete in ((2, True), (4, True), (6, False)):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (out / "checkpoint-6" / "optimizer.pt").write_text("half")  # killed while saving: no trainer_state.json
    assert _last_checkpoint(out).name == "checkpoint-4"
    _stale_checkpoints(out, "h1")  # no record of the configuration that wrote them: start afresh
    assert not list(out.glob("checkpoint-*"))
    for step, complete in ((2, True), (6, False)):
        (out / f"checkpoint-{step}").mkdir()
        if complete:
            (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    _stale_checkpoints(out, "h1")  # same configuration: resume from the complete one, drop the torn one
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    _stale_checkpoints(out, "h2")  # the recipe changed
    assert not list(out.glob("checkpoint-*"))


def _oracle_recipe(tmp_path: Path, dataset: Path, extra: str = "", split: str = "train") -> Path:
    return _write(tmp_path, f"name: o\ndata:\n  dataset: {dataset}\n  train_split: {split}\n  k: 6\n"
                            f"teacher:\n  method: oracle\n{extra}", "o.yaml")


def test_changed_teacher_config_reteaches_instead_of_failing(tmp_path, monkeypatch):
    from llmrank.recipe import load_recipe
    from llmrank.runner import Runner

    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path / "cache"))
    beir = write_tiny_beir(tmp_path / "beir")
    recipe = _oracle_recipe(tmp_path, beir)
    teacher = tmp_path / "runs" / "o" / "teach" / "teacher.jsonl"
    assert Runner(load_recipe(recipe), tmp_path / "runs", progress=False).run("teach") == {"teach": "done"}
    six = _teacher_records(teacher)
    assert len(six) == N_TRAIN and all(len(r["ranking"]) == 6 for r in six.values())
    # other candidate lists for every query: the old records are dropped, not a "two configurations" error
    assert Runner(load_recipe(recipe, ["data.k=4"]), tmp_path / "runs", progress=False).run("teach") == {"teach": "done"}
    four = _teacher_records(teacher)
    assert len(four) == N_TRAIN and all(len(r["ranking"]) == 4 for r in four.values())
    assert Runner(load_recipe(recipe, ["data.k=4"]), tmp_path / "runs", progress=False).run("teach") == {"teach": "skipped"}


def test_eval_query_field_reaches_the_bright_loader(tmp_path, monkeypatch, capsys):
    """BRIGHT evaluated with its original queries and the annotators' reasoning: two tables, two rankings."""
    from llmrank.cli import main

    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path / "cache"))
    task = tmp_path / "bright"
    task.mkdir()
    _jsonl(task / "examples.jsonl", [
        {"id": "q1", "query": "why do cats purr", "reasoning": "laryngeal muscle vibration during breathing",
         "gold_ids": ["gold"], "excluded_ids": ["N/A"], "gold_ids_long": [], "gold_answer": ""},
        {"id": "q2", "query": "do dogs dream", "reasoning": "REM sleep brain activity in mammals",
         "gold_ids": ["rem"], "excluded_ids": [], "gold_ids_long": [], "gold_answer": ""},
    ])
    _jsonl(task / "documents.jsonl", [
        {"id": "gold", "content": "The laryngeal muscle vibration happens while breathing in and out."},
        {"id": "cats", "content": "Why do cats purr? Cats purr when cats are happy, people say about cats."},
        {"id": "rem", "content": "REM sleep shows brain activity in mammals much like waking."},
        {"id": "dogs", "content": "Do dogs dream? Dogs twitch; dogs dream of dogs, owners of dogs say."},
        {"id": "x1", "content": "Unrelated text about the weather."},
        {"id": "x2", "content": "Another unrelated text about cooking pasta."},
    ])
    recipe = _oracle_recipe(tmp_path, task, textwrap.dedent(f"""\
        eval:
          datasets:
            - {{dataset: {task}, split: biology}}
            - {{dataset: {task}, split: biology, query_field: human-reasoning}}
          baselines: [first_stage]
          top_k: 3
        """), split="biology")
    assert main(["run", str(recipe), "--out", str(tmp_path / "runs")]) == 0
    results = json.loads((tmp_path / "runs" / "o" / "eval" / "results.json").read_text())
    assert list(results) == ["bright-biology", "bright-biology-human-reasoning"]
    plain = results["bright-biology"]["first_stage"]["metrics"]["ndcg@10"]
    reasoning = results["bright-biology-human-reasoning"]["first_stage"]["metrics"]["ndcg@10"]
    assert reasoning == pytest.approx(1.0) and plain < 0.8
    rec = json.loads((tmp_path / "runs" / "o" / "eval" / "bright-biology-human-reasoning" / "first_stage.json").read_text())
    assert rec["query_field"] == "human-reasoning" and "human-written" in rec["query_source"]
    out = capsys.readouterr().out
    assert "bright-biology (2 queries)" in out and "bright-biology-human-reasoning (2 queries)" in out


def test_the_eval_stage_alone_writes_the_report(pipeline):
    """`llmrank run RECIPE --stage eval` (e.g. with another eval suite or note) rewrites report.md and prints the
    table, as a whole run does; the run folder is put back as it was at the end."""
    root, recipe, out = pipeline["root"], pipeline["recipe"], pipeline["out"]
    note = "A note given to the eval stage alone."
    rc, stdout, stderr = _run_cli(["run", str(recipe), "--out", str(out), "--stage", "eval", "--set", f"eval.note={note}"])
    assert rc == 0, stderr[-3000:]
    assert note in (root / "report.md").read_text()
    assert "| ranker | ndcg@10 |" in stdout and f"report: {root / 'report.md'}" in stdout
    rc, stdout, stderr = _run_cli(["run", str(recipe), "--out", str(out), "--stage", "eval"])
    assert rc == 0 and note not in (root / "report.md").read_text()
