"""The run report: ``runs/<name>/report.md`` with one table per eval dataset (first stage, teacher,
student before and after distillation: quality and cost per query, and the teacher→student speed-up),
PNG plots (score distributions of teacher vs student; per-query nDCG@10 deltas), and the same table for
the terminal."""

from __future__ import annotations

import json
from pathlib import Path

LABELS = {"first_stage": "first stage (BM25)", "teacher": "teacher", "student_before": "student, zero-shot",
          "student": "student, distilled"}


def _table(rows: dict, metrics: list[str], top_k: int = 0) -> list[str]:
    # rows that generate text (rationale teachers, reasoning students) add generated tokens and parse failures
    generates = any((rec.get("cost") or {}).get("completion_tokens") or "parse_failures" in (rec.get("cost") or {})
                    for rec in rows.values())
    head = ["ranker", *metrics, "calls/q", "prompt tok/q", "s/q"]
    if generates:
        head += ["gen tok/q", "parse failures"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, rec in rows.items():
        c = rec.get("cost") or {}
        cells = [LABELS.get(row, row)] + [f"{rec['metrics'].get(m, float('nan')):.4f}" for m in metrics]
        cells += [f"{c.get('calls_per_query', 0):.1f}", f"{c.get('prompt_tokens_per_query', 0):.0f}",
                  f"{c.get('seconds_per_query', 0):.3f}"]
        if generates:
            docs = rec.get("queries", 0) * top_k  # documents scored: one output each
            fails = c.get("parse_failures")
            cells += [f"{c.get('completion_tokens_per_query', 0):.0f}",
                      "–" if fails is None else f"{int(fails)}" + (f" ({fails / docs:.1%})" if docs else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _write_if_changed(path: Path, data: bytes) -> None:
    """Replace ``path`` (atomically) only when its bytes change: re-running a finished recipe rewrites nothing."""
    import os
    import tempfile

    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _save_png(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    _write_if_changed(path, buf.getvalue())


def _plots(name: str, rows: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    dist = [r for r in ("teacher", "student_before", "student") if r in rows]
    if dist:
        fig, axes = plt.subplots(1, len(dist), figsize=(4 * len(dist), 3))
        axes = [axes] if len(dist) == 1 else axes
        for ax, r in zip(axes, dist):
            vals = [s for scores in rows[r]["scores"].values() for s in scores]
            ax.hist(vals, bins=30, color="tab:blue" if r == "teacher" else "tab:orange")
            ax.set_title(LABELS[r], fontsize=9)
            ax.set_xlabel("score")
        fig.suptitle(f"{name}: score distributions")
        fig.tight_layout()
        f = out / f"{name}-scores.png"
        _save_png(fig, f)
        plt.close(fig)
        files.append(f.name)
    if "student" in rows:
        base = "student_before" if "student_before" in rows else "first_stage"
        after, before = rows["student"]["per_query"], rows[base]["per_query"]
        deltas = sorted(after[q] - before.get(q, 0.0) for q in after)
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(range(len(deltas)), deltas, color=["tab:green" if d > 0 else "tab:red" for d in deltas], width=1.0)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(f"{name}: per-query nDCG@10, distilled student − {LABELS[base]}", fontsize=9)
        ax.set_xlabel("queries (sorted)")
        fig.tight_layout()
        f = out / f"{name}-ndcg-deltas.png"
        _save_png(fig, f)
        plt.close(fig)
        files.append(f.name)
    return files


def write_report(runner) -> str:
    """Write ``report.md`` (+ plots) from the eval stage's rows; return the table as terminal text."""
    ev = runner.recipe.eval
    eval_dir = runner.stage_dir("eval")
    recipe = runner.recipe
    md = [f"# llmrank run `{recipe.name}`", ""]
    teach_manifest = runner.stage_dir("teach") / "manifest.json"
    t = recipe.teacher
    md.append(f"Teacher: **{t.method}**" + (f" over {[m.method + ':' + m.model for m in t.members]}" if t.members else f" with `{t.model}`"))
    if teach_manifest.is_file():
        stats = json.loads(teach_manifest.read_text()).get("teacher", {})
        if stats.get("metrics"):
            md.append(f"On the {stats.get('queries', '?')} training queries: teacher "
                      + ", ".join(f"{k}={v:.4f}" for k, v in stats["metrics"].items())
                      + "; first stage " + ", ".join(f"{k}={v:.4f}" for k, v in stats.get("first_stage_metrics", {}).items()))
    if recipe.distill:
        d = recipe.distill
        how = f"loss `{d.loss}`" if hasattr(d, "loss") else "SFT on the teacher's rationales"
        md.append(f"Student ({d.kind}): `{d.model}` + LoRA, {how}, prompt `{d.prompt}`, training {d.training}")
    md.append("")
    terminal = []
    results = eval_dir / "results.json"
    if results.is_file():  # the datasets of the last evaluation, in recipe order (not stale folders)
        names = list(json.loads(results.read_text()))
    else:
        names = sorted(p.name for p in eval_dir.iterdir() if p.is_dir()) if eval_dir.is_dir() else []
    for name in names:
        rows = {}
        extra = sorted(p.stem for p in (eval_dir / name).glob("student_*.json") if p.stem not in ev.baselines)
        for row in [*ev.baselines, *extra]:
            f = eval_dir / name / f"{row}.json"
            if f.is_file():
                rows[row] = json.loads(f.read_text())
        if not rows:
            continue
        n = next(iter(rows.values()))["queries"]
        table = _table(rows, ev.metrics, ev.top_k)
        md += [f"## {name} ({n} queries, top-{ev.top_k} reranked)", "", *table, ""]
        tc, sc = rows.get("teacher", {}).get("cost", {}), rows.get("student", {}).get("cost", {})
        if tc.get("seconds_per_query") and sc.get("seconds_per_query"):
            line = (f"Teacher → student speed-up: {tc['seconds_per_query'] / sc['seconds_per_query']:.1f}× "
                    f"in seconds per query on this machine")
            if tc.get("calls_per_query") and sc.get("calls_per_query"):
                line += f"; {tc['calls_per_query'] / sc['calls_per_query']:.1f}× in model calls"
            md += [line + ".", ""]
        md += [f"![{f}]({eval_dir.name}/{f})" for f in _plots(name, rows, eval_dir)] + [""]
        terminal += [f"{name} ({n} queries)", *table, ""]
    _write_if_changed(runner.root / "report.md", "\n".join(md).encode("utf-8"))
    terminal.append(f"report: {runner.root / 'report.md'}")
    return "\n".join(terminal)
