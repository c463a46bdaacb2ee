"""How long a GPU recipe takes to fail on a machine whose model hub cannot be reached, and what it says.

For each GPU recipe this runs ``python -m llmrank run RECIPE --set teacher.backend=hf`` (the route a user
without vLLM takes) in a fresh process with the hub *online* as far as the libraries know (``HF_HUB_OFFLINE``
and ``TRANSFORMERS_OFFLINE`` unset), and prints the wall time, the exit code, the number of stderr lines and
the line itself, and whether it names a recipe key. As the baseline, in the same process, the hub library
alone is asked for the recipe's teacher config (``transformers.AutoConfig.from_pretrained``), what the stages
did before the pre-run check: the ratio is llmrank's time over the library's.

    python -m eval.bench_unreachable [--recipes instruction-distill-7b dpo] [--no-baseline]

Where the hub *is* reachable the recipes' models resolve and nothing fails: the numbers mean something only
on a machine without hub access (what they measure is the time to an error).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_RECIPES = ["instruction-distill-7b", "listwise-margin-mse", "reasoning-grpo", "dpo"]


def _online_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.setdefault("LLMRANK_DATA", str(ROOT.parent / "shared" / "data"))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_recipe(name: str, out: Path) -> dict:
    recipe = ROOT / "recipes" / f"{name}.yaml"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "llmrank", "run", str(recipe), "--set", "teacher.backend=hf",
                        "--out", str(out)], capture_output=True, text=True, env=_online_env(), timeout=900)
    wall = time.perf_counter() - t0
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    key = re.search(r"key '([^']+)'", lines[-1]) if lines else None
    return {"recipe": name, "seconds": wall, "rc": p.returncode, "stderr_lines": len(lines),
            "key": key.group(1) if key else None, "last_line": lines[-1] if lines else ""}


def baseline(model: str) -> dict:
    """The hub library asked for the model's config, as a stage would have: its time and its last words."""
    code = ("import time, sys\nt=time.perf_counter()\nfrom transformers import AutoConfig\n"
            f"try:\n    AutoConfig.from_pretrained({model!r})\nexcept Exception as e:\n"
            "    print(type(e).__name__, str(e).splitlines()[0][:200], file=sys.stderr)\n"
            "print(f'{time.perf_counter()-t:.2f}')\n")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_online_env(), timeout=900)
    return {"seconds": time.perf_counter() - t0, "rc": p.returncode, "said": p.stderr.strip().splitlines()[-1:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", nargs="+", default=GPU_RECIPES)
    ap.add_argument("--no-baseline", action="store_true", help="skip the hub library's own attempt")
    args = ap.parse_args()
    import yaml

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes:
            r = run_recipe(name, Path(tmp) / "runs")
            rows.append(r)
            print(f"{name:24s} {r['seconds']:6.2f} s  exit {r['rc']}  {r['stderr_lines']} stderr line(s)  "
                  f"key {r['key']}\n    {r['last_line']}", flush=True)
    if not args.no_baseline:
        model = yaml.safe_load((ROOT / "recipes" / f"{args.recipes[0]}.yaml").read_text())["teacher"]["model"]
        b = baseline(model)
        print(f"baseline: AutoConfig.from_pretrained({model!r}): {b['seconds']:.2f} s, said {b['said']}")
        print(f"ratio llmrank / library ({args.recipes[0]}): {rows[0]['seconds'] / b['seconds']:.3f}")


if __name__ == "__main__":
    main()
