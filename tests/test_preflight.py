"""Before any stage runs, a recipe's models resolve or fail in seconds with the recipe key that holds them.

A hub id that is not in the local hub cache is asked of the hub once (``HF_ENDPOINT``), with a short timeout:
offline (``HF_HUB_OFFLINE=1``), with no network (nothing answers at the endpoint), for an id the hub does not
know and for one it knows. Real HTTP servers on localhost stand in for the hub.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmrank.errors import LlmrankError

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data") if Path("/work/shared/data").is_dir() else ROOT.parent / "shared" / "data"


class _Hub(BaseHTTPRequestHandler):
    known = {"/api/models/org/known"}
    asked: list[str] = []

    def do_GET(self):  # noqa: N802
        _Hub.asked.append(self.path)
        status = 200 if self.path in self.known else 404
        body = b'{"id": "org/known"}' if status == 200 else b'{"error": "Repository not found"}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def hub(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    _Hub.asked = []
    yield server
    server.shutdown()


def _recipe(tmp_path, teacher_model="smollm2-135m", student_model="smollm2-135m", extra=""):
    from llmrank.recipe import load_recipe

    p = tmp_path / "r.yaml"
    p.write_text(f"""
name: pre
data: {{dataset: {DATA}/scifact, queries: 2, k: 3}}
teacher: {{method: pointwise, model: {teacher_model}, backend: hf}}
distill: {{model: {student_model}}}
{extra}
""")
    return load_recipe(p), str(p)


def test_a_hub_id_the_hub_knows_passes_and_is_asked_once(hub, tmp_path):
    from llmrank.recipe import check_models

    recipe, where = _recipe(tmp_path, student_model="org/known")
    check_models(recipe, where)
    assert _Hub.asked == ["/api/models/org/known"]


def test_an_unknown_hub_id_is_named_with_its_key(hub, tmp_path):
    from llmrank.recipe import check_models

    recipe, where = _recipe(tmp_path, student_model="org/missing")
    with pytest.raises(LlmrankError) as e:
        check_models(recipe, where)
    msg = str(e.value)
    assert msg.startswith(f"{where}: key 'distill.model': hub id 'org/missing': no such model"), msg
    assert "\n" not in msg


def test_no_network_fails_within_the_timeout_naming_the_key(monkeypatch, tmp_path):
    """A socket that accepts connections and never answers: the check gives up after its timeout (a library's
    retry loop would take a minute)."""
    from llmrank.recipe import check_models

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("LLMRANK_HUB_TIMEOUT", "0.5")
    recipe, where = _recipe(tmp_path, teacher_model="Qwen/Qwen9-1000B-Instruct")
    t0 = time.perf_counter()
    with pytest.raises(LlmrankError, match=r"key 'teacher.model': hub id 'Qwen/Qwen9-1000B-Instruct' is not in the "
                                           r"local hub cache and the hub cannot be reached"):
        check_models(recipe, where)
    assert time.perf_counter() - t0 < 5
    silent.close()


def test_offline_a_hub_id_not_in_the_cache_is_named(tmp_path, monkeypatch):
    from llmrank.recipe import check_models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe, where = _recipe(tmp_path, student_model="Qwen/Qwen2.5-3B-Instruct")
    with pytest.raises(LlmrankError, match=r"key 'distill.model': unknown model 'Qwen/Qwen2.5-3B-Instruct'.*offline"):
        check_models(recipe, where)


@pytest.mark.parametrize("extra,key", [
    ("teacher: {method: pointwise, model: smollm2-135m, backend: vllm}", "teacher.backend"),
    ("refine: {method: grpo, training: {use_vllm: true}}", "refine.training.use_vllm"),
])
def test_vllm_asked_for_without_vllm_is_found_before_teaching(tmp_path, extra, key):
    import importlib.util

    from llmrank.recipe import check_models, load_recipe

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    p = tmp_path / "v.yaml"
    teacher = "" if extra.startswith("teacher") else "teacher: {method: pointwise, model: smollm2-135m}"
    p.write_text(f"""
name: pre
data: {{dataset: {DATA}/scifact, queries: 2, k: 3}}
distill: {{kind: reasoning, model: smollm2-135m}}
{teacher}
{extra}
""".replace("method: pointwise", "method: rationale"))
    with pytest.raises(LlmrankError, match=rf"{p}: key '{key}': .*needs vLLM"):
        check_models(load_recipe(p), str(p))


def test_the_cli_names_the_key_of_an_unreachable_student_before_teaching(tmp_path):
    """``llmrank run`` on a recipe whose student is a hub id that cannot be fetched (offline) exits 2 with one
    line naming the key, and writes no teacher output."""
    import os

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
name: pre
data: {{dataset: {DATA}/scifact, queries: 2, k: 3}}
teacher: {{method: dense, model: minilm-l6}}
distill: {{model: Qwen/Qwen2.5-1.5B-Instruct}}
""")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "llmrank", "run", str(recipe), "--out", str(tmp_path / "runs")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert lines == [f"llmrank run: error: {recipe}: key 'distill.model': unknown model 'Qwen/Qwen2.5-1.5B-Instruct': "
                     "not an alias (smollm2-135m, gemma3-270m), not a local folder, and not in the local hub cache "
                     "(offline mode: HF_HUB_OFFLINE is set)"], p.stderr
    assert not (tmp_path / "runs" / "pre" / "teach").exists()


GPU_RECIPES = ["instruction-distill-7b", "listwise-margin-mse", "reasoning-grpo", "dpo"]


@pytest.fixture
def silent_hub(monkeypatch):
    """A hub endpoint that accepts connections and never answers (a firewalled or unreachable hub)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("LLMRANK_HUB_TIMEOUT", "0.5")
    yield c.ENDPOINT
    silent.close()


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_each_gpu_recipe_names_the_key_of_its_unreachable_teacher(name, silent_hub, monkeypatch):
    """Every shipped GPU recipe, run on hf where the hub cannot be reached: the pre-run check's one line names
    the recipe key and the hub id it holds (the teacher is checked first)."""
    import yaml

    from llmrank.recipe import check_models, load_recipe

    monkeypatch.setenv("LLMRANK_DATA", str(DATA))
    path = ROOT / "recipes" / f"{name}.yaml"
    model = yaml.safe_load(path.read_text())["teacher"]["model"]
    recipe = load_recipe(path, ["teacher.backend=hf"])
    with pytest.raises(LlmrankError) as e:
        check_models(recipe, str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}: key 'teacher.model': hub id '{model}' is not in the local hub cache and the hub "
                          f"cannot be reached ({silent_hub}: "), msg
    assert "\n" not in msg


def test_the_cli_names_the_unreachable_teacher_of_a_gpu_recipe_in_one_line(tmp_path):
    """``llmrank run recipes/instruction-distill-7b.yaml --set teacher.backend=hf`` with a hub that never answers
    (``HF_ENDPOINT``; the libraries believe they are online): exit 2, one stderr line naming the key, no
    teacher output. The time it takes is measured by eval/bench_unreachable.py, not here."""
    import os

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PYTHONPATH=str(ROOT), HF_ENDPOINT=endpoint, LLMRANK_DATA=str(DATA))
    recipe = ROOT / "recipes" / "instruction-distill-7b.yaml"
    try:
        p = subprocess.run([sys.executable, "-m", "llmrank", "run", str(recipe), "--set", "teacher.backend=hf",
                            "--out", str(tmp_path / "runs")], capture_output=True, text=True, env=env, timeout=300)
    finally:
        silent.close()
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, p.stderr
    import yaml

    model = yaml.safe_load(recipe.read_text())["teacher"]["model"]
    assert lines[0].startswith(f"llmrank run: error: {recipe}: key 'teacher.model': hub id '{model}' "
                               f"is not in the local hub cache and the hub cannot be reached ({endpoint}: "), lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("teacher.jsonl"))
