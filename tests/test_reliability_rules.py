"""The eight rules of the user's boundary (listed in :mod:`eval.reliability_rules`), one table of inputs per rule.

:data:`RULE_CASES` and :data:`MODEL_CASES` (in :mod:`eval.reliability_rules`) hold the command lines; ``python -m
eval.reliability_audit`` runs the same tables and counts outcomes. A case with ``watch`` snapshots the bytes
*and* the mode of every file (and folder, link and device node) under each watched path before and after,
and the two must be equal."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from eval.reliability_cases import run_case
from eval.reliability_rules import (  # the rules' tables, shared with eval.reliability_audit
    MODEL_CASES,
    RULE_CASES,
    RuleCase,
    add_model_workspace,
    make_rules_workspace,
    outcome,
    snapshot,
)


@pytest.fixture(scope="module")
def rws(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("rules")
    mp.setenv("LLMRANK_CACHE", str(root / "cache"))
    yield make_rules_workspace(root / "ws")
    mp.undo()


@pytest.fixture(scope="module")
def mws(rws, tiny_model_dir):
    return add_model_workspace(dict(rws), tiny_model_dir)


@pytest.mark.parametrize("case", RULE_CASES, ids=[f"rule{c.rule}-{c.name}" for c in RULE_CASES])
def test_rule_case(case: RuleCase, rws):
    result, last = outcome(case, rws)
    assert result == ("clear error" if case.code == 2 else "correct result"), (result, last)


@pytest.mark.parametrize("case", MODEL_CASES, ids=[f"rule{c.rule}-{c.name}" for c in MODEL_CASES])
def test_model_case(case: RuleCase, mws):
    result, last = outcome(case, mws)
    assert result == ("clear error" if case.code == 2 else "correct result"), (result, last)


def test_every_rule_has_cases():
    counts = {r: sum(c.rule == r for c in RULE_CASES + MODEL_CASES) for r in (1, 2, 3, 4, 5, 7, 8)}
    assert all(n >= 10 for n in counts.values()), counts
    assert len({(c.rule, c.name) for c in RULE_CASES}) == len(RULE_CASES)


# -- values behind the cases -------------------------------------------------------------------------------

def test_whole_float_grades_are_read_as_grades(rws):
    from llmrank.data import read_qrels

    assert read_qrels(rws["qrels_whole_float"])["t1"] == {"d1": 2, "d6": 1}


def test_candidates_json_without_qids_is_still_rerankable(rws):
    from llmrank.data import load_dataset

    assert list(load_dataset(rws["hits_without_qid"]).queries) == ["0"]  # nothing to match: positions as ids


# -- rule 3: what a replaced output keeps -------------------------------------------------------------------

def test_replaced_and_new_files_keep_the_users_mode(rws, tmp_path):
    out = tmp_path / "r.trec"
    assert run_case(RuleCase(3, "", f"retrieve {{beir}} -o {out}"), rws)[0] == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()  # as open() would make it, not 0600
    os.chmod(out, 0o640)
    assert run_case(RuleCase(3, "", f"retrieve {{beir}} --k 3 -o {out}"), rws)[0] == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_text().count("\n") == 3 * 3


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_export_replaces_only_what_it_recorded(mws, tmp_path):
    import shutil

    from llmrank.outputs import MARKER, foreign_files, read_record
    from llmrank.serve.export import export_student

    out = tmp_path / "exp"
    export_student(mws["student"], out, "float32")
    rec = read_record(out)
    assert rec["kind"] == "export" and rec["complete"] and "model.safetensors" in rec["files"]
    assert "sha256" in rec["files"]["llmrank_serve.json"] and not foreign_files(out, "export")
    os.chmod(out / "config.json", 0o600)
    os.chmod(out / "llmrank_serve.json", 0o644)
    export_student(mws["student"], out, "float32")  # its own files: replaced, each keeping its mode
    assert stat.S_IMODE((out / "config.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "llmrank_serve.json").stat().st_mode) == 0o644
    # --overwrite writes beside the user's files: they stay, byte for byte, and are never recorded as llmrank's
    mine = tmp_path / "mine"
    shutil.copytree(mws["export_notes"], mine)
    before = snapshot(mine / "my_eval")
    export_student(mws["student"], mine, "float32", overwrite=True)
    assert (mine / "MY_NOTES.md").read_text() == "mine\n" and snapshot(mine / "my_eval") == before
    assert foreign_files(mine, "export") == ["MY_NOTES.md", "my_eval/scores.csv"]
    assert MARKER not in read_record(mine)["files"]


def test_a_recorded_file_touched_but_unchanged_is_still_llmranks(tmp_path):
    from llmrank.outputs import begin_dir, foreign_files, record_dir

    begin_dir(tmp_path / "c", "compare")
    (tmp_path / "c" / "compare.md").write_text("x")
    record_dir(tmp_path / "c", "compare")
    os.utime(tmp_path / "c" / "compare.md", ns=(1, 1))
    assert foreign_files(tmp_path / "c", "compare") == []  # same bytes (sha256), another mtime
    (tmp_path / "c" / "compare.md").write_text("y")
    assert foreign_files(tmp_path / "c", "compare") == ["compare.md"]
    # an interrupted command (record not complete) left files under its own names: llmrank's; others are not
    begin_dir(tmp_path / "c", "compare")
    (tmp_path / "c" / "cells").mkdir()
    (tmp_path / "c" / "cells" / "a.jsonl").write_text("{}\n")
    (tmp_path / "c" / "notes.txt").write_text("mine")
    assert foreign_files(tmp_path / "c", "compare") == ["compare.md", "notes.txt"]


# -- rule 5: the prepared-model cache checks its checksums ---------------------------------------------------

def test_prepared_model_with_same_size_damage_is_prepared_again(tmp_path, capsys):
    from llmrank.models import MARKER, file_sha256, is_prepared

    d = tmp_path / "smollm2-135m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    files = sorted(p for p in d.iterdir())
    (d / MARKER).write_text(json.dumps({"files": {p.name: p.stat().st_size for p in files},
                                        "sha256": {p.name: file_sha256(p) for p in files},
                                        "mtime_ns": {p.name: p.stat().st_mtime_ns for p in files}}))
    assert is_prepared(d)
    good = (d / "model.safetensors").read_bytes()
    with open(d / "model.safetensors", "r+b") as f:  # same size, other bytes
        f.seek(4000)
        f.write(b"\0" * 16)
    assert not is_prepared(d)
    assert "model.safetensors is damaged" in capsys.readouterr().err
    (d / "model.safetensors").write_bytes(good)  # the same bytes again, a new mtime: whole
    assert is_prepared(d)


# -- concurrency: one writer per run folder -----------------------------------------------------------------

def test_folder_lock_refuses_a_second_writer_and_ignores_a_stale_lock(tmp_path):
    from llmrank.errors import LlmrankError
    from llmrank.outputs import LOCK, FolderLock

    with FolderLock(tmp_path, "first"):
        assert (tmp_path / LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(LlmrankError, match=rf"another llmrank process \(pid {os.getpid()}\) is writing here"):
            with FolderLock(tmp_path, "second"):
                pass
    with FolderLock(tmp_path, "again"):  # released on exit
        pass
    (tmp_path / LOCK).write_text("999999\n")  # left by a process that died: no one holds it
    with FolderLock(tmp_path, "after a crash"):
        pass


def _hold_lock(folder: str, ready, release, run: bool) -> None:
    from llmrank.outputs import FolderLock
    from llmrank.runner import run_lock

    with run_lock(Path(folder), "llmrank run tiny") if run else FolderLock(folder, "llmrank distill"):
        ready.set()
        release.wait(120)


def _llmrank(*argv: str, env=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "llmrank", *argv], capture_output=True, text=True, env=env, timeout=600)


def test_two_runs_into_one_out_never_write_at_once(rws, tmp_path, tiny_model_dir):
    import multiprocessing

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                     os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "runs"
    # while one run is writing (training) the folder, a second one is refused with one clear line, before any work
    ctx = multiprocessing.get_context("spawn")
    for run, argv in ((True, ["run", str(rws["recipe"]), "--out", str(out)]),
                      (False, ["distill", "--dataset", str(rws["beir"]), "--split", "test", "--oracle", "--max-steps", "1",
                               "--model", str(tiny_model_dir), "-o", str(tmp_path / "student")])):
        ready, release = ctx.Event(), ctx.Event()
        holder = ctx.Process(target=_hold_lock, args=(str(out / "tiny" if run else tmp_path / "student"), ready, release, run))
        holder.start()
        try:
            assert ready.wait(60)
            r = _llmrank(*argv, env=env)
            assert r.returncode == 2, r.stderr
            assert f"another llmrank process (pid {holder.pid}) is writing here" in r.stderr.strip().splitlines()[-1]
            assert not (out / "tiny" / "teach").exists() and not (tmp_path / "student" / "merged").exists()
        finally:
            release.set()
            holder.join(60)
    # two started at once: each either runs alone or is refused; the teacher run comes out whole
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-m", "llmrank", "run", str(rws["recipe"]), "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(600), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code == 0 or (code == 2 and "another llmrank process" in err), err
    assert any(code == 0 for code, _ in results)
    from llmrank.teacher import read_teacher_run

    assert sorted(read_teacher_run(out / "tiny" / "teach" / "teacher.jsonl")) == ["t1", "t2", "t3"]
