"""The eight rules of the user's boundary, one table of inputs per rule (asserted by
``tests/test_reliability_rules.py``, counted by ``python -m eval.reliability_audit``).

1. Only an unterminated last line of a teacher run can be torn; a complete line that is no record is refused
   with its line number.
2. A recipe ``name`` is one folder name, never a path.
3. Ownership is recorded: an output folder replaces only the files llmrank recorded writing there.
4. Every command checks where it writes before the work.
5. A damaged student or model is named, not a traceback.
6. Every recipe value is checked at load.
7. Input that cannot mean anything is an error, not a result.
8. Errors name the file and the key.

:data:`RULE_CASES` and :data:`MODEL_CASES` hold the command lines. A case with ``watch`` snapshots the bytes
*and* the mode of every file (and folder, link and device node) under each watched path before and after,
and the two must be equal (:func:`outcome`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from eval.reliability_cases import CORPUS, QRELS, QUERIES, RUN, run_case  # noqa: F401
from eval.reliability_cases import beir_dir as _beir
from eval.reliability_cases import jsonl_text as _jsonl
from eval.reliability_cases import teacher_record as _teacher_record

# -- the workspace -----------------------------------------------------------------------------------------


def _teacher_text(n: int = 2) -> str:
    recs = [_teacher_record("t1", ["d1", "d6"], [2.0, 1.0]), _teacher_record("t2", ["d5", "d1"], [1.0, 0.5]),
            _teacher_record("t3", ["d3", "d2"], [1.0, 0.5])]
    return _jsonl(recs[:n])


# complete lines that are not teacher records, and unterminated lines that are not the start of one (rule 1)
NOT_RECORDS = {
    "note": b"my own note about this run\n",
    "json-note": b'{"note": "mine"}\n',
    "trec-line": b"t3 Q0 d1 1 2.0 bm25\n",
    "list": b"[1, 2, 3]\n",
    "null": b"null\n",
    "string": b'"a string"\n',
    "no-key": b'{"qid": "t3", "ranking": ["d1"]}\n',
    "key-not-str": b'{"qid": "t3", "key": 5, "ranking": ["d1"]}\n',
    "ranking-not-list": b'{"qid": "t3", "key": "k", "ranking": "d1"}\n',
    "comment": b"# reviewed by me\n",
    "half-record-ended": b'{"qid": "t3", "key": "k", "rank\n',
    "note-unterminated": b"my note without a newline",
}
COMMANDS_ON_TEACHER = {
    "evaluate": "evaluate {f} --qrels {qrels}",
    "fuse": "fuse {f} {teacher} -o {tmp}/fused-{n}.jsonl",
    "teach-resume": "teach {beir} --method listwise --model nosuchmodel -o {f}",
    "distill": "distill --dataset {beir} --split test --teacher {f} --model smollm2-135m -o {tmp}/dist-{n}",
}


def make_rules_workspace(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    ws: dict[str, Path] = {"tmp": root}
    ws["beir"] = _beir(root / "beir")
    ws["qrels"] = ws["beir"] / "qrels" / "test.tsv"
    ws["run"] = root / "good.run"
    ws["run"].write_text(RUN)
    ws["teacher"] = root / "teacher.jsonl"
    ws["teacher"].write_text(_teacher_text())
    good = _teacher_text().encode()
    for name, extra in NOT_RECORDS.items():
        ws[f"t_end_{name}"] = root / f"t-end-{name}.jsonl"
        ws[f"t_end_{name}"].write_bytes(good + extra)
        if extra.endswith(b"\n"):
            ws[f"t_mid_{name}"] = root / f"t-mid-{name}.jsonl"
            ws[f"t_mid_{name}"].write_bytes(good[: good.index(b"\n") + 1] + extra + good[good.index(b"\n") + 1:])
    # rule 7: inputs that cannot mean anything
    bad = {
        "empty_query": [{"qid": "a", "query": "", "docs": ["x"]}],
        "blank_query": [{"qid": "a", "query": "  \t ", "docs": ["x"]}],
        "newline_query": [{"qid": "a", "query": "\n", "docs": ["x"]}],
        "dup_doc_two_texts": [{"qid": "a", "query": "q", "docs": [{"docid": "d", "text": "one"},
                                                                  {"docid": "d", "text": "two"}]}],
        "dup_doc_same_text": [{"qid": "a", "query": "q", "docs": [{"docid": "d", "text": "one"},
                                                                  {"docid": "d", "text": "one"}]}],
        "doc_texts_across_queries": [{"qid": "a", "query": "q", "docs": [{"docid": "d", "text": "one"}]},
                                     {"qid": "b", "query": "r", "docs": [{"docid": "d", "text": "two"}]}],
        "doc_titles_across_queries": [{"qid": "a", "query": "q", "docs": [{"docid": "d", "text": "t", "title": "A"}]},
                                      {"qid": "b", "query": "r", "docs": [{"docid": "d", "text": "t", "title": "B"}]}],
        "label_fraction": [{"qid": "a", "query": "q", "docs": [{"docid": "d", "text": "t", "label": 1.5}]}],
        "label_bool": [{"qid": "a", "query": "q", "docs": [{"docid": "d", "text": "t", "label": True}]}],
        "label_string": [{"qid": "a", "query": "q", "docs": [{"docid": "d", "text": "t", "label": "2"}]}],
        "no_docs": [{"qid": "a", "query": "q", "docs": []}],
        "score_string": [{"qid": "a", "query": "q", "docs": [{"docid": "d", "text": "t", "score": "high"}]}],
    }
    for name, recs in bad.items():
        ws[name] = root / f"{name}.jsonl"
        ws[name].write_text(_jsonl(recs))
    for name, label in (("label_nan", "NaN"), ("label_inf", "Infinity"), ("label_neg_inf", "-Infinity")):
        ws[name] = root / f"{name}.jsonl"
        ws[name].write_text('{"qid": "a", "query": "q", "docs": [{"docid": "d", "text": "t", "label": %s}]}\n' % label)
    ws["score_nan"] = root / "score_nan.jsonl"
    ws["score_nan"].write_text('{"qid": "a", "query": "q", "docs": [{"docid": "d", "text": "t", "score": NaN}]}\n')
    for name, queries in (("beir_blank_query", QUERIES[:1] + [{"_id": "t2", "text": "   "}] + QUERIES[2:]),
                          ("beir_empty_query", QUERIES[:1] + [{"_id": "t2", "text": ""}] + QUERIES[2:])):
        ws[name] = _beir(root / name, queries=queries)
    for name, grade in (("qrels_half", "0.5"), ("qrels_frac", "1.7"), ("qrels_neg_frac", "-0.5"), ("qrels_exp", "1e-3")):
        ws[name] = root / f"{name}.txt"
        ws[name].write_text(f"t1 0 d1 1\nt1 0 d6 {grade}\n")
    ws["qrels_whole_float"] = root / "qrels_whole_float.txt"
    ws["qrels_whole_float"].write_text("t1 0 d1 2.0\nt1 0 d6 1.0\nt2 0 d5 1\nt3 0 d3 1\n")
    # rule 8: candidates JSON that names no query, has nothing to rank, or contradicts itself
    cj = {
        "hits_without_qid": [{"query": "q", "hits": [{"docid": "d1", "content": "x"}]}],
        "empty_hits": [{"query": "q", "qid": "t1", "hits": []}],
        "hit_qid_mismatch": [{"query": "q", "hits": [{"qid": "t1", "docid": "d1", "content": "x"},
                                                     {"qid": "t2", "docid": "d2", "content": "y"}]}],
        "content_across_items": [{"query": "q", "hits": [{"qid": "t1", "docid": "d1", "content": "x"}]},
                                 {"query": "r", "hits": [{"qid": "t2", "docid": "d1", "content": "other"}]}],
        "blank_query_json": [{"query": " ", "hits": [{"qid": "t1", "docid": "d1", "content": "x"}]}],
        "hits_not_list": [{"query": "q", "hits": {"qid": "t1", "docid": "d1", "content": "x"}}],
    }
    for name, items in cj.items():
        ws[name] = root / f"{name}.json"
        ws[name].write_text(json.dumps(items))
    ws["cj_noqid_dir"] = root / "cj-noqid"
    ws["cj_noqid_dir"].mkdir()
    (ws["cj_noqid_dir"] / "cands.json").write_text(json.dumps(cj["hits_without_qid"]))
    (ws["cj_noqid_dir"] / "qrels.txt").write_text("t1 0 d1 1\n")
    ws["topics_blank"] = root / "topics.tsv"
    ws["topics_blank"].write_text("t1\taspirin\nt2\t  \n")
    # rule 8: a student whose kind is no student kind
    for kind in ("listwise", "pairwise", "", "Pointwise"):
        key = f"student_kind_{kind or 'empty'}"
        ws[key] = root / f"student-{kind or 'empty'}"
        ws[key].mkdir()
        (ws[key] / "llmrank_student.json").write_text(json.dumps({"kind": kind, "base_model": "smollm2-135m"}))
    # rule 2: recipes whose name is a path
    for i, name in enumerate(["../../x", "/abs/path", "", "   ", ".", "..", "a/b", "a\\\\b", "../", "x/..",
                              " lead", "trail ", "~/x/../y", "x" * 300]):
        key = f"recipe_name_{i}"
        ws[key] = root / f"name-{i}.yaml"
        ws[key].write_text(f"name: {json.dumps(name)}\ndata: {{dataset: {ws['beir']}, train_split: test, k: 6}}\n"
                           "teacher: {method: oracle}\n")
    ws["user_project"] = root / "project"
    (ws["user_project"] / "teach").mkdir(parents=True)
    (ws["user_project"] / "teach" / "teacher.jsonl").write_text("my teacher notes\n")
    (ws["user_project"] / "report.md").write_text("# my report\n")
    os.chmod(ws["user_project"] / "report.md", 0o640)
    ws["out"] = root / "out" / "deep"
    ws["out"].mkdir(parents=True)
    ws["user_file"] = root / "notes.txt"
    ws["user_file"].write_text("my notes\n")
    ws["recipe"] = root / "tiny.yaml"
    ws["recipe"].write_text(f"name: tiny\ndata: {{dataset: {ws['beir']}, train_split: test, k: 6}}\nteacher: {{method: oracle}}\n")
    ws["user_runs"] = root / "user-runs"
    (ws["user_runs"] / "tiny").mkdir(parents=True)
    (ws["user_runs"] / "tiny" / "report.md").write_text("# my own report\n")
    (ws["user_runs"] / "tiny" / "teach").mkdir()
    (ws["user_runs"] / "tiny" / "teach" / "teacher.jsonl").write_text("my notes\n")
    return ws


def _student(folder: Path, model: Path) -> Path:
    import shutil

    shutil.copytree(model, folder)
    meta = {"kind": "pointwise", "base_model": str(model), "prompt": "yes_no", "answers": {"yes": "yes", "no": "no"},
            "variants": False, "max_doc_tokens": 64}
    (folder / "llmrank_student.json").write_text(json.dumps(meta))
    return folder


def add_model_workspace(ws: dict[str, Path], tiny_model: Path) -> dict[str, Path]:
    """Students (whole and damaged), exports and the user's folders shaped like llmrank's (rules 3 and 5)."""
    from safetensors.torch import save_file
    import torch

    from llmrank.outputs import begin_dir, record_dir
    from llmrank.serve.export import export_student

    root = ws["tmp"] / "models"
    root.mkdir()
    ws["student"] = _student(root / "student", tiny_model)
    ws["export"] = root / "export"
    export_student(ws["student"], ws["export"], "float32")
    weights = (ws["student"] / "model.safetensors").read_bytes()
    damage = {
        "no_tokenizer": lambda d: [(d / f).unlink() for f in ("tokenizer.json",)],
        "no_config": lambda d: (d / "config.json").unlink(),
        "no_weights": lambda d: (d / "model.safetensors").unlink(),
        "truncated_weights": lambda d: (d / "model.safetensors").write_bytes(weights[: len(weights) // 2]),
        "one_byte_short": lambda d: (d / "model.safetensors").write_bytes(weights[:-1]),
        "random_weights": lambda d: (d / "model.safetensors").write_bytes(os.urandom(len(weights))),
        "empty_weights": lambda d: (d / "model.safetensors").write_bytes(b""),
        "config_not_json": lambda d: (d / "config.json").write_text("{not json"),
        "meta_not_json": lambda d: (d / "llmrank_student.json").write_text("{oops"),
        "meta_a_list": lambda d: (d / "llmrank_student.json").write_text("[]"),
        "header_lies": lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 8 + weights[8:]),
    }
    for name, hurt in damage.items():
        d = _student(root / f"s-{name}", tiny_model)
        hurt(d)
        ws[f"s_{name}"] = d
    # adapters: a LoRA adapter folder without its config, without its weights, or with damaged weights
    adapter_cfg = {"peft_type": "LORA", "base_model_name_or_path": str(tiny_model), "r": 2, "lora_alpha": 4,
                   "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}
    for name in ("adapter_no_config", "adapter_no_weights", "adapter_truncated"):
        d = root / f"s-{name}"
        d.mkdir()
        for f in ("tokenizer.json", "tokenizer_config.json"):
            if (tiny_model / f).is_file():
                (d / f).write_bytes((tiny_model / f).read_bytes())
        (d / "llmrank_student.json").write_text(json.dumps({"kind": "pointwise", "base_model": str(tiny_model),
                                                             "prompt": "yes_no", "max_doc_tokens": 64}))
        if name != "adapter_no_config":
            (d / "adapter_config.json").write_text(json.dumps(adapter_cfg))
        if name != "adapter_no_weights":
            save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 64)},
                      str(d / "adapter_model.safetensors"))
        if name == "adapter_truncated":
            data = (d / "adapter_model.safetensors").read_bytes()
            (d / "adapter_model.safetensors").write_bytes(data[:-10])
        ws[f"s_{name}"] = d
    import shutil

    ws["export_no_meta"] = root / "export-copied"
    shutil.copytree(ws["export"], ws["export_no_meta"])
    (ws["export_no_meta"] / "llmrank_student.json").unlink()
    # rule 3: the user's folders
    ws["export_notes"] = root / "export-with-notes"  # an earlier export the user added files to
    export_student(ws["student"], ws["export_notes"], "float32")
    (ws["export_notes"] / "MY_NOTES.md").write_text("mine\n")
    (ws["export_notes"] / "my_eval").mkdir()
    (ws["export_notes"] / "my_eval" / "scores.csv").write_text("a,b\n")
    ws["export_edited"] = root / "export-edited"  # an earlier export whose config the user edited
    export_student(ws["student"], ws["export_edited"], "float32")
    with open(ws["export_edited"] / "llmrank_serve.json", "a") as f:
        f.write("\n")
    ws["serve_copy"] = root / "deploy"  # a user folder that merely holds a copied llmrank_serve.json
    ws["serve_copy"].mkdir()
    (ws["serve_copy"] / "llmrank_serve.json").write_bytes((ws["export"] / "llmrank_serve.json").read_bytes())
    (ws["serve_copy"] / "NOTES.md").write_text("notes\n")
    (ws["serve_copy"] / "deploy.yaml").write_text("replicas: 2\n")
    ws["legacy_export"] = root / "legacy-export"  # an export of an older llmrank (a marker, no record), plus a user file
    shutil.copytree(ws["export"], ws["legacy_export"])
    (ws["legacy_export"] / "llmrank_output.json").write_text('{"kind": "export"}')
    (ws["legacy_export"] / "README.md").write_text("my readme\n")
    ws["thesis"] = root / "thesis"  # distill -o into a user's folder with a merged/ of its own
    (ws["thesis"] / "merged").mkdir(parents=True)
    (ws["thesis"] / "merged" / "thesis.tex").write_text("\\documentclass{article}\n")
    ws["distill_prev"] = root / "distill-prev"  # an llmrank distill folder (recorded) the user added a file to
    begin_dir(ws["distill_prev"], "distill")
    (ws["distill_prev"] / "merged").mkdir()
    (ws["distill_prev"] / "merged" / "config.json").write_text("{}")
    record_dir(ws["distill_prev"], "distill")
    (ws["distill_prev"] / "merged" / "thesis.tex").write_text("mine\n")
    ws["distill_copied_marker"] = root / "distill-copied"  # a user folder holding a copied started.json
    ws["distill_copied_marker"].mkdir()
    (ws["distill_copied_marker"] / "started.json").write_text('{"config_hash": "x"}')
    (ws["distill_copied_marker"] / "paper.pdf").write_bytes(b"%PDF-1.4\n")
    ws["compare_mine"] = root / "compare-mine"  # hand-written compare.md and compare.json
    ws["compare_mine"].mkdir()
    (ws["compare_mine"] / "compare.md").write_text("# my comparison\n")
    (ws["compare_mine"] / "compare.json").write_text("[]\n")
    os.chmod(ws["compare_mine"] / "compare.md", 0o640)
    ws["compare_prev"] = root / "compare-prev"  # a recorded compare folder, with the user's notes added
    begin_dir(ws["compare_prev"], "compare")
    (ws["compare_prev"] / "compare.md").write_text("# llmrank compare\n")
    record_dir(ws["compare_prev"], "compare")
    (ws["compare_prev"] / "notes.txt").write_text("mine\n")
    ws["fifo_dir"] = root / "fifo-dir"
    ws["fifo_dir"].mkdir()
    os.mkfifo(ws["fifo_dir"] / "pipe")
    ws["fifo"] = root / "a.fifo"
    os.mkfifo(ws["fifo"])
    ws["export_fifo"] = root / "export-fifo"  # an llmrank export with a FIFO put into it
    export_student(ws["student"], ws["export_fifo"], "float32")
    os.mkfifo(ws["export_fifo"] / "pipe")
    return ws


# -- the cases ---------------------------------------------------------------------------------------------

@dataclass
class RuleCase:
    rule: int
    name: str
    argv: str
    names: tuple[str, ...] = ()
    """What the error's last line must contain (``{key}``: the workspace path)."""
    watch: tuple[str, ...] = ()
    """Workspace paths whose every file must keep its bytes and mode."""
    code: int = 2


def _rule1() -> list[RuleCase]:
    cases = []
    for name, extra in NOT_RECORDS.items():
        line = _teacher_text().count("\n") + 1
        for cmd, argv in COMMANDS_ON_TEACHER.items():
            key = f"t_end_{name}"
            cases.append(RuleCase(1, f"{cmd}: last line {name}", argv.replace("{f}", "{" + key + "}").replace("{n}", f"e{name}"),
                                  ("{" + key + "}:" + str(line),), (key,)))
        if extra.endswith(b"\n"):
            key = f"t_mid_{name}"
            cases.append(RuleCase(1, f"evaluate: line 2 {name}", "evaluate {" + key + "} --qrels {qrels}",
                                  ("{" + key + "}:2",), (key,)))
    return cases


def _rule2() -> list[RuleCase]:
    cases = []
    for i in range(14):
        key = f"recipe_name_{i}"
        cases.append(RuleCase(2, f"recipe name #{i}", "run {" + key + "} --out {out}", ("{" + key + "}", "key 'name'"),
                              ("user_project", "out")))
        if i < 4:
            cases.append(RuleCase(2, f"recipe name #{i} into a user's project", "run {" + key + "} --out {user_project}/a/b",
                                  ("key 'name'",), ("user_project",)))
    for i, name in enumerate(["../project", "/tmp", "..", "a/b"]):
        cases.append(RuleCase(2, f"--set name={name}", f"run {{recipe_name_0}} --set name={name} --out {{out}}",
                              ("key 'name'",), ("user_project", "out")))
    return cases


def _rule7() -> list[RuleCase]:
    c = []
    for key, needle in [("empty_query", "'query' is empty"), ("blank_query", "'query' is only whitespace"),
                        ("newline_query", "'query' is only whitespace"), ("dup_doc_two_texts", "listed twice"),
                        ("dup_doc_same_text", "listed twice"), ("doc_texts_across_queries", "another text"),
                        ("doc_titles_across_queries", "another text"), ("label_fraction", "whole number"),
                        ("label_bool", "whole number"), ("label_string", "whole number"), ("label_nan", "whole number"),
                        ("label_inf", "whole number"), ("label_neg_inf", "whole number"), ("score_nan", "finite"),
                        ("score_string", "finite"), ("no_docs", "empty list")]:
        line = 2 if "across" in key else 1
        c.append(RuleCase(7, f"retrieve {key}", "retrieve {" + key + "} -o {tmp}/r7-" + key + ".trec", ("{" + key + "}:" + str(line), needle)))
        c.append(RuleCase(7, f"distill {key}", "distill --dataset {" + key + "} --oracle -o {tmp}/d7-" + key,
                          ("{" + key + "}:" + str(line), needle)))
        c.append(RuleCase(7, f"compare {key}", "compare {" + key + "} -o {tmp}/c7-" + key, ("{" + key + "}:" + str(line), needle)))
    for key in ("beir_blank_query", "beir_empty_query"):
        c.append(RuleCase(7, f"retrieve {key}", "retrieve {" + key + "} -o {tmp}/r7-" + key + ".trec",
                          ("queries.jsonl:2", "key 'text'")))
        c.append(RuleCase(7, f"distill {key}", "distill --dataset {" + key + "} --split test --oracle -o {tmp}/d7-" + key,
                          ("queries.jsonl:2", "key 'text'")))
    for key in ("qrels_half", "qrels_frac", "qrels_neg_frac", "qrels_exp"):
        c.append(RuleCase(7, f"evaluate with {key}", "evaluate {run} --qrels {" + key + "}", ("{" + key + "}:2", "whole number")))
        c.append(RuleCase(7, f"fuse with {key}", "fuse {teacher} {teacher} --qrels {" + key + "} -o {tmp}/f7-" + key + ".jsonl",
                          ("{" + key + "}:2", "whole number")))
    for w in ("0 0", "0 0.0", "0.0 -0"):
        c.append(RuleCase(7, f"fuse --weights {w}", f"fuse {{teacher}} {{t_end_note}} --weights {w} -o {{tmp}}/f7w.jsonl", ("weights",)))
    for r in ("0", "1", "99", "-5", "ten"):
        c.append(RuleCase(7, f"compare --resamples {r}", f"compare {{beir}} --resamples {r} -o {{tmp}}/c7", ("--resamples",)))
    for r in ("-1", "0", "x"):
        c.append(RuleCase(7, f"evaluate --rel-threshold {r}", f"evaluate {{run}} --qrels {{qrels}} --rel-threshold {r}",
                          ("--rel-threshold",)))
        c.append(RuleCase(7, f"compare --rel-threshold {r}", f"compare {{beir}} --rel-threshold {r} -o {{tmp}}/c7",
                          ("--rel-threshold",)))
    return c


def _rule8() -> list[RuleCase]:
    c = []
    for key, needle in [("hits_without_qid", "'qid'"), ("empty_hits", "'hits' is an empty list"),
                        ("hit_qid_mismatch", "'qid' is 't2'"), ("blank_query_json", "'query' is only whitespace"),
                        ("hits_not_list", "'hits'")]:
        c.append(RuleCase(8, f"evaluate {key}", "evaluate {" + key + "} --qrels {qrels}", ("{" + key + "}: item 0", needle)))
    c.append(RuleCase(8, "evaluate content_across_items", "evaluate {content_across_items} --qrels {qrels}",
                      ("{content_across_items}: item 1", "another 'content'")))
    c.append(RuleCase(8, "retrieve empty_hits", "retrieve {empty_hits} -o {tmp}/r8.trec", ("{empty_hits}: item 0", "'hits'")))
    c.append(RuleCase(8, "dataset without qids beside qrels", "retrieve {cj_noqid_dir} -o {tmp}/r8b.trec", ("cands.json: item 0", "'qid'")))
    c.append(RuleCase(8, "TREC run given to fuse", "fuse {run} {teacher} -o {tmp}/f8.jsonl", ("{run}:1", "TREC run")))
    c.append(RuleCase(8, "TREC run given to fuse second", "fuse {teacher} {run} -o {tmp}/f8b.jsonl", ("{run}:1", "TREC run")))
    c.append(RuleCase(8, "TREC run as distill teacher", "distill --dataset {beir} --split test --teacher {run} -o {tmp}/d8",
                      ("{run}:1", "TREC run")))
    c.append(RuleCase(8, "topics with a blank query", "fuse {topics_blank} {teacher} -o {tmp}/f8c.jsonl", ("{topics_blank}:1",)))
    for kind in ("listwise", "pairwise", "empty", "Pointwise"):
        key = f"student_kind_{kind}"
        c.append(RuleCase(8, f"rerank a student of kind {kind}", "rerank {beir} --model {" + key + "} --method listwise -o {tmp}/k8.trec",
                          ("llmrank_student.json", "key 'kind'")))
        c.append(RuleCase(8, f"export a student of kind {kind}", "export {" + key + "} -o {tmp}/e8-" + kind,
                          ("llmrank_student.json", "key 'kind'"), (key,)))
    return c


DAMAGED = ("no_tokenizer", "no_config", "no_weights", "truncated_weights", "one_byte_short", "random_weights",
           "empty_weights", "config_not_json", "meta_not_json", "meta_a_list", "header_lies", "adapter_no_config",
           "adapter_no_weights", "adapter_truncated")
DAMAGE_WORDS = {"no_tokenizer": "tokenizer", "no_config": "config.json", "no_weights": "no weights",
                "truncated_weights": "damaged weights", "one_byte_short": "damaged weights",
                "random_weights": "damaged weights", "empty_weights": "damaged weights", "config_not_json": "config.json",
                "meta_not_json": "llmrank_student.json", "meta_a_list": "llmrank_student.json",
                "header_lies": "damaged weights", "adapter_no_config": "adapter_config.json",
                "adapter_no_weights": "without its weights", "adapter_truncated": "damaged weights"}
NO_DEVICE = os.getuid() != 0 and not os.path.exists("/dev/null")


def _rule3() -> list[RuleCase]:
    c = [
        RuleCase(3, "export onto an earlier export with the user's files", "export {student} -o {export_notes}",
                 ("{export_notes}", "MY_NOTES.md", "my_eval/scores.csv"), ("export_notes",)),
        RuleCase(3, "export onto an export whose file the user edited", "export {student} -o {export_edited}",
                 ("{export_edited}", "llmrank_serve.json"), ("export_edited",)),
        RuleCase(3, "export onto a folder holding a copied llmrank_serve.json", "export {student} -o {serve_copy}",
                 ("{serve_copy}", "NOTES.md", "deploy.yaml"), ("serve_copy",)),
        RuleCase(3, "export onto an older llmrank export with a user file", "export {student} -o {legacy_export}",
                 ("{legacy_export}", "README.md"), ("legacy_export",)),
        RuleCase(3, "compare over a hand-written compare.md/json", "compare {beir} -o {compare_mine}",
                 ("{compare_mine}", "compare.md", "compare.json"), ("compare_mine",)),
        RuleCase(3, "compare into its own folder the user added notes to", "compare {beir} -o {compare_prev}",
                 ("{compare_prev}", "notes.txt"), ("compare_prev",)),
        RuleCase(3, "distill into a user's folder with merged/", "distill --dataset {beir} --split test --oracle -o {thesis}",
                 ("{thesis}", "merged/thesis.tex"), ("thesis",)),
        RuleCase(3, "distill into its own folder the user added to", "distill --dataset {beir} --split test --oracle -o {distill_prev}",
                 ("{distill_prev}", "merged/thesis.tex"), ("distill_prev",)),
        RuleCase(3, "distill into a folder holding a copied started.json",
                 "distill --dataset {beir} --split test --oracle -o {distill_copied_marker}",
                 ("{distill_copied_marker}", "paper.pdf"), ("distill_copied_marker",)),
        RuleCase(3, "run into a user's folder of the run's name", "run {recipe} --out {user_runs}",
                 ("{user_runs}/tiny", "report.md"), ("user_runs",)),
        RuleCase(3, "export --overwrite into a folder with a FIFO", "export {student} -o {fifo_dir} --overwrite",
                 ("{fifo_dir}", "pipe", "FIFO"), ("fifo_dir",)),
        RuleCase(3, "export --overwrite onto an export with a FIFO in it", "export {student} -o {export_fifo} --overwrite",
                 ("{export_fifo}", "pipe", "FIFO"), ("export_fifo",)),
        RuleCase(3, "distill --overwrite into a folder with a FIFO", "distill --dataset {beir} --split test --oracle -o {fifo_dir} --overwrite",
                 ("{fifo_dir}", "FIFO"), ("fifo_dir",)),
        RuleCase(3, "compare into a folder with a FIFO", "compare {beir} -o {fifo_dir}", ("{fifo_dir}", "FIFO"), ("fifo_dir",)),
        RuleCase(3, "retrieve --overwrite onto a FIFO", "retrieve {beir} -o {fifo} --overwrite", ("{fifo}", "FIFO"), ("fifo",)),
        RuleCase(3, "fuse --overwrite onto a FIFO", "fuse {teacher} {teacher} -o {fifo} --overwrite", ("{fifo}", "FIFO"), ("fifo",)),
        RuleCase(3, "teach onto a FIFO", "teach {beir} -o {fifo}", ("{fifo}", "FIFO"), ("fifo",)),
        RuleCase(3, "rerank --overwrite onto a FIFO", "rerank {beir} -o {fifo} --overwrite", ("{fifo}", "FIFO"), ("fifo",)),
    ]
    if os.path.exists("/dev/null"):
        for cmd in ("retrieve {beir} -o /dev/null --overwrite", "rerank {beir} -o /dev/null --overwrite",
                    "fuse {teacher} {teacher} -o /dev/null --overwrite", "teach {beir} -o /dev/null",
                    "export {student} -o /dev/null --overwrite", "retrieve {beir} -o /dev/zero --overwrite"):
            c.append(RuleCase(3, f"{cmd.split()[0]} onto a device node{' (zero)' if 'zero' in cmd else ''}", cmd,
                              ("/dev/", "device node")))
    return c


def _rule4() -> list[RuleCase]:
    c = []
    for where, needle in (("/proc/llmrank-x", "/proc"), ("{user_file}/sub", "{user_file}")):
        c += [
            RuleCase(4, f"compare -o {where}", f"compare {{beir}} -o {where}/c", (needle,), ("user_file",)),
            RuleCase(4, f"run --out {where}", f"run {{recipe}} --out {where}/runs", (needle,), ("user_file",)),
            RuleCase(4, f"distill -o {where}", f"distill --dataset {{beir}} --split test --oracle -o {where}/d", (needle,), ("user_file",)),
            RuleCase(4, f"export -o {where}", f"export {{student}} -o {where}/e", (needle,), ("user_file",)),
            RuleCase(4, f"fuse -o {where}", f"fuse {{teacher}} {{teacher}} -o {where}/f.jsonl", (needle,), ("user_file",)),
            RuleCase(4, f"teach -o {where}", f"teach {{beir}} -o {where}/t.jsonl", (needle,), ("user_file",)),
            RuleCase(4, f"rerank -o {where}", f"rerank {{beir}} -o {where}/r.trec", (needle,), ("user_file",)),
        ]
    c.append(RuleCase(4, "run --out a file", "run {recipe} --out {user_file}", ("{user_file}",), ("user_file",)))
    c.append(RuleCase(4, "compare -o a file", "compare {beir} -o {user_file}", ("{user_file}",), ("user_file",)))
    return c


def _rule5() -> list[RuleCase]:
    c = []
    for name in DAMAGED:
        key = f"s_{name}"
        c.append(RuleCase(5, f"rerank a student: {name}", "rerank {beir} --model {" + key + "} --method pointwise -o {tmp}/k5-" + name + ".trec",
                          ("{" + key + "}", DAMAGE_WORDS[name]), (key,)))
        c.append(RuleCase(5, f"export a student: {name}", "export {" + key + "} -o {tmp}/e5-" + name,
                          ("{" + key + "}", DAMAGE_WORDS[name]), (key,)))
    c.append(RuleCase(5, "rerank an export copied without llmrank_student.json",
                      "rerank {beir} --model {export_no_meta} -o {tmp}/k5-nometa.trec", ("{export_no_meta}", "llmrank_student.json"),
                      ("export_no_meta",)))
    c.append(RuleCase(5, "teach with an export copied without llmrank_student.json",
                      "teach {beir} --model {export_no_meta} --method pointwise -o {tmp}/t5-nometa.jsonl",
                      ("{export_no_meta}", "llmrank_student.json"), ("export_no_meta",)))
    c.append(RuleCase(5, "export an export copied without llmrank_student.json", "export {export_no_meta} -o {tmp}/e5-nometa",
                      ("{export_no_meta}", "llmrank_student.json"), ("export_no_meta",)))
    return c


RULE_CASES: list[RuleCase] = _rule1() + _rule2() + _rule7() + _rule8()
MODEL_CASES: list[RuleCase] = _rule3() + _rule4() + _rule5()
"""Cases that need the tiny student and the user's folders of :func:`add_model_workspace`."""


# -- running and checking ----------------------------------------------------------------------------------

def snapshot(path: Path) -> dict[str, tuple]:
    """``{relative path: (type, mode, sha256 or link target)}`` of ``path`` and everything under it."""
    out: dict[str, tuple] = {}
    paths = [path] + (sorted(path.rglob("*")) if path.is_dir() and not path.is_symlink() else [])
    for p in paths:
        try:
            st = p.lstat()
        except FileNotFoundError:
            out[str(p.relative_to(path))] = ("absent",)
            continue
        rel = str(p.relative_to(path))
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            out[rel] = ("file", mode, hashlib.sha256(p.read_bytes()).hexdigest())
        elif stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", mode, os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", mode)
        else:
            out[rel] = ("special", stat.S_IFMT(st.st_mode), mode, st.st_rdev)
    return out


def outcome(case: RuleCase, ws: dict) -> tuple[str, str]:
    """``(outcome, last line)``: clear error, unclear error, traceback, silent (exit 0 or wrong code), or
    changed user files (checked first, whatever the exit)."""
    before = {k: snapshot(ws[k]) for k in case.watch}
    code, out, err, tb = run_case(case, ws)
    lines = [x for x in err.replace("\r", "\n").strip().splitlines() if x.strip()]
    last = lines[-1] if lines else out.strip()[:200]
    if {k: snapshot(ws[k]) for k in case.watch} != before:
        return "changed user files", last
    if tb is not None or "Traceback" in err:
        return "traceback", (tb or err).strip().splitlines()[-1]
    if code != case.code:
        return "silent", last
    if case.code == 2:
        ok = ": error: " in last and all(n.format(**ws) in last for n in case.names)
        return ("clear error" if ok else "unclear error"), last
    return "correct result", last
