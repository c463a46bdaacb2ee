"""Reliability: no command destroys a user's files, bad input never escapes as a traceback, and no wrong
number is reported silently.

:data:`CASES` (in :mod:`eval.reliability_cases`) is the table of bad and edge inputs, one line each: the
command line (``{name}`` stands for a file of the workspace), what its one-line error must name, and which
user files must come out unchanged. ``python -m eval.reliability_audit`` runs the same table and counts clear errors, tracebacks and
silent results. The tests after the table cover what a single command line cannot show: caches that heal,
two processes building one cache, stages whose outputs went missing, the printed figures against the
written file, and a fuzz of every loader.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import multiprocessing
import threading
import traceback
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from llmrank.cli import main
from llmrank.errors import LlmrankError
from eval.reliability_cases import (  # the table of bad inputs, shared with eval.reliability_audit
    CASES,
    CORPUS,
    QRELS,  # noqa: F401 - the workspace's files, importable from here as before
    QUERIES,  # noqa: F401
    RUN,  # noqa: F401
    SHARED,
    Case,
    beir_dir,
    digest,
    fuzz_inputs,
    jsonl_text,
    loaders,
    make_workspace,
    run_case,
    teacher_record,
)

_jsonl, _beir, _teacher_record, _digest = jsonl_text, beir_dir, teacher_record, digest  # older names


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("reliability")
    mp.setenv("LLMRANK_CACHE", str(root / "cache"))
    yield make_workspace(root / "ws")
    mp.undo()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case, ws):
    before = {k: digest(ws[k]) for k in case.keep}
    code, out, err, tb = run_case(case, ws)
    assert tb is None, tb
    assert "Traceback" not in err, err
    assert code == case.code, (code, err)
    if case.code == 2:
        lines = [line for line in err.strip().splitlines() if line]
        assert len(lines) == 1, err
        assert ": error: " in lines[0]
        for needle in case.names:
            needle = needle.format(**ws)
            assert needle in lines[0], (needle, lines[0])
    for needle in case.out:
        assert needle in out, (needle, out)
    assert {k: digest(ws[k]) for k in case.keep} == before, "a user file changed"


def test_cases_cover_the_three_groups():
    assert {c.group for c in CASES} == {"loss", "traceback", "silent"}
    assert len({c.name for c in CASES}) == len(CASES)


# -- values behind the cases -------------------------------------------------------------------------------


def test_teacher_run_evaluates_like_its_trec_run(ws, tmp_path):
    from llmrank.data import read_qrels
    from llmrank.eval.metrics import evaluate
    from llmrank.teacher import read_teacher_run, teacher_candidates

    run = teacher_candidates(read_teacher_run(ws["teacher"]))
    trec = tmp_path / "t.run"
    trec.write_text("t1 Q0 d1 1 2.0 x\nt1 Q0 d6 2 1.0 x\nt2 Q0 d5 1 1.0 x\n")
    code, out, err, _ = run_case(Case("", f"evaluate {trec} --qrels {{qrels}} --json"), ws)
    assert code == 0, err
    assert json.loads(out) == pytest.approx({**evaluate(run, read_qrels(ws["qrels"])), "rel_threshold": 1})


def test_lenient_ranks_nan_last_and_counts_it(ws):
    code, out, err, _ = run_case(Case("", "evaluate {nan_run} --qrels {qrels} --lenient --metrics mrr@10 --json"), ws)
    assert code == 0
    # t1: d1 (3.0) first, d6 (nan) last: MRR 1; t2: 1; t3: d2 not relevant: 0
    assert json.loads(out)["mrr@10"] == pytest.approx(2 / 3)
    assert "1 nan scores (--lenient)" in err


def test_trec_dl_threshold_is_2_and_printed(ws, tmp_path):
    from llmrank.eval.metrics import default_rel_threshold

    qrels = tmp_path / "dl.txt"
    qrels.write_text("q1 0 a 0\nq1 0 b 1\nq1 0 c 2\nq1 0 d 3\n")
    run = tmp_path / "dl.run"
    run.write_text("q1 Q0 b 1 3.0 x\nq1 Q0 c 2 2.0 x\n")
    code, out, _, _ = run_case(Case("", f"evaluate {run} --qrels {qrels} --metrics mrr@10 ndcg@10"), ws)
    assert code == 0
    assert out.split() == ["mrr@10(rel>=2)", "0.5000", "ndcg@10", out.split()[3]]  # b (grade 1) is not relevant at 2
    code, out, _, _ = run_case(Case("", f"evaluate {run} --qrels {qrels} --metrics mrr@10 --rel-threshold 1"), ws)
    assert out.split() == ["mrr@10(rel>=1)", "1.0000"]
    assert default_rel_threshold({"q": {"a": 1}}) == 1 and default_rel_threshold({"q": {"a": 0, "b": 2}}) == 1
    real = SHARED / "trec-dl19" / "qrels.txt"
    if real.is_file():
        from llmrank.data import read_qrels

        assert default_rel_threshold(read_qrels(real)) == 2


def test_trec_dl19_nan_run_is_refused_not_scored(tmp_path, ws):
    """The issue's case: an all-NaN bm25_top100 run evaluated to 0.2878 instead of 0.5058; now it is an error,
    and the same run with its scores evaluates to what it did."""
    run = SHARED / "trec-dl19" / "bm25_top100.run"
    qrels = SHARED / "trec-dl19" / "qrels.txt"
    if not (run.is_file() and qrels.is_file()):
        pytest.skip("no TREC DL19 run in ../shared/data")
    nan = tmp_path / "nan.run"
    nan.write_text("".join(" ".join([*line.split()[:4], "nan", line.split()[5]]) + "\n"
                           for line in run.read_text().splitlines() if line.strip()))
    code, _, err, _ = run_case(Case("", f"evaluate {nan} --qrels {qrels}"), ws)
    assert code == 2 and f"{nan}:1" in err and "not a finite number" in err
    code, out, _, _ = run_case(Case("", f"evaluate {run} --qrels {qrels} --metrics ndcg@10 --json"), ws)
    assert code == 0 and json.loads(out)["ndcg@10"] == pytest.approx(0.5058, abs=5e-5)


# -- outputs: written beside, replaced only when ours ------------------------------------------------------


def test_retrieve_replaces_its_own_run_and_keeps_user_files(ws, tmp_path):
    out = tmp_path / "bm25.trec"
    assert run_case(Case("", f"retrieve {{beir}} -o {out}"), ws)[0] == 0
    first = out.read_text()
    assert run_case(Case("", f"retrieve {{beir}} --k 2 -o {out}"), ws)[0] == 0  # its own run: replaced
    assert out.read_text() != first and len(out.read_text().splitlines()) == 6
    mine = tmp_path / "mine.trec"
    mine.write_text("t1 Q0 d1 1 1.0 my-system\n")
    code, _, err, _ = run_case(Case("", f"retrieve {{beir}} -o {mine}"), ws)
    assert code == 2 and "refusing" in err and mine.read_text() == "t1 Q0 d1 1 1.0 my-system\n"
    assert run_case(Case("", f"retrieve {{beir}} -o {mine} --overwrite"), ws)[0] == 0
    assert "llmrank-bm25" in mine.read_text()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_check_output_rules(tmp_path):
    from llmrank.outputs import check_output, is_own_output, publish_dir, temp_dir

    target = tmp_path / "export"
    tmp = temp_dir(target)
    (tmp / "weights.bin").write_text("1")
    publish_dir(tmp, target, "export")
    assert is_own_output(target, "export") and not is_own_output(target, "distill")
    check_output(target, "export")  # its own: may be replaced
    with pytest.raises(LlmrankError, match="did not write.*weights.bin"):  # an export's files are no distill's
        check_output(target, "distill")
    tmp = temp_dir(target)
    (tmp / "weights.bin").write_text("2")
    publish_dir(tmp, target, "export")
    assert (target / "weights.bin").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # the old one and the scratch are gone
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output(empty, "export")  # an empty folder holds nothing to lose


def test_export_replaces_its_own_export_only(tiny_model_dir, tmp_path):
    import shutil

    from llmrank.serve.export import export_student

    student = tmp_path / "student"
    shutil.copytree(tiny_model_dir, student)
    meta = {"kind": "pointwise", "base_model": str(tiny_model_dir), "prompt": "yes_no", "answers": {"yes": "yes", "no": "no"},
            "variants": False, "max_doc_tokens": 64}
    (student / "llmrank_student.json").write_text(json.dumps(meta))
    out = tmp_path / "export"
    export_student(student, out, "float32")
    export_student(student, out, "float32")  # its own export: replaced
    assert (out / "llmrank_serve.json").is_file() and (out / "model.safetensors").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    with pytest.raises(LlmrankError, match="refusing"):
        export_student(student, mine, "float32")
    assert (mine / "keep.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "mine", "student"]


# -- caches ----------------------------------------------------------------------------------------------


def _retrieve(beir: Path, out: Path) -> int:
    return main(["retrieve", str(beir), "--k", "3", "-o", str(out)])


def test_corrupt_bm25_cache_is_named_and_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path / "cache"))
    beir = beir_dir(tmp_path / "beir")
    assert _retrieve(beir, tmp_path / "a.trec") == 0
    (index,) = (tmp_path / "cache" / "bm25").iterdir()
    for damage in ("truncate", "flip", "delete"):
        victim = index / "params.index.json"
        if damage == "truncate":
            victim.write_bytes(victim.read_bytes()[:10])
        elif damage == "flip":
            data = bytearray((index / "data.csc.index.npy").read_bytes())
            data[-1] ^= 0xFF
            (index / "data.csc.index.npy").write_bytes(bytes(data))
        else:
            victim.unlink()
        caplog.clear()
        assert _retrieve(beir, tmp_path / "b.trec") == 0, damage
        assert f"BM25 cache {index} is damaged" in caplog.text, damage
        assert (tmp_path / "b.trec").read_text() == (tmp_path / "a.trec").read_text()
    caplog.clear()
    assert _retrieve(beir, tmp_path / "c.trec") == 0
    assert "damaged" not in caplog.text  # healed: the next run loads it quietly


def _child(beir: str, out: str, cache: str, q) -> None:
    import os

    os.environ["LLMRANK_CACHE"] = cache
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = main(["retrieve", beir, "--k", "3", "-o", out])
    except BaseException:  # noqa: BLE001
        code, err = 99, io.StringIO(traceback.format_exc())
    q.put((code, err.getvalue()))


def test_two_retrieve_processes_on_a_cold_cache_ten_times(tmp_path):
    """Two processes build one BM25 cache at once, 10 times over (a fresh cache each time): no failure, and
    both write the same run."""
    beir = beir_dir(tmp_path / "beir", corpus=CORPUS * 1 + [{"_id": f"x{i}", "text": f"filler text {i} " * 20} for i in range(300)])
    ctx = multiprocessing.get_context("fork")
    for round_ in range(10):
        cache = tmp_path / f"cache{round_}"
        q = ctx.Queue()
        outs = [tmp_path / f"r{round_}-{i}.trec" for i in range(2)]
        procs = [ctx.Process(target=_child, args=(str(beir), str(o), str(cache), q)) for o in outs]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        results = [q.get(timeout=5) for _ in procs]
        assert all(code == 0 for code, _ in results), (round_, results)
        assert outs[0].read_text() == outs[1].read_text()
        assert len(list((cache / "bm25").iterdir())) == 1  # one index, no scratch folder left


def test_model_cache_with_a_damaged_file_is_not_prepared(tmp_path):
    from llmrank import models

    folder = tmp_path / "smollm2-135m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    (folder / models.MARKER).write_text(json.dumps({"files": {"config.json": 2, "model.safetensors": 100}}))
    assert models.is_prepared(folder)
    (folder / "model.safetensors").write_bytes(b"x" * 10)  # truncated
    assert not models.is_prepared(folder)
    (folder / "model.safetensors").unlink()
    assert not models.is_prepared(folder)


# -- stages ------------------------------------------------------------------------------------------------


def test_stage_is_up_to_date_only_when_its_files_are_there(ws, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["run", str(ws["recipe"]), "--out", str(out)]
    assert main(argv) == 0
    teach = out / "tiny" / "teach"
    manifest = json.loads((teach / "manifest.json").read_text())
    assert manifest["files"]["teacher.jsonl"] == (teach / "teacher.jsonl").stat().st_size
    capsys.readouterr()
    assert main(argv) == 0
    assert "[teach] up to date" in capsys.readouterr().err
    (teach / "teacher.jsonl").unlink()  # a deleted output
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "teacher.jsonl is missing: running the stage again" in err and (teach / "teacher.jsonl").is_file()
    text = (teach / "manifest.json").read_text()
    (teach / "manifest.json").write_text(text[: len(text) // 2])  # a truncated manifest
    assert main(argv) == 0
    assert "is unreadable" in capsys.readouterr().err
    json.loads((teach / "manifest.json").read_text())


# -- models and prompts ------------------------------------------------------------------------------------


def test_prompt_over_the_context_is_cut_on_the_document_side(tiny_model_dir):
    from llmrank.backends import make_backend
    from llmrank.data.types import Doc, Query
    from llmrank.rerankers.pointwise import PointwiseReranker

    backend = make_backend("hf", str(tiny_model_dir))
    reranker = PointwiseReranker(backend, "yes_no", max_doc_tokens=None)
    assert backend.max_length == 2048
    query = Query("q", "heart " * 1500)
    ranking = reranker.rerank(query, [Doc("long", "aspirin " * 3000), Doc("short", "aspirin")])
    assert ranking.cost["truncated_docs"] == 1
    prompts, cut = reranker.prompts_for(query.text, ["aspirin " * 3000])
    assert cut == 1 and len(backend.tokenizer.encode(prompts[0], add_special_tokens=False)) < 2048
    with pytest.raises(LlmrankError, match="query huge: its prompt without any document is"):
        reranker.check_query(Query("huge", "heart " * 10000))


def test_query_over_the_context_fails_before_scoring(tiny_model_dir, ws, tmp_path):
    code, _, err, tb = run_case(Case("", f"rerank {{long_query}} --model {tiny_model_dir} -o {tmp_path}/l.trec"), ws)
    assert tb is None and code == 2
    assert "query huge" in err and "context of 2048" in err
    assert not (tmp_path / "l.trec").exists()


def test_printed_figures_equal_the_written_file(tiny_model_dir, ws, tmp_path):
    out = tmp_path / "tiny.trec"
    code, stdout, err, tb = run_case(Case("", f"rerank {{beir}} --model {tiny_model_dir} --top-k 2 -o {out}"), ws)
    assert tb is None and code == 0, err
    printed = json.loads(stdout)["pointwise"]
    code, stdout, _, _ = run_case(Case("", f"evaluate {out} --qrels {{qrels}} --metrics ndcg@10 mrr@10 --json"), ws)
    scored = json.loads(stdout)
    assert printed == {"ndcg@10": pytest.approx(scored["ndcg@10"]), "mrr@10(rel>=1)": pytest.approx(scored["mrr@10"])}


def test_cli_output_is_free_of_library_noise_and_shows_progress_in_logs(tiny_model_dir, ws, tmp_path):
    """A real process with stderr to a file (a log): per-tenth progress lines, and none of the warnings that
    say nothing to a user (bitsandbytes' kernels hint, past_key_values, tokenizer length)."""
    import os
    import subprocess
    import sys

    data = tmp_path / "long-docs.jsonl"  # documents over the tokenizer's limit, which llmrank cuts itself
    data.write_text(jsonl_text([{"qid": f"q{i}", "query": "heart attack", "docs": ["aspirin " * 3000, "coffee", "tea"]}
                            for i in range(3)]))
    env = {**os.environ, "LLMRANK_CACHE": str(ws["tmp"].parent / "cache"), "PYTHONPATH": str(Path(__file__).parents[1])}
    p = subprocess.run([sys.executable, "-m", "llmrank", "rerank", str(data), "--model", str(tiny_model_dir),
                        "-o", str(tmp_path / "r.trec")], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "note: 3 documents were truncated" in p.stderr
    for noise in ("pip install kernels", "past_key_values", "Token indices sequence length", "Traceback"):
        assert noise not in p.stderr, p.stderr
    assert "[pointwise] 3/3 queries" in p.stderr


def test_check_model_never_asks_a_hub_for_a_name_that_is_none(monkeypatch):
    from llmrank.models import check_model

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(LlmrankError, match="not an alias"):
        check_model("nosuchmodel")
    assert check_model("smollm2-135m") == "alias"


# -- one HTTP retry policy ---------------------------------------------------------------------------------


class _Flaky(BaseHTTPRequestHandler):
    plan: list[int] = []

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        status = self.plan.pop(0) if self.plan else 200
        body = json.dumps({"ok": status == 200} if status == 200 else {"error": {"message": f"status {status}"}}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_one_retry_policy_for_both_clients():
    import httpx

    from llmrank.http import RetryPolicy, send

    server = HTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1/x"
    slept: list[float] = []
    try:
        with httpx.Client(timeout=5) as client:
            from collections import Counter

            stats: Counter = Counter()
            _Flaky.plan = [503, 429, 200]
            r = send(client, "POST", url, RetryPolicy(max_retries=3, backoff=0.1), json={}, stats=stats, sleep=slept.append)
            assert r.status_code == 200 and stats["retries"] == 2
            assert 0.1 <= slept[0] <= 0.125 and 0.2 <= slept[1] <= 0.25  # doubled, with up to 25 % jitter
            _Flaky.plan = [503, 503]
            r = send(client, "POST", url, RetryPolicy(max_retries=1, backoff=0.1), json={}, sleep=slept.append)
            assert r.status_code == 503  # out of retries: the caller explains the status
            _Flaky.plan = [400]
            assert send(client, "POST", url, RetryPolicy(), json={}, sleep=slept.append).status_code == 400
        from llmrank.backends.openai import OpenAIBackend

        backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{server.server_port}", backoff=0.01)
        _Flaky.plan = [502, 200]
        assert backend._post("/x", {}) == {"ok": True} and backend.stats["retries"] == 1
        _Flaky.plan = [400]
        with pytest.raises(LlmrankError, match=r"/v1/x: HTTP 400: status 400"):
            backend._post("/x", {})
    finally:
        server.shutdown()
    from llmrank.serve.client import RerankClient

    client = RerankClient(f"http://127.0.0.1:{server.server_port}", model="student")
    server.server_close()
    with pytest.raises(LlmrankError, match=r"cannot reach a server at http://127\.0\.0\.1:\d+ \(connection refused\).*llmrank serve"):
        client.score("q", ["d"])


# -- fuzz: every loader over random bytes and truncated real files -----------------------------------------


def test_fuzz_loaders_raise_only_llmrank_errors_naming_the_path(tmp_path):
    each = loaders()
    tried = failures = 0
    for path in fuzz_inputs(tmp_path):
        for name, load in each.items():
            tried += 1
            try:
                load(path)
            except LlmrankError as e:
                failures += 1
                assert str(path) in str(e), (name, path, str(e))
            except Exception as e:  # noqa: BLE001
                pytest.fail(f"{name}({path}) raised {type(e).__name__}: {e}")
    assert tried > 400 and failures > tried / 2


def test_fuzz_evaluate_never_escapes(tmp_path, ws):
    for path in fuzz_inputs(tmp_path)[::3]:
        code, _, err, tb = run_case(Case("", f"evaluate {path} --qrels {{qrels}}"), ws)
        assert tb is None, tb
        assert code in (0, 2), err
        if code == 2:
            assert str(path) in err or "empty" in err or "qrels" in err, err


def test_nan_free_rankings(ws):
    """A model that gives NaN is an error naming the query, never a ranking with NaN in it."""
    from llmrank.data import load_dataset
    from llmrank.data.bm25 import ensure_candidates
    from llmrank.rerankers.base import Ranking, Reranker

    class Broken(Reranker):
        method = "broken"

        def rerank(self, query, docs):
            return Ranking([d.docid for d in docs], [math.nan] * len(docs))

    data = load_dataset(ws["beir"])
    with pytest.raises(LlmrankError, match="query t1: broken gave the score nan"):
        Broken().rerank_all(data, ensure_candidates(data, 3), 3)
