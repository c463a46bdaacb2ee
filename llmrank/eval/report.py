"""The run report: ``runs/<name>/report.md``.

- what the run demonstrates and what it does not (the recipe's ``eval.note``);
- the student's learning curve (training loss per logged step, first vs last quarter; PNG);
- per eval dataset: the table of first stage, teacher, student before and after distillation (quality and
  cost per query), the cost per query side by side with the teacher-to-student ratio
  (:mod:`llmrank.eval.costs`), student–teacher agreement (Kendall τ and nDCG@10 against the teacher's
  ranking, :mod:`llmrank.eval.agreement`) next to nDCG@10 against the qrels, and PNG plots (score
  distributions; per-query nDCG@10 deltas);

and the same tables for the terminal."""

from __future__ import annotations

import json
from pathlib import Path

from llmrank.eval.costs import LABELS

REHEARSAL_SUFFIX = "-REHEARSAL"
"""Added to the name of a recipe rehearsed on a CPU (llmrank.rehearse): its run folder, and what makes the
report say REHEARSAL at its top."""


def _table(rows: dict, metrics: list[str], top_k: int = 0) -> list[str]:
    from llmrank.eval.metrics import label

    rel = next(iter(rows.values()), {}).get("rel_threshold", 1)  # binary measures show their threshold
    # rows that generate text (rationale teachers, reasoning students) add generated tokens and parse failures
    generates = any((rec.get("cost") or {}).get("completion_tokens") or "parse_failures" in (rec.get("cost") or {})
                    for rec in rows.values())
    head = ["ranker", *[label(m, rel) for m in metrics], "calls/q", "prompt tok/q", "s/q"]
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
    from llmrank.data.io import atomic_write_bytes

    if not (path.is_file() and path.read_bytes() == data):
        atomic_write_bytes(path, data)


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
    dist = [r for r in ("teacher", "student_before", "student", "student_refined") if r in rows]
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
    base = "student_before" if "student_before" in rows else "first_stage"
    if "student" in rows and base in rows:  # (an eval of the student row alone has no baseline to plot against)
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


def _refine_plot(runner) -> tuple[list[str], str | None]:
    """The refine stage's reward curve (GRPO: mean reward; DPO: reward accuracy and margin) against step, and
    a line comparing the first and the last quarter of the logged steps."""
    from llmrank.training.refined import read_trainer_log
    from llmrank.training.refiners import REFINERS, get_refiner

    r = runner.recipe.refine
    rows = read_trainer_log(runner.stage_dir("refine")) if r is not None else []
    spec = get_refiner(r.method).curves if r is not None and r.method in REFINERS else []
    curves = [(k, name) for k, name in spec if any(k in x for x in rows)]
    if not curves:
        return [], None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3))
    axes = [axes] if len(curves) == 1 else axes
    summary = []
    for ax, (key, name) in zip(axes, curves):
        pts = [(x["step"], x[key]) for x in rows if key in x]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", color="tab:purple")
        ax.set_xlabel("step")
        ax.set_title(f"{r.method.upper()}: {name}", fontsize=9)
        q = max(1, len(pts) // 4)
        first, last = sum(v for _, v in pts[:q]) / q, sum(v for _, v in pts[-q:]) / q
        summary.append(f"{name} {first:.4f} (mean of the first quarter of {len(pts)} logged steps) → {last:.4f} "
                       "(last quarter)")
    fig.tight_layout()
    f = runner.root / "refine-reward.png"
    _save_png(fig, f)
    plt.close(fig)
    return [f.name], "Refinement: " + "; ".join(summary) + "."


def _agreement_table(name: str, rows: dict, eval_dir: Path) -> list[str]:
    """Kendall τ and nDCG@10 of each student row against the teacher's ranking, next to nDCG@10 vs qrels."""
    from llmrank.data import read_run
    from llmrank.eval.agreement import agreement

    teacher_run = eval_dir / name / "teacher.trec"
    if "teacher" not in rows or not teacher_run.is_file():
        return []
    teacher = read_run(teacher_run)
    lines = ["| ranker | Kendall τ vs teacher | nDCG@10 vs teacher | nDCG@10 vs qrels |", "|---|---|---|---|"]
    for row in ("first_stage", "student_before", "student", "student_refined"):
        f = eval_dir / name / f"{row}.trec"
        if row not in rows or not f.is_file():
            continue
        # the rows rerank the same top-k; compare them there (the first stage's list may run deeper)
        k = len(next(iter(teacher.items()))[1]) if len(teacher) else 0
        a = agreement(read_run(f).top(k), teacher)
        lines.append(f"| {LABELS.get(row, row)} | {a['kendall_tau']:.3f} | {a['ndcg@10_vs_teacher']:.4f} | "
                     f"{rows[row]['metrics'].get('ndcg@10', float('nan')):.4f} |")
    return lines if len(lines) > 2 else []


def _learning_curve(runner, eval_dir: Path) -> list[str]:
    from llmrank.eval.curve import plot_curve, quarters, read_log

    rows = read_log(runner.stage_dir("distill") / "adapter" / "trainer_log.json")
    q = quarters(rows)
    if q is None:
        return []
    md = ["## Learning curve", "",
          f"Training loss over {q['last_step']} steps ({q['logged_steps']} logged): mean {q['first_quarter']:.4f} over "
          f"the first quarter of the logged steps, {q['last_quarter']:.4f} over the last quarter "
          f"(last/first = {q['ratio']:.2f}).", ""]
    info = runner.stage_dir("distill") / "adapter" / "training_info.json"
    if info.is_file():
        i = json.loads(info.read_text())
        per, acc, world = (int(i.get(k) or 1) for k in ("per_device_train_batch_size", "gradient_accumulation_steps",
                                                          "world_size"))
        md += [f"{i.get('global_step')} optimizer steps of {per * acc * world} group(s) each ({per} per device × "
               f"{acc} accumulation step(s) × {world} process(es)) over {i.get('groups')} training groups.", ""]
    eval_dir.mkdir(parents=True, exist_ok=True)
    plot_curve(rows, eval_dir / "learning-curve.png", f"{runner.recipe.name}: training loss", _save_png)
    return md + [f"![learning curve]({eval_dir.name}/learning-curve.png)", ""]


def write_report(runner) -> str:
    """Write ``report.md`` (+ plots) from the eval stage's rows; return the table as terminal text."""
    ev = runner.recipe.eval
    eval_dir = runner.stage_dir("eval")
    recipe = runner.recipe
    md = [f"# llmrank run `{recipe.name}`", ""]
    if recipe.name.endswith(SUFFIX := REHEARSAL_SUFFIX):  # nothing a rehearsal writes may pass for the real run
        md = [f"# REHEARSAL of `{recipe.name.removesuffix(SUFFIX)}`: tiny stand-in models, a few queries, one step",
              "", "**REHEARSAL — not a real run.** The numbers below say that the recipe's stages fit together, "
              "nothing about quality, speed or memory.", ""] + md
    gen_stats = runner.stage_dir("generate") / "stats.md"
    if getattr(recipe, "generate", None) is not None and gen_stats.is_file():  # queries written from the corpus
        md += ["## Training queries generated from the corpus", "", gen_stats.read_text().strip(), ""]
    teach_manifest = runner.stage_dir("teach") / "manifest.json"
    t = recipe.teacher
    md.append(f"Teacher: **{t.method}**" + (f" over {[m.method + ':' + m.model for m in t.members]}" if t.members else f" with `{t.model}`"))
    if teach_manifest.is_file():
        stats = json.loads(teach_manifest.read_text()).get("teacher", {})
        if stats.get("metrics"):
            from llmrank.eval.metrics import labelled

            rel = stats.get("rel_threshold", 1)
            md.append(f"On the {stats.get('queries', '?')} training queries: teacher "
                      + ", ".join(f"{k}={v:.4f}" for k, v in labelled(stats["metrics"], rel).items())
                      + "; first stage " + ", ".join(f"{k}={v:.4f}" for k, v in labelled(stats.get("first_stage_metrics", {}), rel).items()))
    if recipe.distill:
        d = recipe.distill
        how = f"loss `{d.loss}`" if hasattr(d, "loss") else "SFT on the teacher's rationales"
        tuned = "every layer fine-tuned" if d.finetune == "full" else f"LoRA r{d.lora.get('r', 16)}"
        prompt = f"prompt `{d.prompt}`, " if getattr(d, "prompt", None) else ""  # a bi-encoder has none
        md.append(f"Student ({d.kind}): `{d.model}`, {tuned}, {how}, {prompt}"
                  + (f"global batch {d.global_batch_size}, " if d.global_batch_size else "")
                  + f"training {d.training}")
    if recipe.refine:
        rf = recipe.refine
        md.append(f"Refinement: **{rf.method}**"
                  + (f", rewards {[(x.name, x.weight) for x in rf.rewards]}" if rf.rewards else "")
                  + f", training {rf.training}")
        files, line = _refine_plot(runner)
        if line:
            md += ["", line, *[f"![{f}]({f})" for f in files]]
    md.append("")
    if getattr(ev, "note", None):
        md += [f"**What this run shows.** {ev.note.strip()}", ""]
    md += _learning_curve(runner, eval_dir)
    terminal = []
    results = eval_dir / "results.json"
    if results.is_file():  # the datasets of the last evaluation, in recipe order (not stale folders)
        names = list(json.loads(results.read_text()))
    else:
        names = sorted(p.name for p in eval_dir.iterdir() if p.is_dir()) if eval_dir.is_dir() else []
    for name in names:
        rows = {}
        extra = sorted(p.stem for p in (eval_dir / name).glob("student_*.json") if p.stem not in ev.baselines)
        for row in dict.fromkeys([*ev.baselines, *extra, *ev.students]):
            f = eval_dir / name / f"{row}.json"
            if f.is_file():
                rows[row] = json.loads(f.read_text())
        if not rows:
            continue
        n = next(iter(rows.values()))["queries"]
        table = _table(rows, ev.metrics, ev.top_k)
        md += [f"## {name} ({n} queries, top-{ev.top_k} reranked)", ""]
        source = next((r["query_source"] for r in rows.values() if r.get("query_source")), "")
        if source:  # BRIGHT's reasoning rows: which query text was ranked (LLM-written or the annotators')
            md += [f"Queries: {source}.", ""]
        md += [*table, ""]
        from llmrank.eval.costs import cost_lines

        costs = cost_lines(rows)
        md += [*costs, ""] if costs else []
        agree = _agreement_table(name, rows, eval_dir)
        if agree:
            md += ["Student–teacher agreement (how well each ranking reproduces the teacher's order on the same "
                   "candidates), next to quality against the qrels:", "", *agree, ""]
        if "student" in rows and "student_refined" in rows:
            md += ["Refined − distilled student: " + ", ".join(
                f"{m} {rows['student_refined']['metrics'].get(m, float('nan')) - rows['student']['metrics'].get(m, float('nan')):+.4f}"
                for m in ev.metrics) + ".", ""]
        md += [f"![{f}]({eval_dir.name}/{f})" for f in _plots(name, rows, eval_dir)] + [""]
        terminal += [f"{name} ({n} queries)" + (f"; queries: {source}" if source else ""), *table, *costs, *agree, ""]
    _write_if_changed(runner.root / "report.md", "\n".join(md).encode("utf-8"))
    terminal.append(f"report: {runner.root / 'report.md'}")
    return "\n".join(terminal)
