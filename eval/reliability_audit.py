"""Count how llmrank answers bad and edge inputs: clear errors, tracebacks, silent results, lost files.

Runs every case of ``tests/test_reliability.py`` (the one table of bad inputs) through the CLI in this
process, plus ``evaluate`` and every data loader over the fuzz inputs (random bytes, truncated copies of
the real files in ../shared/data), and prints one line per outcome class:

    python eval/reliability_audit.py            # counts
    python eval/reliability_audit.py -v         # and one line per case

A case is a *clear error* when it exits 2 with one line naming what the table says it must name, a
*traceback* when an exception escapes, *silent* when it exits 0 where an error was due (or 2 without
naming the file, key or line), and *data loss* when a user file listed in the case changed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_reliability as t  # noqa: E402

from llmrank.errors import LlmrankError  # noqa: E402


def audit_cases(ws: dict, verbose: bool) -> Counter:
    counts: Counter = Counter()
    for case in t.CASES:
        before = {k: t._digest(ws[k]) for k in case.keep}
        code, out, err, tb = t.run_case(case, ws)
        lines = [x for x in err.strip().splitlines() if x]
        if tb is not None or "Traceback" in err:
            outcome = "traceback"
        elif code != case.code:
            outcome = "silent"
        elif case.code == 2:
            named = len(lines) == 1 and all(n.format(**ws) in lines[0] for n in case.names)
            outcome = "clear error" if named else "unclear error"
        else:
            outcome = "correct result" if all(n in out for n in case.out) else "silent"
        if {k: t._digest(ws[k]) for k in case.keep} != before:
            counts["data loss"] += 1
        counts[outcome] += 1
        if verbose:
            print(f"{outcome:<14} [{case.group}] {case.name}: {lines[-1] if lines else out.strip()[:100]}")
    return counts


def audit_fuzz(tmp: Path, ws: dict) -> Counter:
    counts: Counter = Counter()
    for path in t._fuzz_inputs(tmp):
        for name, load in t._loaders().items():
            try:
                load(path)
                counts["loaded"] += 1
            except LlmrankError as e:
                counts["clear error" if str(path) in str(e) else "unclear error"] += 1
            except Exception:  # noqa: BLE001
                counts["traceback"] += 1
        code, _, err, tb = t.run_case(t.Case("", f"evaluate {path} --qrels {{qrels}}"), ws)
        counts["traceback" if tb or "Traceback" in err else ("evaluated" if code == 0 else "clear error")] += 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LLMRANK_CACHE"] = str(Path(tmp) / "cache")
        ws = t.make_workspace(Path(tmp) / "ws")
        cases = audit_cases(ws, args.verbose)
        fuzz_dir = Path(tmp) / "fuzz"
        fuzz_dir.mkdir()
        fuzz = audit_fuzz(fuzz_dir, ws)
    groups = Counter(c.group for c in t.CASES)
    print(f"table: {len(t.CASES)} bad or edge inputs (data loss {groups['loss']}, tracebacks {groups['traceback']}, "
          f"silent results {groups['silent']}): " + ", ".join(f"{k} {v}" for k, v in sorted(cases.items())))
    print(f"fuzz: {sum(fuzz.values())} loader and evaluate calls on random and truncated files: "
          + ", ".join(f"{k} {v}" for k, v in sorted(fuzz.items())))
    bad = cases["traceback"] + cases["silent"] + cases["unclear error"] + cases["data loss"] + fuzz["traceback"] + fuzz["unclear error"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
