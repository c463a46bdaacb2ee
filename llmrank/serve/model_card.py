"""The model card (``README.md``) of an exported student: what it is, what taught it, on what, with which
loss, and what the run measured — quality and cost per query — so an export that leaves the run folder
(``--push-to-hub``) carries its evidence.

Facts come from the student's ``llmrank_student.json`` (kind, base model, loss, document length) and, when
the student sits in a run folder (``runs/<name>/distill/merged``), from that run: the teacher and the data
(``teach/manifest.json``), the training (``distill/manifest.json``, ``adapter/training_info.json``) and each
eval row (``eval/<dataset>/<row>.json``: metrics and cost per query). A student outside a run gets a card
with what its own folder says. Any kind uses it; a kind whose export is a sentence-transformers model says
so in its serve info (``"sentence_transformers": "CrossEncoder"`` or ``"SentenceTransformer"``) and the
card shows how to load it with that library.
"""

from __future__ import annotations

import json
from pathlib import Path

CARD_FILE = "README.md"
ROW_ORDER = ("first_stage", "teacher", "student_before", "student", "student_refined")


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_root(student_dir: str | Path) -> Path | None:
    """The run folder a student folder lies in (``<run>/distill/merged`` → ``<run>``), if it is one."""
    p = Path(student_dir).resolve()
    for up in (p.parent.parent, p.parent):
        if (up / "teach" / "manifest.json").is_file() or (up / "distill" / "manifest.json").is_file():
            return up
    return None


def run_facts(student_dir: str | Path) -> dict:
    """What the run around ``student_dir`` recorded: ``teach``, ``distill`` (manifests), ``training`` (the
    trainer's info) and ``eval`` (``{dataset: {row: {metrics, cost, queries}}}``); ``{}`` outside a run."""
    root = run_root(student_dir)
    if root is None:
        return {}
    facts: dict = {"run": root.name}
    for stage in ("teach", "distill", "refine"):
        m = _read_json(root / stage / "manifest.json")
        if m:
            facts[stage] = m
    info = _read_json(root / "distill" / "adapter" / "training_info.json")
    if info:
        facts["training"] = info
    evals: dict = {}
    results = _read_json(root / "eval" / "results.json")
    names = list(results) if results else sorted(p.name for p in (root / "eval").glob("*") if p.is_dir())
    for name in names:
        rows = {}
        for f in sorted((root / "eval" / name).glob("*.json")):
            rec = _read_json(f)
            if rec and "metrics" in rec:
                rows[f.stem] = {"metrics": rec["metrics"], "cost": rec.get("cost") or {}, "queries": rec.get("queries")}
        if rows:
            evals[name] = dict(sorted(rows.items(), key=lambda kv: (ROW_ORDER.index(kv[0]) if kv[0] in ROW_ORDER
                                                                     else len(ROW_ORDER), kv[0])))
    if evals:
        facts["eval"] = evals
    return facts


def _teacher_line(teach: dict) -> str:
    t = teach.get("teacher") or {}
    cfg = t.get("config") or {}
    if cfg:
        what = cfg.get("method", "?")
        if cfg.get("members"):
            what += " of " + " + ".join(f"{m.get('method')}:{m.get('model')}" for m in cfg["members"])
            if cfg.get("include_first_stage"):
                what += " + the first stage"
        else:
            what += f" with `{cfg.get('model')}`"
    else:
        what = "(not recorded)"
    line = f"- **Teacher**: {what}"
    if t.get("queries"):
        line += f", {t['queries']} training queries ranked"
    if t.get("metrics"):
        line += " (on them: " + ", ".join(f"{k} {v:.4f}" for k, v in t["metrics"].items()) + ")"
    return line


def model_card(meta: dict, info: dict, facts: dict, name: str = "") -> str:
    """The card's markdown (YAML front matter for the hub, then the facts)."""
    kind = meta.get("kind", "pointwise")
    cfg = meta.get("config") or {}
    base = meta.get("base_name") or cfg.get("model") or meta.get("base_model", "?")
    st = info.get("sentence_transformers")
    tags = ["llmrank", "reranker", "distillation", kind]
    front = ["---", "tags:", *[f"- {t}" for t in tags]]
    if st:
        front += ["library_name: sentence-transformers",
                  f"pipeline_tag: {'text-ranking' if st == 'CrossEncoder' else 'sentence-similarity'}"]
    front += ["---", ""]
    out = [*front, f"# {name or 'llmrank student'}", "",
           f"A **{kind}** student distilled by llmrank from a ranking teacher.", ""]
    teach, distill = facts.get("teach") or {}, facts.get("distill") or {}
    out.append(f"- **Base model**: `{base}`" + (f" (`{meta['base_model']}`)" if meta.get("base_model") not in (None, base) else ""))
    out.append(_teacher_line(teach) if teach else "- **Teacher**: (not recorded: the student was exported outside its run)")
    inputs = teach.get("inputs") or {}
    if inputs:
        out.append(f"- **Data**: `{inputs.get('dataset')}`, {inputs.get('queries')} training queries")
    loss = cfg.get("loss")
    if loss:
        out.append(f"- **Loss**: `{loss}`" + (f" {json.dumps(cfg.get('loss_options'))}" if cfg.get("loss_options") else ""))
    elif kind == "reasoning":
        out.append("- **Loss**: supervised fine-tuning on the teacher's rationales and verdicts")
    train = facts.get("training") or {}
    parts = [f"{cfg['finetune']} fine-tuning" if cfg.get("finetune") else None,
             f"groups of {cfg['group_size']}" if cfg.get("group_size") else None,
             f"documents cut to {meta['max_doc_tokens']} tokens" if meta.get("max_doc_tokens") else None,
             f"{train['global_step']} optimizer steps over {train.get('groups')} groups" if train.get("global_step") else None,
             f"{distill['seconds']:.0f} s of training" if distill.get("seconds") else None]
    if any(parts):
        out.append("- **Training**: " + ", ".join(p for p in parts if p))
    out.append("")
    for dataset, rows in (facts.get("eval") or {}).items():
        metrics = list(next(iter(rows.values()))["metrics"])
        n = next(iter(rows.values())).get("queries")
        out += [f"## {dataset}" + (f" ({n} queries)" if n else ""), "",
                "| ranker | " + " | ".join(metrics) + " | seconds / query | model calls / query |",
                "|---|" + "---|" * (len(metrics) + 2)]
        for row, rec in rows.items():
            c = rec["cost"]
            out.append(f"| {row} | " + " | ".join(f"{rec['metrics'].get(m, float('nan')):.4f}" for m in metrics)
                       + f" | {c.get('seconds_per_query', float('nan')):.3f} | {c.get('calls_per_query', 0):.1f} |")
        s = (rows.get("student") or {}).get("cost", {}).get("seconds_per_query")
        ratios = [f"{row} {rec['cost']['seconds_per_query'] / s:.1f}×" for row, rec in rows.items()
                  if row not in ("student", "first_stage") and s and rec["cost"].get("seconds_per_query")]
        if ratios:
            out += ["", "Cost per query relative to this student (measured in the same run): " + ", ".join(ratios) + "."]
        out.append("")
    if not facts.get("eval"):
        out += ["No evaluation was recorded with this student (export it from a run with an `eval` section).", ""]
    out += ["## Use", ""]
    cut = meta.get("max_doc_tokens")
    if st == "CrossEncoder":
        out += ["```python", "from sentence_transformers import CrossEncoder", "",
                "model = CrossEncoder(\"PATH_OR_REPO\")",
                "scores = model.predict([(query, document) for document in documents])  # the logit: higher is better",
                "```", ""]
    elif st == "SentenceTransformer":
        out += ["```python", "from sentence_transformers import SentenceTransformer", "",
                "model = SentenceTransformer(\"PATH_OR_REPO\")",
                "scores = model.similarity(model.encode([query]), model.encode(documents))",
                "```", ""]
    if cut:
        out += [f"llmrank scores documents cut to their first {cut} tokens; cut them the same way for the same scores.", ""]
    if info.get("runner") == "pooling":
        out += ["Serve it on vLLM's `/rerank`: `llmrank serve PATH`, then "
                "`llmrank rerank DATASET --method served --backend http://127.0.0.1:8000 --model PATH -o run.trec`.", ""]
    out += ["Made with llmrank (teach → distill → eval → export)."]
    return "\n".join(out) + "\n"


def write_model_card(folder: str | Path, student_dir: str | Path, meta: dict, info: dict) -> Path:
    """Write ``folder/README.md`` for the export of ``student_dir``; returns its path."""
    folder = Path(folder)
    facts = run_facts(student_dir)
    name = facts.get("run") or Path(student_dir).resolve().name
    path = folder / CARD_FILE
    path.write_text(model_card(meta, info, facts, name=name), encoding="utf-8")
    return path
