"""The table of bad and edge inputs that ``tests/test_reliability.py`` asserts and ``eval.reliability_audit``
counts: a workspace of good inputs, bad inputs and a user's own files (:func:`make_workspace`), one
:class:`Case` per command line (what its one-line error must name, which user files must come out
unchanged), :func:`run_case` to run one through the CLI in this process, and the fuzz inputs every loader
is fed (:func:`fuzz_inputs`, :func:`loaders`)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from llmrank.cli import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")

CORPUS = [
    {"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces the risk of heart attack."},
    {"_id": "d2", "title": "Vitamin D", "text": "Vitamin D deficiency is linked to bone loss."},
    {"_id": "d3", "title": "Coffee", "text": "Coffee consumption and sleep quality."},
    {"_id": "d4", "title": "Statins", "text": "Statins lower cholesterol in adults."},
    {"_id": "d5", "title": "Malaria", "text": "Mosquito nets prevent malaria infection."},
    {"_id": "d6", "title": "Exercise", "text": "Exercise improves heart health."},
]
QUERIES = [{"_id": "t1", "text": "aspirin and heart attack"}, {"_id": "t2", "text": "malaria nets"},
           {"_id": "t3", "text": "coffee sleep"}, {"_id": "tr1", "text": "vitamin d bone"}]
QRELS = "query-id\tcorpus-id\tscore\nt1\td1\t2\nt1\td6\t1\nt2\td5\t1\nt3\td3\t1\n"
RUN = "t1 Q0 d1 1 3.0 llmrank-x\nt1 Q0 d6 2 2.0 llmrank-x\nt2 Q0 d5 1 1.0 llmrank-x\nt3 Q0 d2 1 1.0 llmrank-x\n"


def jsonl_text(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def beir_dir(root: Path, corpus=CORPUS, queries=QUERIES) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(jsonl_text(corpus))
    (root / "queries.jsonl").write_text(jsonl_text(queries))
    (root / "qrels" / "test.tsv").write_text(QRELS)
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\ntr1\td2\t1\n")
    return root


def teacher_record(qid: str, ranking: list[str], scores=None) -> dict:
    return {"qid": qid, "key": hashlib.sha256(qid.encode()).hexdigest(), "method": "listwise", "model": "m",
            "prompt": "p", "reranker": {}, "query": "q", "candidates": ranking, "ranking": ranking,
            "scores": scores, "cost": {"calls": 1, "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0}}


def make_workspace(root: Path) -> dict[str, Path]:
    """Every file the cases name, written once: good inputs, bad inputs and the user's own files."""
    root.mkdir(parents=True, exist_ok=True)
    ws: dict[str, Path] = {"tmp": root}
    ws["beir"] = beir_dir(root / "beir")
    ws["qrels"] = ws["beir"] / "qrels" / "test.tsv"
    ws["run"] = root / "good.run"
    ws["run"].write_text(RUN)
    ws["nonutf8_run"] = root / "latin1.run"
    ws["nonutf8_run"].write_bytes(RUN.encode() + "t3 Q0 caf\xe9 2 0.5 x\n".encode("latin-1"))
    ws["nonutf8_beir"] = beir_dir(root / "beir-latin1")
    with open(ws["nonutf8_beir"] / "corpus.jsonl", "ab") as f:
        f.write('{"_id": "d7", "text": "na\xefve caf\xe9"}\n'.encode("latin-1"))
    ws["nan_run"] = root / "nan.run"
    ws["nan_run"].write_text(RUN.replace("2.0", "nan"))
    ws["inf_run"] = root / "inf.run"
    ws["inf_run"].write_text(RUN.replace("3.0", "inf"))
    ws["dup_run"] = root / "dup.run"
    ws["dup_run"].write_text(RUN + "t1 Q0 d1 3 0.5 llmrank-x\n")
    ws["empty_run"] = root / "empty.run"
    ws["empty_run"].write_text("")
    ws["empty_cands"] = root / "empty.json"
    ws["empty_cands"].write_text("[]")
    ws["teacher"] = root / "teacher.jsonl"
    ws["teacher"].write_text(jsonl_text([teacher_record("t1", ["d1", "d6"], [2.0, 1.0]), teacher_record("t2", ["d5"])]))
    ws["teacher_other"] = root / "teacher-other.jsonl"
    ws["teacher_other"].write_text(jsonl_text([teacher_record("x1", ["a", "b"]), teacher_record("x2", ["c", "d"])]))
    ws["teacher_nan"] = root / "teacher-nan.jsonl"
    ws["teacher_nan"].write_text(jsonl_text([teacher_record("t1", ["d1", "d6"], [float("nan"), 1.0])]))
    ws["dup_corpus"] = beir_dir(root / "beir-dup", corpus=CORPUS + [CORPUS[0]])
    ws["dup_queries"] = beir_dir(root / "beir-dupq", queries=QUERIES + [QUERIES[0]])
    ws["empty_corpus"] = beir_dir(root / "beir-empty", corpus=[])
    ws["dup_qrels"] = root / "dup-qrels.txt"
    ws["dup_qrels"].write_text("t1 0 d1 1\nt1 0 d1 2\n")
    ws["long_query"] = root / "long.jsonl"
    ws["long_query"].write_text(jsonl_text([{"qid": "short", "query": "heart attack", "docs": ["aspirin", "coffee"]},
                                        {"qid": "huge", "query": "heart " * 10000, "docs": ["aspirin", "coffee"]}]))
    ws["short_run"] = root / "short.run"
    ws["short_run"].write_text("t1 Q0 d1 1 3.0\n")
    ws["bad_grade"] = root / "bad-grade.txt"
    ws["bad_grade"].write_text("t1 0 d1 1\nt1 0 d2 high\n")
    ws["nan_cands"] = root / "nan-cands.json"
    ws["nan_cands"].write_text('[{"query": "q", "hits": [{"qid": "t1", "docid": "d1", "content": "x", "score": NaN}]}]')
    ws["dup_qid_jsonl"] = root / "dup-qid.jsonl"
    ws["dup_qid_jsonl"].write_text(jsonl_text([{"qid": "a", "query": "x", "docs": ["d"]}, {"qid": "a", "query": "y", "docs": ["e"]}]))
    ws["bad_title"] = beir_dir(root / "beir-title", corpus=CORPUS + [{"_id": "d9", "title": 7, "text": "x"}])
    ws["gz_beir"] = beir_dir(root / "beir-gz")
    (ws["gz_beir"] / "corpus.jsonl").unlink()
    (ws["gz_beir"] / "corpus.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    # the user's own files, which no command may touch
    ws["user_dir"] = root / "my-folder"
    ws["user_dir"].mkdir()
    (ws["user_dir"] / "notes.txt").write_text("my notes\n")
    ws["user_file"] = root / "notes.txt"
    ws["user_file"].write_text("my notes\n")
    ws["user_jsonl"] = root / "mine.jsonl"
    ws["user_jsonl"].write_text('{"my": "only line"}\n')
    ws["user_json"] = root / "mine.json"
    ws["user_json"].write_text('[{"query": "mine", "hits": []}]')
    ws["student"] = root / "runs" / "distill" / "merged"  # a folder shaped like a student (not loaded by the cases)
    ws["student"].mkdir(parents=True)
    (ws["student"] / "llmrank_student.json").write_text("{}")
    ws["distill_dir"] = ws["student"].parent
    ws["recipe"] = root / "r.yaml"
    ws["recipe"].write_text(f"name: tiny\ndata: {{dataset: {ws['beir']}, train_split: test, k: 6}}\n"
                            "teacher: {method: oracle}\n")
    return ws


@dataclass
class Case:
    name: str
    argv: str
    names: tuple[str, ...] = ()
    """What the one error line must contain (``{key}`` is replaced by the workspace path)."""
    keep: tuple[str, ...] = ()
    """Workspace paths that must come out byte for byte unchanged."""
    group: str = "traceback"
    """The issue's group: loss (data loss), traceback (tracebacks and late failures), silent (wrong results)."""
    code: int = 2
    out: tuple[str, ...] = field(default=())
    """For code 0: what stdout must contain."""


CASES = [
    # 1. data loss
    Case("export into a user's folder", "export {student} -o {user_dir}", ("{user_dir}", "--overwrite"), ("user_dir",), "loss"),
    Case("export over the student's own folder", "export {student} -o {distill_dir}", ("{distill_dir}", "replace the input"), ("distill_dir",), "loss"),
    Case("export onto the student itself", "export {student} -o {student} --overwrite", ("replace the input",), ("student",), "loss"),
    Case("retrieve over a user's file", "retrieve {beir} -o {user_file}", ("{user_file}", "refusing"), ("user_file",), "loss"),
    Case("rerank over a user's JSON", "rerank {beir} -o {user_json}", ("{user_json}", "refusing"), ("user_json",), "loss"),
    Case("teach appending to a user's jsonl", "teach {beir} -o {user_jsonl}", ("{user_jsonl}", "not a teacher run"), ("user_jsonl",), "loss"),
    Case("fuse over one of its inputs", "fuse {teacher} {teacher_other} -o {teacher}", ("replace the input",), ("teacher",), "loss"),
    Case("distill into a user's folder", "distill --dataset {beir} --oracle -o {user_dir}", ("{user_dir}",), ("user_dir",), "loss"),
    Case("retrieve over its own dataset", "retrieve {run} -o {run}", ("replace the input",), ("run",), "loss"),
    # 2. tracebacks and late failures
    Case("run file not UTF-8", "evaluate {nonutf8_run} --qrels {qrels}", ("{nonutf8_run}:5", "UTF-8")),
    Case("corpus not UTF-8", "retrieve {nonutf8_beir} -o {tmp}/o1.trec", ("corpus.jsonl:7", "UTF-8")),
    Case("retrieve --k -5", "retrieve {beir} --k -5 -o {tmp}/o2.trec", ("--k", "≥ 1")),
    Case("output is a folder", "retrieve {beir} -o {user_dir}", ("{user_dir}", "folder"), ("user_dir",)),
    Case("output under a file", "retrieve {beir} -o {user_file}/x.trec", ("{user_file}", "is a file"), ("user_file",)),
    Case("output not writable", "retrieve {beir} -o /proc/llmrank-test/o.trec", ("/proc",)),
    Case("rerank output checked before scoring", "rerank {beir} --model nosuchmodel -o {user_dir}", ("{user_dir}",), ("user_dir",)),
    Case("teach output checked before scoring", "teach {beir} --model nosuchmodel -o {user_dir}", ("{user_dir}", "folder"), ("user_dir",)),
    Case("rerank --model nosuchmodel", "rerank {beir} --model nosuchmodel -o {tmp}/o3.trec", ("nosuchmodel", "not an alias", "smollm2-135m")),
    Case("rerank --model ./missing/dir", "rerank {beir} --model ./missing/dir -o {tmp}/o4.trec", ("./missing/dir", "no such model folder")),
    Case("rerank --dtype foo", "rerank {beir} --dtype foo -o {tmp}/o5.trec", ("--dtype", "foo")),
    Case("distill --learning-rate -0.001", "distill --dataset {beir} --oracle --learning-rate -0.001", ("--learning-rate",)),
    Case("distill --group-size 0", "distill --dataset {beir} --oracle --group-size 0", ("--group-size", "greater than or equal to 2")),
    Case("distill --dtype foo", "distill --dataset {beir} --oracle --dtype foo", ("--dtype",)),
    Case("export --dtype foo", "export {student} -o {tmp}/exp --dtype foo", ("--dtype",)),
    Case("qrels is a folder", "evaluate {run} --qrels {beir}", ("{beir}", "is a folder")),
    Case("run is a folder", "evaluate {beir} --qrels {qrels}", ("{beir}", "is a folder")),
    Case("fuse --weights count", "fuse {teacher} {teacher_other} --weights 1 -o {tmp}/f.jsonl", ("--weights",)),
    Case("fuse --k 0", "fuse {teacher} {teacher_other} --k 0 -o {tmp}/f.jsonl", ("--k",)),
    Case("retrieve --b 2", "retrieve {beir} --b 2 -o {tmp}/o6.trec", ("--b",)),
    Case("unknown metric before retrieval", "retrieve {beir} --metrics bleu -o {tmp}/o7.trec", ("bleu",)),
    Case("qrels with a doc judged twice", "evaluate {run} --qrels {dup_qrels}", ("{dup_qrels}:2", "twice")),
    Case("metric cutoff 0", "evaluate {run} --qrels {qrels} --metrics ndcg@0", ("ndcg@0", "positive")),
    Case("dataset path missing", "retrieve {tmp}/nowhere -o {tmp}/o14.trec", ("{tmp}/nowhere", "no such file")),
    Case("unknown method", "rerank {beir} --method magic -o {tmp}/o15.trec", ("--method", "magic")),
    Case("teach --option without =", "teach {beir} --option oops -o {tmp}/t1.jsonl", ("--option", "KEY=VALUE")),
    Case("run line with 5 fields", "evaluate {short_run} --qrels {qrels}", ("{short_run}:1", "6 fields")),
    Case("qrels grade not a number", "evaluate {run} --qrels {bad_grade}", ("{bad_grade}:2", "high")),
    Case("candidates JSON with a NaN score", "evaluate {nan_cands} --qrels {qrels}", ("{nan_cands}", "hit 0", "not a finite number")),
    Case("jsonl dataset with a duplicate qid", "retrieve {dup_qid_jsonl} -o {tmp}/o16.trec", ("{dup_qid_jsonl}:2", "duplicate qid")),
    Case("corpus title not a string", "retrieve {bad_title} -o {tmp}/o17.trec", ("corpus.jsonl:7", "title")),
    Case("corrupt gzip corpus", "retrieve {gz_beir} -o {tmp}/o18.trec", ("corpus.jsonl.gz",)),
    Case("export of a folder that is no student", "export {user_dir} -o {tmp}/exp2", ("{user_dir}", "not an llmrank student"), ("user_dir",)),
    Case("run --stage unknown", "run {recipe} --stage nope", ("--stage", "nope")),
    Case("models prepare unknown alias", "models prepare nosuch", ("nosuch", "smollm2-135m")),
    # 3. silent wrong results
    Case("NaN score in a run", "evaluate {nan_run} --qrels {qrels}", ("{nan_run}:2", "not a finite number", "--lenient"), group="silent"),
    Case("inf score in a run", "evaluate {inf_run} --qrels {qrels}", ("{inf_run}:1", "not a finite number"), group="silent"),
    Case("duplicate docid in a run", "evaluate {dup_run} --qrels {qrels}", ("{dup_run}:5", "listed twice", "line 1"), group="silent"),
    Case("empty run", "evaluate {empty_run} --qrels {qrels}", ("{empty_run}", "empty"), group="silent"),
    Case("empty candidates JSON", "evaluate {empty_cands} --qrels {qrels}", ("{empty_cands}", "empty"), group="silent"),
    Case("NaN score in a teacher run", "evaluate {teacher_nan} --qrels {qrels}", ("t1", "not a finite number"), group="silent"),
    Case("retrieve --k 0", "retrieve {beir} --k 0 -o {tmp}/o8.trec", ("--k", "≥ 1"), group="silent"),
    Case("rerank --queries 0", "rerank {beir} --queries 0 -o {tmp}/o9.trec", ("--queries", "≥ 1"), group="silent"),
    Case("rerank --top-k 0", "rerank {beir} --top-k 0 -o {tmp}/o10.trec", ("--top-k", "≥ 1"), group="silent"),
    Case("teach --top-k 0", "teach {beir} --top-k 0 -o {tmp}/t0.jsonl", ("--top-k", "≥ 1"), group="silent"),
    Case("distill --max-steps 0", "distill --dataset {beir} --oracle --max-steps 0", ("--max-steps", ">= 1"), group="silent"),
    Case("corpus with a duplicate _id", "retrieve {dup_corpus} -o {tmp}/o11.trec", ("corpus.jsonl:7", "duplicate document _id 'd1'"), group="silent"),
    Case("queries with a duplicate _id", "retrieve {dup_queries} -o {tmp}/o12.trec", ("queries.jsonl:5", "duplicate query _id 't1'"), group="silent"),
    Case("empty corpus", "retrieve {empty_corpus} -o {tmp}/o13.trec", ("corpus.jsonl", "no documents"), group="silent"),
    Case("teacher run from another dataset", "distill --dataset {beir} --split test --teacher {teacher_other} --model smollm2-135m -o {tmp}/d1",
         ("{teacher_other}", "none of its 2 query ids", "x1"), group="silent"),
    Case("teacher run evaluated", "evaluate {teacher} --qrels {qrels} --metrics ndcg@10 mrr@10", code=0,
         out=("mrr@10(rel>=1)", "1.0000"), group="silent"),
    Case("NaN run, --lenient", "evaluate {nan_run} --qrels {qrels} --lenient --metrics mrr@10", code=0,
         out=("mrr@10(rel>=1)",), group="silent"),
]


def run_case(case: Case, ws: dict[str, Path]) -> tuple[int, str, str, str | None]:
    """``(exit code, stdout, stderr, traceback or None)`` of one case run in process."""
    argv = [a.format(**ws) for a in case.argv.split()]
    out, err = io.StringIO(), io.StringIO()
    tb = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 2
        except BaseException:  # noqa: BLE001 - a traceback escaping is what this looks for
            code, tb = 1, traceback.format_exc()
    return code, out.getvalue(), err.getvalue(), tb


def digest(path: Path) -> str:
    if path.is_dir():
        return json.dumps({str(p.relative_to(path)): digest(p) for p in sorted(path.rglob("*")) if p.is_file()})
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"



def loaders():
    from llmrank.data import load_dataset, load_run, read_qrels, read_run, read_topics
    from llmrank.data.beir import load_corpus
    from llmrank.data.jsonl import load_jsonl
    from llmrank.data.trec import load_candidates_json
    from llmrank.teacher import read_teacher_run

    return {"load_run": load_run, "read_run": read_run, "read_qrels": read_qrels, "read_topics": read_topics,
            "load_candidates_json": load_candidates_json, "load_jsonl": load_jsonl, "load_corpus": load_corpus,
            "read_teacher_run": read_teacher_run, "load_dataset": load_dataset}


def fuzz_inputs(tmp: Path) -> list[Path]:
    rng = random.Random(13)
    files = []
    for i in range(24):
        n = rng.choice([0, 1, 7, 64, 600])
        raw = bytes(rng.randrange(256) for _ in range(n))
        if i % 3 == 1:  # mostly text, a few bad bytes
            raw = ("q1 Q0 d1 1 " + str(rng.random()) + " x\n" * rng.randrange(3)).encode() + raw[:3]
        if i % 3 == 2:
            raw = b'{"_id": "x", "text": "' + raw[:20] + b'"}\n'
        for suffix in (".jsonl", ".json", ".run"):
            f = tmp / f"rand{i}{suffix}"
            f.write_bytes(raw)
            files.append(f)
    gz = tmp / "rand.jsonl.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00garbage")
    files.append(gz)
    real = [SHARED / "trec-dl19" / "bm25_top100.run", SHARED / "trec-dl19" / "qrels.txt",
            SHARED / "trec-dl19" / "topics.tsv", SHARED / "trec-dl19" / "bm25_top100.json",
            SHARED / "scifact" / "corpus.jsonl", SHARED / "scifact" / "queries.jsonl",
            SHARED / "bright" / "biology" / "examples.jsonl"]
    for src in real:
        if not src.is_file():
            continue
        with open(src, "rb") as f:
            head = f.read(200_000)
        for cut in (1, 97, 4096, 65_537, 199_999):
            f = tmp / f"cut{cut}-{src.name}"
            f.write_bytes(head[:cut])
            files.append(f)
    return files


