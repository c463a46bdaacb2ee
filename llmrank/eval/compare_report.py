"""The comparison report: ``DIR/compare.md``, ``DIR/compare.json`` and PNG plots per dataset, and the same
table for the terminal.

Plots (one set per dataset, ``DIR/<dataset>-*.png``):

- ``per-query``: per-query nDCG@10 of each row (y) against the baseline (x), with the diagonal;
- ``cost-quality``: seconds per query against nDCG@10, one point per cell (log axis when costs span >20×);
- ``scores``: the distribution of the scores each cell gave (one histogram per cell);
- ``win-tie-loss``: per row, the queries it wins, ties and loses against the baseline on nDCG@10.

Files are rewritten only when their bytes change (a re-run with nothing new leaves them as they are).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from llmrank.eval.report import _save_png, _write_if_changed


def _fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "—"
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def _share(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def table(result: dict) -> list[str]:
    """The dataset's markdown table (rows sorted by nDCG@10)."""
    k = result["top_k"]
    head = ["row", "nDCG@10", "MRR@10", f"R@{k}", "calls/q", "prompt tok/q", "compl. tok/q", "s/q",
            "repaired", "unparsed", "Δ nDCG@10", "p (t, Holm)", "p (rand, Holm)", "W/T/L"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        m, c, sig = r["metrics"], r.get("cost") or {}, r.get("significance")
        cells = [r["name"] + (" (baseline)" if r["name"] == result["baseline"] else ""),
                 f"{m['ndcg@10']:.4f}", f"{m['mrr@10']:.4f}", f"{m[f'recall@{k}']:.4f}",
                 f"{c.get('calls_per_query', 0):.1f}", f"{c.get('prompt_tokens_per_query', 0):.0f}",
                 f"{c.get('completion_tokens_per_query', 0):.0f}", f"{c.get('seconds_per_query', 0):.2f}",
                 _share(r.get("repaired_share")), _share(r.get("failed_share"))]
        if sig:
            star_t = " *" if sig["p_t_significant"] else ""
            star_r = " *" if sig["p_rand_significant"] else ""
            cells += [f"{sig['mean_diff']:+.4f}", _fmt_p(sig["p_t_holm"]) + star_t, _fmt_p(sig["p_rand_holm"]) + star_r,
                      f"{sig['wins']}/{sig['ties']}/{sig['losses']}"]
        else:
            cells += ["—", "—", "—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def injection_table(result: dict) -> list[str]:
    inj = result.get("injection") or {}
    if not inj:
        return []
    variants = list(next(iter(inj.values()))["variants"])
    head = (["cell", "no attack: top-1 / top-3"] + [f"{v}: top-1 / top-3 / ΔnDCG@10" for v in variants]
            + ["mean top-1", "mean top-3", "mean ΔnDCG@10"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in inj.items():
        c = row.get("clean") or {}
        cells = [name, f"{100 * c.get('top1', 0):.0f}% / {100 * c.get('top3', 0):.0f}%"]
        for v in variants:
            x = row["variants"][v]
            cells.append(f"{100 * x['top1']:.0f}% / {100 * x['top3']:.0f}% / {x['ndcg@10_drop']:+.4f}")
        mn = row["mean"]
        cells += [f"{100 * mn['top1']:.0f}%", f"{100 * mn['top3']:.0f}%", f"{mn['ndcg@10_drop']:+.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    n = next(iter(inj.values()))["variants"][variants[0]]["attacked_queries"]
    return lines + ["", f"Attacked queries: {n} (one non-relevant candidate each). top-1 / top-3: share of queries "
                        "whose target document is ranked first / in the first three; 'no attack' is the same target in "
                        "the clean run. ΔnDCG@10 = clean − attacked (positive: the attack hurt)."]


def plots(result: dict, out: Path, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = {r["name"]: r for r in result["rows"]}
    base = rows[result["baseline"]]
    others = [r for r in result["rows"] if r["name"] != result["baseline"]]
    files = []
    qids = sorted(base["per_query"])

    # per-query nDCG@10 against the baseline
    if others:
        n = len(others)
        cols = min(n, 3)
        nrows = math.ceil(n / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 4 * nrows), squeeze=False)
        for ax, r in zip(axes.flat, others):
            x = [base["per_query"][q] for q in qids]
            y = [r["per_query"].get(q, 0.0) for q in qids]
            ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="diagonal (equal)")
            ax.scatter(x, y, s=18, alpha=0.8)
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.set_aspect("equal")
            ax.set_xlabel(f"nDCG@10, {result['baseline']}", fontsize=8)
            ax.set_ylabel(f"nDCG@10, {r['name']}", fontsize=8)
            ax.legend(loc="lower right", fontsize=7)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.suptitle(f"{result['dataset']}: per-query nDCG@10 against the baseline", fontsize=10)
        fig.tight_layout()
        files.append(_save(fig, out / f"{stem}-per-query.png", plt))

    # cost against quality
    cells = [r for r in result["rows"] if r["cell"] is not None]
    if cells:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in cells:
            sec = max(r["cost"].get("seconds_per_query", 0.0), 1e-3)
            ax.scatter([sec], [r["metrics"]["ndcg@10"]], s=40)
            ax.annotate(r["name"], (sec, r["metrics"]["ndcg@10"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        fs = rows["first_stage"]["metrics"]["ndcg@10"]
        ax.axhline(fs, color="grey", lw=1, ls=":", label=f"first stage ({fs:.3f})")
        secs = [max(r["cost"].get("seconds_per_query", 0.0), 1e-3) for r in cells]
        if max(secs) / min(secs) > 20:  # a log axis only where the costs span orders of magnitude
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xlabel("seconds per query (log scale)")
        else:
            ax.set_xlim(0, max(secs) * 1.25)
            ax.set_xlabel("seconds per query")
        ax.set_ylabel("nDCG@10")
        ax.set_title(f"{result['dataset']}: cost against quality, one point per cell", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(_save(fig, out / f"{stem}-cost-quality.png", plt))

    # score distributions
    scored = [r for r in cells if r.get("scores")]
    if scored:
        fig, axes = plt.subplots(1, len(scored), figsize=(4 * len(scored), 3), squeeze=False)
        for ax, r in zip(axes.flat, scored):
            ax.hist(r["scores"], bins=30)
            ax.set_title(r["name"], fontsize=8)
            ax.set_xlabel("score")
            ax.set_ylabel("documents")
        fig.suptitle(f"{result['dataset']}: score distribution per cell", fontsize=10)
        fig.tight_layout()
        files.append(_save(fig, out / f"{stem}-scores.png", plt))

    # win / tie / loss against the baseline
    sig = [r for r in others if r.get("significance")]
    if sig:
        fig, ax = plt.subplots(figsize=(8, 0.6 * len(sig) + 1.5))
        names = [r["name"] for r in sig]
        w = [r["significance"]["wins"] for r in sig]
        t = [r["significance"]["ties"] for r in sig]
        lo = [r["significance"]["losses"] for r in sig]
        ax.barh(names, w, color="tab:green", label="wins")
        ax.barh(names, t, left=w, color="lightgrey", label="ties")
        ax.barh(names, lo, left=[a + b for a, b in zip(w, t)], color="tab:red", label="losses")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel(f"queries (nDCG@10 against {result['baseline']})")
        ax.set_ylabel("row")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_title(f"{result['dataset']}: per-query wins, ties and losses against the baseline", fontsize=10)
        fig.tight_layout()
        files.append(_save(fig, out / f"{stem}-win-tie-loss.png", plt))
    return files


def _save(fig, path: Path, plt) -> str:
    _save_png(fig, path)
    plt.close(fig)
    return path.name


def _finite(obj):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_ready(result: dict) -> dict:
    out = dict(result)
    out["rows"] = [{k: v for k, v in r.items() if k != "scores"} for r in result["rows"]]
    return _finite(out)


def write_compare_report(results: list[dict], out_dir: str | Path) -> str:
    """Write ``compare.md``, ``compare.json`` and the plots; return the terminal text."""
    from llmrank.eval.compare import _slug

    out = Path(out_dir)
    md = ["# llmrank compare", ""]
    terminal = []
    for res in results:
        stem = _slug(res["dataset"])
        t = table(res)
        head = (f"## {res['dataset']} ({res['queries']} queries, top-{res['top_k']} reranked; baseline "
                f"`{res['baseline']}`)")
        md += [head, "", *t, "",
               f"Δ and p-values: paired on per-query nDCG@10 against the baseline; t = paired t-test, rand = paired "
               f"randomization test (sign flips); both Holm-corrected across rows; * marks p < α = {res['alpha']}. "
               "W/T/L: queries won, tied, lost. repaired / unparsed: share of generated outputs (— where the "
               "method reads next-token probabilities and generates nothing).", ""]
        terminal += [head.lstrip("# "), *t, ""]
        it = injection_table(res)
        if it:
            md += ["### Prompt-injection robustness", "", *it, ""]
            terminal += ["prompt injection:", *it, ""]
        md += [f"![{f}]({f})" for f in plots(res, out, stem)] + [""]
    _write_if_changed(out / "compare.md", "\n".join(md).encode("utf-8"))
    _write_if_changed(out / "compare.json",
                      json.dumps([_json_ready(r) for r in results], indent=1, sort_keys=True, default=str).encode("utf-8"))
    terminal.append(f"report: {out / 'compare.md'}")
    return "\n".join(terminal)
