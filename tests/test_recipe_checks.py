"""Every recipe value is checked at load, before any work, against the registries (issue: "Every recipe value
is checked at load"): each mistake is named with FILE:LINE, the key path, and "did you mean" where a close
name exists. One test per mistake; each of them reached a stage (some after minutes of work) before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmrank.errors import LlmrankError
from llmrank.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
BASE = "name: t\ndata:\n  dataset: /x\n"


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(LlmrankError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    return msg.replace(str(path), "r.yaml")


def test_fusion_member_method_typo(tmp_path):
    msg = _error(tmp_path, BASE + "teacher:\n  method: fusion\n  members:\n    - {method: pointwise}\n"
                                  "    - method: dnese\n")
    assert "r.yaml:8: key 'teacher.members[1].method': unknown teacher method 'dnese'; did you mean 'dense'?" in msg


def test_teacher_method_typo(tmp_path):
    msg = _error(tmp_path, BASE + "teacher:\n  method: pointwize\n")
    assert "r.yaml:5: key 'teacher.method': unknown teacher method 'pointwize'; did you mean 'pointwise'?" in msg


def _model_error(tmp_path: Path, text: str) -> str:
    """Models are checked before any stage runs (:func:`llmrank.recipe.check_models`, which ``Runner.run``
    calls first), not at load: a GPU recipe still loads offline, e.g. for ``llmrank plan`` or a rehearsal."""
    from llmrank.recipe import check_models

    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(LlmrankError) as info:
        check_models(load_recipe(path), str(path))
    return str(info.value).replace(str(path), "r.yaml")


def test_unknown_teacher_model_offline(tmp_path, monkeypatch):
    """No alias, no folder, not in the local hub cache, and offline: named before any work (no hub retries)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = _model_error(tmp_path, BASE + "teacher:\n  model: nosuchmodel\n")
    assert "r.yaml: key 'teacher.model': unknown model 'nosuchmodel'" in msg and "offline" in msg


def test_unknown_teacher_model_online(tmp_path, monkeypatch):
    """Online, a name that is no alias, no folder and not hub-shaped (org/name) is refused without asking a hub."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    msg = _model_error(tmp_path, BASE + "teacher:\n  model: nosuchmodel\n")
    assert "r.yaml: key 'teacher.model': unknown model 'nosuchmodel'" in msg and "org/name" in msg


def test_fusion_member_model_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    msg = _model_error(tmp_path, BASE + "teacher:\n  method: fusion\n  members:\n    - {method: pointwise, "
                                        "model: someorg/some-model-7b}\n")
    assert "key 'teacher.members[0].model'" in msg and "offline" in msg


def test_distill_model_missing_path(tmp_path):
    msg = _model_error(tmp_path, BASE + f"distill:\n  model: {tmp_path}/no/such/model\n")
    assert "r.yaml: key 'distill.model'" in msg and "no such model folder" in msg


def test_distill_prompt_of_another_method(tmp_path):
    msg = _error(tmp_path, BASE + "distill:\n  prompt: prp\n")
    assert "r.yaml:5: key 'distill.prompt'" in msg and "pairwise" in msg


def test_distill_prompt_unknown(tmp_path):
    msg = _error(tmp_path, BASE + "distill:\n  prompt: yes_noo\n")
    assert "r.yaml:5: key 'distill.prompt'" in msg


def test_member_option_typo(tmp_path):
    msg = _error(tmp_path, BASE + "teacher:\n  method: fusion\n  members:\n    - method: setwise\n"
                                  "      options: {set_sise: 3}\n")
    assert ("r.yaml:8: key 'teacher.members[0].options.set_sise': not an option of method 'setwise'; "
            "did you mean 'set_size'?") in msg


def test_member_option_batchsize(tmp_path):
    msg = _error(tmp_path, BASE + "teacher:\n  method: fusion\n  members:\n    - method: pointwise\n"
                                  "      options: {batchsize: 8}\n")
    assert "key 'teacher.members[0].options.batchsize': not an option of method 'pointwise'" in msg


def test_teacher_option_wrong_type(tmp_path):
    msg = _error(tmp_path, BASE + "teacher:\n  method: listwise\n  options: {window: many}\n")
    assert "key 'teacher.options.window'" in msg and "integer" in msg


def test_export_dtype(tmp_path):
    msg = _error(tmp_path, BASE + "distill: {}\nexport:\n  dtype: float8\n")
    assert "r.yaml:6: key 'export.dtype': unknown dtype 'float8'" in msg and "bfloat16" in msg


def test_eval_row_typo(tmp_path):
    msg = _error(tmp_path, BASE + "eval:\n  datasets: [{dataset: /x}]\n  baselines: [teacher, studnet]\n")
    assert "key 'eval.baselines[1]': unknown eval row 'studnet'; did you mean 'student'?" in msg


def test_loss_option_typo(tmp_path):
    msg = _error(tmp_path, BASE + "distill:\n  loss: listnet\n  loss_options: {temprature: 2}\n")
    assert ("r.yaml:6: key 'distill.loss_options.temprature': not an option of loss 'listnet'; "
            "did you mean 'temperature'?") in msg


def test_combined_loss_terms_checked(tmp_path):
    msg = _error(tmp_path, BASE + "distill:\n  loss: combined\n  loss_options: {weights: {listnet: 1, lable_ce: 1}}\n")
    assert "key 'distill.loss_options.weights.lable_ce': unknown loss 'lable_ce'" in msg


def test_members_beside_pointwise(tmp_path):
    msg = _error(tmp_path, BASE + "teacher:\n  method: pointwise\n  members: [{method: dense}]\n  fusion: borda\n")
    assert "r.yaml:6: key 'teacher.members': 'members' is for method 'fusion'" in msg
    assert "r.yaml:7: key 'teacher.fusion': 'fusion' is for method 'fusion'" in msg


def test_eval_without_datasets(tmp_path):
    msg = _error(tmp_path, BASE + "eval:\n  metrics: [ndcg@10]\n")
    assert "r.yaml:4: key 'eval'" in msg and "datasets" in msg


def test_duplicated_key(tmp_path):
    msg = _error(tmp_path, BASE + "teacher:\n  method: pointwise\n  method: listwise\n")
    assert "r.yaml:6" in msg and "key 'method' is given twice (lines 5 and 6)" in msg


def test_second_data_section(tmp_path):
    msg = _error(tmp_path, BASE + "teacher: {method: pointwise}\ndata:\n  dataset: /y\n")
    assert "r.yaml:5" in msg and "key 'data' is given twice (lines 2 and 5)" in msg


def test_refine_method_typo(tmp_path):
    msg = _error(tmp_path, BASE + "distill: {}\nrefine:\n  method: dpp\n")
    assert "r.yaml:6: key 'refine.method': unknown refine method 'dpp'; did you mean 'dpo'?" in msg


def test_reward_option_wrong_type(tmp_path):
    msg = _error(tmp_path, BASE + "teacher: {method: rationale}\ndistill: {kind: reasoning}\nrefine:\n  method: grpo\n"
                                  "  rewards: [{name: format, options: {tags: maybe}}]\n")
    assert "key 'refine.rewards[0]'" in msg and "option 'tags'" in msg and "boolean" in msg


def test_all_problems_in_one_message(tmp_path):
    """Every mistake of a recipe is named at once, not one per attempt."""
    msg = _error(tmp_path, BASE + "teacher:\n  method: pointwise\n  options: {variant: false}\n"
                                  "distill:\n  loss_options: {temprature: 2}\nexport: {dtype: float8}\n")
    assert "teacher.options.variant" in msg and "distill.loss_options.temprature" in msg and "export.dtype" in msg


def test_library_config_classes_are_read_from_the_installed_classes(tmp_path, monkeypatch):
    """``distill.training`` / ``refine.training`` are checked against ``dataclasses.fields()`` of the installed
    classes (kept in the cache per library version); a class named by a plugin is read the same way, with
    the fields it inherits from another package; a class that cannot be read is an error, never an empty
    schema that would switch validation off."""
    import dataclasses

    from transformers import TrainingArguments

    from llmrank import configs

    monkeypatch.setenv("LLMRANK_FIELDS_CACHE", str(tmp_path / "fields"))
    configs._library_fields.cache_clear()
    fields = configs.library_fields("TrainingArguments")
    assert set(fields) == {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    assert list((tmp_path / "fields").glob("transformers_TrainingArguments-*.json"))
    st = configs.library_fields("sentence_transformers.cross_encoder.training_args:CrossEncoderTrainingArguments")
    assert {"learning_rate", "max_steps", "batch_sampler"} <= set(st)  # inherited from transformers + its own
    with pytest.raises(LlmrankError, match="no_such_pkg.mod:Config: cannot be imported"):
        configs.library_fields("no_such_pkg.mod:Config")
    with pytest.raises(LlmrankError, match="is not a dataclass"):
        configs.library_fields("llmrank.errors:LlmrankError")
    configs._library_fields.cache_clear()


def test_a_second_load_imports_no_deep_learning_library(tmp_path):
    """Once the library configs' fields are cached (the first load after an install reads the classes), a
    recipe with training and refine sections is checked without importing torch, transformers or trl."""
    path = tmp_path / "r.yaml"
    path.write_text("name: t\ndata: {dataset: /x}\nteacher: {method: rationale}\ndistill:\n  kind: reasoning\n"
                    "  training: {max_steps: 3}\nrefine:\n  method: grpo\n  training: {num_generations: 4, beta: 0.0}\n")
    env = {**os.environ, "LLMRANK_FIELDS_CACHE": str(tmp_path / "fields"), "PYTHONPATH": str(REPO)}
    code = ("import sys; from llmrank.recipe import load_recipe; load_recipe(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))")
    first = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600,
                           cwd=REPO, env=env)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600,
                            cwd=REPO, env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "[]"


@pytest.mark.parametrize("method, option, value", [("listwise", "window", 0), ("first", "step", 0),
                                                   ("setwise", "set_size", 1), ("pairwise", "top_k", 0)])
def test_teacher_option_out_of_bounds(tmp_path, method, option, value):
    msg = _error(tmp_path, BASE + f"teacher:\n  method: {method}\n  options: {{{option}: {value}}}\n")
    assert f"r.yaml:6: key 'teacher.options.{option}'" in msg and "greater than or equal to" in msg, msg


def test_teacher_option_in_bounds_loads(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(BASE + "teacher:\n  method: listwise\n  options: {window: 4, step: 2, max_doc_tokens: null}\n")
    assert load_recipe(path).teacher.options == {"window": 4, "step": 2, "max_doc_tokens": None}


def test_missing_inputs_are_named_with_the_recipe_file(tmp_path):
    from llmrank.recipe import check_inputs

    data = tmp_path / "data.jsonl"
    data.write_text('{"qid": "q", "query": "x", "docs": [{"docid": "d", "text": "t"}]}\n')
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\ndata:\n  dataset: {data}\n  first_stage: {tmp_path}/no.run\nteacher: {{method: oracle}}\n")
    with pytest.raises(LlmrankError, match=rf"^{path}: key 'data.first_stage': '{tmp_path}/no.run' is not 'bm25'"):
        check_inputs(load_recipe(path), str(path))
    path.write_text(f"name: t\ndata:\n  dataset: {data}\nteacher: {{method: oracle}}\ndistill: {{}}\n"
                    f"eval: {{datasets: [{{dataset: {tmp_path}/nodata}}]}}\n")
    with pytest.raises(LlmrankError, match=rf"^{path}: key 'eval.datasets\[0\].dataset': dataset path"):
        check_inputs(load_recipe(path), str(path))
    for ok in ("bm25", "dense", "dense:minilm-l6", "bm25+dense", str(data)):
        path.write_text(f"name: t\ndata:\n  dataset: {data}\n  first_stage: '{ok}'\nteacher: {{method: oracle}}\n")
        check_inputs(load_recipe(path), str(path))
