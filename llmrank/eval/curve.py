"""The student's learning curve: training loss per logged step, read from the distill stage's
``adapter/trainer_log.json`` (``[{"step": …, "loss": …}, …]``, written by the trainer), the mean loss over the
first and the last quarter of the logged steps, their ratio, and a PNG plot for the report."""

from __future__ import annotations

import json
from pathlib import Path

from llmrank.errors import LlmrankError


def read_log(path: str | Path) -> list[dict]:
    """The logged ``{"step", "loss"}`` rows, in step order; a missing file is ``[]``, a bad one an error."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
        out = sorted(({"step": int(r["step"]), "loss": float(r["loss"])} for r in rows), key=lambda r: r["step"])
    except (ValueError, TypeError, KeyError) as e:
        raise LlmrankError(f"{path}: expected a JSON list of {{step, loss}} rows ({e})") from None
    return out


def quarters(rows: list[dict]) -> dict | None:
    """Mean loss over the first and last quarter of the logged steps (at least one row each) and
    ``last / first``; None with fewer than two rows."""
    if len(rows) < 2:
        return None
    q = max(len(rows) // 4, 1)
    first = sum(r["loss"] for r in rows[:q]) / q
    last = sum(r["loss"] for r in rows[-q:]) / q
    return {"first_quarter": first, "last_quarter": last, "ratio": last / first if first else float("nan"),
            "logged_steps": len(rows), "last_step": rows[-1]["step"]}


def plot_curve(rows: list[dict], path: Path, title: str, save) -> None:
    """Loss against step (``save(fig, path)`` writes the PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".", color="tab:purple")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
