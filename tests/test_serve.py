"""Serving through vLLM, end to end with the real server (``.venv-vllm``, made by ``make vllm``).

A SmolLM2-135M pointwise student (a LoRA with seeded random weights, saved by the distiller's own
``save_student`` so that the merge is not a no-op) is exported in bfloat16 and float32 and served with
``--runner pooling`` on loopback; its ``/rerank`` and ``/score`` answers are compared with the ``hf``
backend (``load_student``: PointwiseReranker with ``variants=False``) on the same query and documents.
Then the plain SmolLM2 checkpoint is served for generation (fp32) and the ``openai`` backend is compared
with ``hf``: P(yes), the top-k fallback, a teacher run. Servers run one after the other (one per class);
each takes 35–90 s to start on a 2-core box. Measured numbers are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llmrank.errors import LlmrankError
from llmrank.serve.launch import VENV_PYTHON

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not (VENV_PYTHON.exists() or os.environ.get("LLMRANK_VLLM_PYTHON")),
                       reason=f"needs the vLLM virtualenv {VENV_PYTHON} (run `make vllm`)"),
]

QUERY = "what is the boiling point of water"
DOCS = [
    "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level.",
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris.",
    "At high altitude the air pressure is lower, so water boils below 100 degrees Celsius.",
    "Cats sleep for twelve to sixteen hours a day.",
    "Boiling is the rapid vaporization of a liquid when it is heated to its boiling point. " * 12,  # > max_doc_tokens
    "Bananas are rich in potassium and vitamin B6.",
]
MAX_DOC_TOKENS = 64
MEASURED: dict = {}


def report(key: str, value) -> None:
    MEASURED[key] = value
    print(f"\n[test_serve] {key}: {value}")


@pytest.fixture(scope="module", autouse=True)
def _summary():
    t0 = time.perf_counter()
    yield
    MEASURED["module_seconds"] = round(time.perf_counter() - t0, 1)
    print("\n[test_serve] measured: " + json.dumps(MEASURED, default=str))


# -- the student and its exports -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def student_dir(smollm2_dir, tmp_path_factory) -> Path:
    """A pointwise SmolLM2 student: LoRA r=8 on all linear layers with seeded random B (so the merged model
    differs from the base), saved exactly as ``PointwiseStudent.train`` saves one."""
    from conftest import make_pointwise_student

    out = make_pointwise_student(smollm2_dir, tmp_path_factory.mktemp("student"), max_doc_tokens=MAX_DOC_TOKENS)
    return out / "adapter"


@pytest.fixture(scope="module")
def export_bf16(student_dir, tmp_path_factory) -> Path:
    from llmrank.serve.export import export_student

    out = tmp_path_factory.mktemp("export") / "student-bf16"
    export_student(student_dir, out, "bfloat16")
    return out


@pytest.fixture(scope="module")
def export_fp32(student_dir, tmp_path_factory) -> Path:
    from llmrank.serve.export import export_student

    out = tmp_path_factory.mktemp("export") / "student-fp32"
    export_student(student_dir, out, "float32")
    return out


def hf_student(export_dir: Path):
    """The ``hf`` reference: the exported weights through load_student (float32 compute, variants=False)."""
    from llmrank.students import load_student

    reranker = load_student(export_dir, dtype="float32")
    assert reranker.variants is False and reranker.max_doc_tokens == MAX_DOC_TOKENS
    return reranker


@pytest.fixture(scope="module")
def hf(smollm2_dir):
    """The plain SmolLM2 checkpoint through the hf backend, float32."""
    from llmrank.backends.hf import HFBackend

    return HFBackend(str(smollm2_dir), dtype="float32")


def tiny_dataset(path: Path) -> Path:
    items = [
        {"query": QUERY, "qid": "q1", "hits": [{"docid": f"a{i}", "content": d} for i, d in enumerate(DOCS)]},
        {"query": "where is the eiffel tower", "qid": "q2",
         "hits": [{"docid": f"b{i}", "content": d} for i, d in enumerate(DOCS[:4])]},
    ]
    path.write_text(json.dumps(items))
    return path


# -- launching: command line, failures, stopping (no vLLM start needed) -------------------------------------

def test_serve_command_is_loopback_by_default(export_bf16, capsys):
    from llmrank.cli import main
    from llmrank.serve.launch import VLLMServer

    assert main(["serve", str(export_bf16), "--dry-run"]) == 0
    line = capsys.readouterr().out.strip()
    assert "--host 127.0.0.1" in line and "--port 8000" in line
    assert line.startswith("VLLM_CPU_KVCACHE_SPACE=")
    for flag in ("--runner pooling", "--hf-overrides", "--chat-template", "--dtype bfloat16",
                 "-m vllm.entrypoints.openai.api_server"):
        assert flag in line
    assert "from_2_way_softmax" in line and "score_template.jinja" in line

    server = VLLMServer(export_bf16)  # the Python API: loopback and a free port
    cmd = server.command
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
    public = VLLMServer(export_bf16, host="0.0.0.0", port=8123).command
    assert public[public.index("--host") + 1] == "0.0.0.0"


def test_startup_failure_reports_the_log(export_bf16):
    from llmrank.serve.launch import VLLMServer

    server = VLLMServer(export_bf16, startup_timeout=30)
    server.command = [sys.executable, "-c", "print('engine exploded: no memory'); import sys; sys.exit(3)"]
    t0 = time.perf_counter()
    with pytest.raises(LlmrankError, match=r"(?s)exited with status 3.*engine exploded"):
        server.__enter__()
    assert time.perf_counter() - t0 < 10 and not server.running()


def test_stop_ends_the_whole_process_group(export_bf16):
    from llmrank.serve.launch import VLLMServer, _group_alive

    server = VLLMServer(export_bf16)
    # a "server" that starts a child in its group and ignores SIGTERM: stop() must still end both
    server.command = [sys.executable, "-c",
                      "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); print('up', flush=True); "
                      "time.sleep(600)"]
    server.start()
    time.sleep(1.0)
    assert server.running()
    pgid = server.proc.pid
    server.stop(timeout=2)
    assert not server.running() and not _group_alive(pgid)


def test_no_vllm_python_is_a_clear_error(tmp_path, monkeypatch):
    from llmrank.serve import launch

    monkeypatch.setenv("LLMRANK_VLLM_PYTHON", sys.executable if not _has_vllm(sys.executable) else "/nonexistent/python")
    with pytest.raises(LlmrankError, match="make vllm"):
        launch.find_vllm_python()
    monkeypatch.delenv("LLMRANK_VLLM_PYTHON")
    monkeypatch.setattr(launch, "VENV_PYTHON", tmp_path / "none" / "python")
    if not _has_vllm(sys.executable):
        with pytest.raises(LlmrankError, match=r"vLLM is not installed.*make vllm"):
            launch.find_vllm_python()


def _has_vllm(python: str) -> bool:
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([python, "-c", code]).returncode == 0


def test_connection_refused_is_a_clear_error():
    from llmrank.serve.client import RerankClient
    from llmrank.serve.launch import free_port

    client = RerankClient(f"http://127.0.0.1:{free_port()}", model="student")
    with pytest.raises(LlmrankError, match=r"cannot reach a server at http://127\.0\.0\.1:\d+ \(connection refused\)"
                                           r".*llmrank serve"):
        client.score(QUERY, DOCS[:1])


def test_vllm_backend_without_vllm_is_a_clear_error():
    if _has_vllm(sys.executable):
        pytest.skip("this python has vLLM")
    from llmrank.backends import make_backend

    with pytest.raises(LlmrankError, match=r"vLLM is not installed.*make vllm"):
        make_backend("vllm", "smollm2-135m")


def test_served_method_needs_an_http_backend():
    from llmrank.serve.client import RerankClient

    class Local:
        model = "smollm2-135m"

    with pytest.raises(LlmrankError, match=r"--backend http://HOST:PORT"):
        RerankClient(Local())


# -- the exported template renders the prompt llmrank builds ------------------------------------------------

def test_exported_template_renders_the_pointwise_prompt(export_bf16):
    from transformers import AutoTokenizer

    from llmrank.prompts import load_prompt
    from llmrank.rerankers.pointwise import build_pointwise_prompt, truncate_document

    tok = AutoTokenizer.from_pretrained(export_bf16)
    template = (export_bf16 / "score_template.jinja").read_text()
    prompt = load_prompt("yes_no")
    for doc in DOCS:
        cut, _ = truncate_document(tok, doc, MAX_DOC_TOKENS)
        # what vLLM's /rerank and /score do: messages with roles query/document, no generation prompt flag
        served = tok.apply_chat_template([{"role": "query", "content": QUERY}, {"role": "document", "content": cut}],
                                         chat_template=template, tokenize=False)
        assert served == build_pointwise_prompt(prompt, tok, QUERY, doc, MAX_DOC_TOKENS)[0]


# -- the pooling server (bfloat16 export) -------------------------------------------------------------------

class TestPoolingServerBF16:
    @pytest.fixture(scope="class")
    def server(self, export_bf16):
        from llmrank.serve.launch import VLLMServer

        with VLLMServer(export_bf16, max_model_len=512, served_model_name="student") as s:
            report("startup_seconds_pooling_bf16", round(s.startup_seconds, 1))
            yield s
        assert not s.running()

    @pytest.fixture(scope="class")
    def hf_ref(self, export_bf16):
        return hf_student(export_bf16)

    @pytest.fixture(scope="class")
    def reference(self, hf_ref):
        return hf_ref.score(QUERY, DOCS)

    def test_rerank_agrees_with_hf(self, server, export_bf16, reference):
        """bfloat16 arithmetic moves this model's yes−no logit by up to ~0.1 (transformers' own bf16 forward
        differs from its fp32 forward on the same weights by as much as vLLM's does), i.e. up to ~0.03 in a
        score near 0.5. So: scores within 0.05, and the order equal to hf's wherever hf's scores are more
        than that noise (0.05) apart. The float32 export below is held to 1e-4 and the exact order."""
        from llmrank.serve.client import RerankClient
        from llmrank.students import load_student

        client = RerankClient(server.url, export_dir=export_bf16)
        assert client.model == "student"  # found in /v1/models by the export folder
        scores = client.score(QUERY, DOCS)
        diff = float(np.max(np.abs(scores - reference)))
        hf_bf16 = load_student(export_bf16, dtype="bfloat16").score(QUERY, DOCS)
        report("bf16_rerank_vs_hf_fp32_max_abs_diff", round(diff, 5))
        report("hf_bf16_vs_hf_fp32_max_abs_diff", round(float(np.max(np.abs(hf_bf16 - reference))), 5))
        report("bf16_scores_vllm_vs_hf", [[round(float(a), 4), round(float(b), 4)] for a, b in zip(scores, reference)])
        report("bf16_order_equal", list(np.argsort(-scores, kind="stable")) == list(np.argsort(-reference, kind="stable")))
        assert diff < 0.05
        for i in range(len(DOCS)):
            for j in range(len(DOCS)):
                if reference[i] > reference[j] + 0.05:
                    assert scores[i] > scores[j], (i, j)
        assert client.stats["truncated_docs"] == 1 and client.stats["requests"] == 1

    def test_score_endpoint_gives_the_same_scores(self, server, export_bf16):
        from llmrank.serve.client import RerankClient

        client = RerankClient(server.url, export_dir=export_bf16)
        a, b = client.score(QUERY, DOCS), client.score(QUERY, DOCS, endpoint="score")
        assert float(np.max(np.abs(a - b))) < 1e-6

    def test_server_renders_the_identical_prompt(self, server, export_bf16):
        """The server's own rendering (``/tokenize`` with query/document messages goes through the served chat
        template) is token for token the prompt the hf backend scores; /rerank's usage counts the same tokens."""
        import httpx
        from transformers import AutoTokenizer

        from llmrank.prompts import load_prompt
        from llmrank.rerankers.pointwise import build_pointwise_prompt, truncate_document
        from llmrank.serve.client import RerankClient

        tok = AutoTokenizer.from_pretrained(export_bf16)
        prompt = load_prompt("yes_no")
        total = 0
        for doc in DOCS:
            cut, _ = truncate_document(tok, doc, MAX_DOC_TOKENS)
            r = httpx.post(server.url + "/tokenize", json={"model": "student", "messages": [
                {"role": "query", "content": QUERY}, {"role": "document", "content": cut}]}, timeout=60)
            assert r.status_code == 200, r.text
            expected = tok.encode(build_pointwise_prompt(prompt, tok, QUERY, doc, MAX_DOC_TOKENS)[0], add_special_tokens=False)
            assert r.json()["tokens"] == expected
            total += len(expected)
        client = RerankClient(server.url, export_dir=export_bf16)
        client.score(QUERY, DOCS)
        assert client.stats["prompt_tokens"] == total

    def test_rerank_command_with_served_method(self, server, export_bf16, tmp_path, capsys):
        """`llmrank rerank … --backend URL --method served --model EXPORT` writes the served scores' order."""
        from llmrank.cli import main
        from llmrank.data.trec import read_run
        from llmrank.serve.client import RerankClient

        data = tiny_dataset(tmp_path / "tiny.json")
        out = tmp_path / "served.trec"
        code = main(["rerank", str(data), "--backend", server.url, "--method", "served", "--model", str(export_bf16),
                     "--top-k", "6", "-o", str(out)])
        assert code == 0, capsys.readouterr().err
        run = read_run(out)
        client = RerankClient(server.url, export_dir=export_bf16)
        for qid, query, n in (("q1", QUERY, 6), ("q2", "where is the eiffel tower", 4)):
            scores = client.score(query, DOCS[:n])
            expected = [f"{'a' if qid == 'q1' else 'b'}{i}" for i in np.argsort(-scores, kind="stable")]
            assert run.docids(qid) == expected
            got = dict(run[qid])
            assert max(abs(got[d] - scores[int(d[1:])]) for d in expected) < 1e-5
        err = capsys.readouterr().err
        assert "reranked by served" in err and "1 documents were truncated" in err

    def test_bad_input_gives_clear_errors(self, server, export_bf16):
        from llmrank.serve.client import RerankClient

        client = RerankClient(server.url, export_dir=export_bf16)
        with pytest.raises(LlmrankError, match=r"no documents to score \(HTTP 400"):
            client.score(QUERY, [])
        long_doc = "water boils at one hundred degrees " * 200  # ~1,400 tokens > --max-model-len 512
        raw = RerankClient(server.url, model="student")  # no export folder: nothing cuts the document
        with pytest.raises(LlmrankError, match=r"a document is too long for the served model \(HTTP 400: .*maximum context "
                                               r"length is 512 tokens.*pass the export folder"):
            raw.score(QUERY, [DOCS[0], long_doc])
        # the same document is fine when cut by the client (export folder) or by vLLM (max_tokens_per_doc)
        cut = client.score(QUERY, [long_doc])
        by_server = RerankClient(server.url, model="student", max_tokens_per_doc=MAX_DOC_TOKENS).score(QUERY, [long_doc])
        assert abs(cut[0] - by_server[0]) < 0.02
        with pytest.raises(LlmrankError, match=r"does not serve a model named 'nope' \(it serves: student"):
            RerankClient(server.url, model="nope").score(QUERY, DOCS[:2])
        with pytest.raises(LlmrankError, match=r"does not serve a model named 'smollm2-135m'"):
            RerankClient(server.url, model="smollm2-135m").score(QUERY, DOCS[:2])


# -- the pooling server (float32 export) --------------------------------------------------------------------

class TestPoolingServerFP32:
    @pytest.fixture(scope="class")
    def server(self, export_fp32):
        from llmrank.serve.launch import VLLMServer

        with VLLMServer(export_fp32, max_model_len=512) as s:
            report("startup_seconds_pooling_fp32", round(s.startup_seconds, 1))
            yield s

    def test_rerank_agrees_with_hf_to_float_precision(self, server, export_fp32, student_dir):
        from llmrank.serve.client import RerankClient
        from llmrank.students import load_student

        reference = hf_student(export_fp32).score(QUERY, DOCS)
        unmerged = load_student(student_dir, dtype="float32").score(QUERY, DOCS)  # the LoRA adapter, not merged
        report("fp32_merged_vs_adapter_max_abs_diff", float(np.max(np.abs(unmerged - reference))))
        assert float(np.max(np.abs(unmerged - reference))) < 1e-4
        scores = RerankClient(server.url, export_dir=export_fp32).score(QUERY, DOCS)
        diff = float(np.max(np.abs(scores - reference)))
        report("fp32_rerank_vs_hf_max_abs_diff", diff)
        assert diff < 1e-4
        assert list(np.argsort(-scores, kind="stable")) == list(np.argsort(-reference, kind="stable"))


# -- a generation server and the openai backend ----------------------------------------------------------

class TestGenerationServer:
    @pytest.fixture(scope="class")
    def server(self, smollm2_dir):
        from llmrank.serve.launch import VLLMServer

        with VLLMServer(smollm2_dir, runner="generate", dtype="float32", served_model_name="smollm2") as s:
            report("startup_seconds_generate_fp32", round(s.startup_seconds, 1))
            yield s

    def openai(self, server, smollm2_dir, **kw):
        from llmrank.backends.openai import OpenAIBackend

        return OpenAIBackend(str(smollm2_dir), base_url=server.url, served_model="smollm2", **kw)

    def test_openai_p_yes_agrees_with_hf(self, server, smollm2_dir, hf):
        from llmrank.backends import make_backend
        from llmrank.rerankers.pointwise import PointwiseReranker

        docs = DOCS[:5]
        backend = self.openai(server, smollm2_dir)
        ours = PointwiseReranker(backend).score(QUERY, docs)
        ref = PointwiseReranker(hf).score(QUERY, docs)
        diff = float(np.max(np.abs(ours - ref)))
        report("fp32_openai_vs_hf_p_yes_max_abs_diff", diff)
        assert diff < 1e-3
        assert backend.token_ids_supported is True and backend.stats["labels_missing"] == 0
        assert backend.stats["calls"] == 5 and backend.stats["prompt_tokens"] > 0
        # --backend http://… --model DIR: the server also answers to the folder's path
        by_dir = make_backend(server.url, str(smollm2_dir))
        assert float(np.max(np.abs(PointwiseReranker(by_dir).score(QUERY, docs) - ref))) < 1e-3

    def test_top_k_fallback_handles_labels_outside_the_top_k(self, server, smollm2_dir, hf):
        from llmrank.rerankers.pointwise import PointwiseReranker

        backend = self.openai(server, smollm2_dir, logprobs=2)
        backend.token_ids_supported = False  # as with a server that has no logprob_token_ids
        prompts, _ = PointwiseReranker(hf).prompts_for(QUERY, DOCS[:5])
        lp = backend.label_logprobs(prompts, ["yes", "no"])
        exact = hf.label_logprobs(prompts, ["yes", "no"])
        assert lp.shape == (5, 2)
        assert backend.stats["labels_missing"] > 0 and np.isinf(lp).any()
        seen = np.isfinite(lp)
        assert np.all(lp[seen] <= exact[seen] + 1e-3)  # a lower bound: only the variants in the top 2
        scores = PointwiseReranker(backend).score(QUERY, DOCS[:5])
        assert np.all((scores >= 0) & (scores <= 1))
        report("top2_fallback_labels_missing", int(backend.stats["labels_missing"]))

    def test_greedy_generation_agrees_with_hf(self, server, smollm2_dir, hf):
        from llmrank.backends.base import GenerationParams

        from llmrank.rerankers.pointwise import PointwiseReranker

        prompts, _ = PointwiseReranker(hf).prompts_for(QUERY, DOCS[:2])
        params = GenerationParams(max_tokens=8)
        ours = self.openai(server, smollm2_dir).generate(prompts, params)
        ref = hf.generate(prompts, params)
        assert [g.text for g in ours] == [g.text for g in ref]
        assert [g.prompt_tokens for g in ours] == [g.prompt_tokens for g in ref]

    def test_teacher_through_openai_equals_hf(self, server, smollm2_dir, hf, tmp_path):
        from llmrank.data import load_dataset
        from llmrank.rerankers.pointwise import PointwiseReranker
        from llmrank.teacher import read_teacher_run, run_teacher

        data = load_dataset(tiny_dataset(tmp_path / "tiny.json"))
        runs = {}
        for name, backend in (("hf", hf), ("openai", self.openai(server, smollm2_dir))):
            stats = run_teacher(PointwiseReranker(backend), data, data.candidates, 4, tmp_path / f"{name}.jsonl", progress=False)
            assert stats["done"] == 2
            runs[name] = read_teacher_run(tmp_path / f"{name}.jsonl")
        diffs = []
        for qid in ("q1", "q2"):
            a, b = runs["hf"][qid], runs["openai"][qid]
            assert a["key"] == b["key"] and a["ranking"] == b["ranking"] and a["candidates"] == b["candidates"]
            diffs += [abs(x - y) for x, y in zip(a["scores"], b["scores"])]
        report("teacher_openai_vs_hf_max_score_diff", max(diffs))
        assert max(diffs) < 1e-3

    def test_generation_server_has_no_rerank(self, server):
        from llmrank.serve.client import RerankClient

        with pytest.raises(LlmrankError, match=r"no /rerank endpoint.*pooling server"):
            RerankClient(server.url, model="smollm2").score(QUERY, DOCS[:1])


# -- the offline vLLM backend (in the vLLM python) -----------------------------------------------------------

VLLM_BACKEND_SCRIPT = """
import json, sys
from llmrank.backends.base import GenerationParams
from llmrank.backends.vllm import VLLMBackend

if __name__ == "__main__":
    job = json.loads(open(sys.argv[1]).read())
    backend = VLLMBackend(job["model"], dtype="float32")
    lp = backend.label_logprobs(job["prompts"], ["yes", "no"])
    exact = backend.label_logprobs(job["prompts"], ["yes", "no"], variants=False)
    gen = backend.generate(job["prompts"][:2], GenerationParams(max_tokens=8))
    stats = dict(backend.stats)
    backend.close()
    json.dump({"lp": lp.tolist(), "exact": exact.tolist(), "texts": [g.text for g in gen],
               "prompt_tokens": [g.prompt_tokens for g in gen], "stats": stats,
               "startup": backend.startup_seconds}, open(sys.argv[2], "w"))
"""


def test_vllm_backend_offline_agrees_with_hf(smollm2_dir, hf, tmp_path):
    """VLLMBackend (vllm.LLM in-process) gives the hf backend's label log-probabilities and greedy text."""
    from llmrank.backends.base import GenerationParams
    from llmrank.rerankers.pointwise import PointwiseReranker
    from llmrank.serve.launch import find_vllm_python

    prompts, _ = PointwiseReranker(hf).prompts_for(QUERY, DOCS[:4])
    (tmp_path / "job.json").write_text(json.dumps({"model": str(smollm2_dir), "prompts": prompts}))
    (tmp_path / "run.py").write_text(VLLM_BACKEND_SCRIPT)
    proc = subprocess.run([find_vllm_python().path, str(tmp_path / "run.py"), str(tmp_path / "job.json"),
                           str(tmp_path / "out.json")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    diff = float(np.max(np.abs(np.array(out["lp"]) - hf.label_logprobs(prompts, ["yes", "no"]))))
    diff_exact = float(np.max(np.abs(np.array(out["exact"]) - hf.label_logprobs(prompts, ["yes", "no"], variants=False))))
    report("fp32_vllm_backend_vs_hf_label_logprob_max_abs_diff", max(diff, diff_exact))
    report("vllm_backend_startup_seconds", round(out["startup"], 1))
    assert diff < 1e-3 and diff_exact < 1e-3
    ref = hf.generate(prompts[:2], GenerationParams(max_tokens=8))
    assert out["texts"] == [g.text for g in ref] and out["prompt_tokens"] == [g.prompt_tokens for g in ref]
    assert out["stats"]["calls"] == 4 + 4 + 2 and out["stats"]["completion_tokens"] > 0
    assert out["stats"].get("labels_missing", 0) == 0


def test_no_server_left_behind():
    from llmrank.serve import launch

    assert not launch._LIVE
    out = subprocess.run(["pgrep", "-f", "vllm.entrypoints.openai.api_server"], capture_output=True, text=True)
    mine = [p for p in out.stdout.split() if p and _is_child_of_me(int(p))]
    assert not mine


def _is_child_of_me(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().split()
        return int(stat[3]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False

