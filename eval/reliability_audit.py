"""Count how llmrank answers bad and edge inputs: clear errors, tracebacks, silent results, changed user files.

Runs, through the CLI in this process:

- the table of :mod:`eval.reliability_cases` (the earlier rounds' bad inputs; ``tests/test_reliability.py``
  asserts it);
- the eight rules' tables of :mod:`eval.reliability_rules` (``tests/test_reliability_rules.py`` asserts them;
  torn lines, names that are paths, ownership of output folders, checks before the work, damaged students,
  meaningless input, errors that name the file and key), on a tiny random student built here;
- the rule-6 recipes below (every recipe value checked at load: each must be refused before any stage runs);
- ``evaluate`` and every data loader over the fuzz inputs (random bytes, truncated copies of real files).

    python -m eval.reliability_audit            # the summary
    python -m eval.reliability_audit -v         # and one line per case

A case is a *clear error* when it exits 2 and its last line names what the table says it must; a
*traceback* when an exception escapes; *silent* when it exits 0 (or otherwise) where an error was due;
*changed user files* when any file under a watched path changed its bytes or its mode (every file, folder,
link and device node under it is compared before and after, whatever the exit).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from eval import reliability_cases as t  # noqa: E402 - after the offline switches
from eval import reliability_rules as r  # noqa: E402

from llmrank.errors import LlmrankError  # noqa: E402

# rule 6: recipe values that must be refused when the recipe loads (one YAML body each; {beir} is the dataset)
BASE = "name: r6\ndata: {{dataset: {beir}, train_split: test, k: 6}}\n"
RULE6 = {
    "fusion member method dnese": "teacher: {{method: fusion, members: [{{method: dnese}}]}}\n",
    "teacher.model nosuchmodel": "teacher: {{method: pointwise, model: nosuchmodel}}\n",
    "distill.model a missing path": "teacher: {{method: oracle}}\ndistill: {{model: /no/such/model}}\n",
    "distill.prompt prp": "teacher: {{method: oracle}}\ndistill: {{prompt: prp}}\n",
    "member option batchsize": "teacher: {{method: fusion, members: [{{method: pointwise, options: {{batchsize: 4}}}}]}}\n",
    "export.dtype float8": "teacher: {{method: oracle}}\ndistill: {{}}\nexport: {{dtype: float8}}\n",
    "eval row studnet": "teacher: {{method: oracle}}\ndistill: {{}}\neval: {{datasets: [{{dataset: {beir}}}], baselines: [studnet]}}\n",
    "loss_options temprature": "teacher: {{method: oracle}}\ndistill: {{loss_options: {{temprature: 2}}}}\n",
    "members beside pointwise": "teacher: {{method: pointwise, members: [{{method: dense}}], fusion: rrf}}\n",
    "eval metrics without datasets": "teacher: {{method: oracle}}\neval: {{metrics: [ndcg@10]}}\n",
    "duplicated key": "teacher: {{method: oracle}}\nteacher: {{method: oracle}}\n",
    "second data section": "teacher: {{method: oracle}}\ndata: {{dataset: {beir}, train_split: test}}\n",
    # of our own design
    "teacher option window 0": "teacher: {{method: listwise, options: {{window: 0}}}}\n",
    "teacher option unknown": "teacher: {{method: listwise, options: {{windo: 4}}}}\n",
    "teacher.prompt nosuchprompt": "teacher: {{method: pointwise, prompt: nosuchprompt}}\n",
    "teacher.backend bogus": "teacher: {{method: pointwise, backend: bogus}}\n",
    "eval metric bleu": "teacher: {{method: oracle}}\ndistill: {{}}\neval: {{datasets: [{{dataset: {beir}}}], metrics: [bleu]}}\n",
    "eval dataset missing": "teacher: {{method: oracle}}\ndistill: {{}}\neval: {{datasets: [{{dataset: /no/such/data}}]}}\n",
    "first_stage a missing run": "teacher: {{method: oracle}}\n",  # with data.first_stage below
    "refine reward relevnce": "teacher: {{method: oracle}}\ndistill: {{}}\nrefine: {{method: grpo, rewards: [{{name: relevnce}}]}}\n",
    "distill.loss unknown": "teacher: {{method: oracle}}\ndistill: {{loss: ranknett}}\n",
    "distill.training key unknown": "teacher: {{method: oracle}}\ndistill: {{training: {{learnig_rate: 0.1}}}}\n",
    "unknown top-level key": "tacher: {{method: oracle}}\n",
    "fusion member model missing path": "teacher: {{method: fusion, members: [{{method: pointwise, model: ./no/model}}]}}\n",
}


def rule6_cases(ws: dict) -> list[r.RuleCase]:
    cases = []
    folder = ws["tmp"] / "rule6"
    folder.mkdir(exist_ok=True)
    for i, (name, body) in enumerate(RULE6.items()):
        text = BASE.format(beir=ws["beir"]) + body.format(beir=ws["beir"])
        if name == "first_stage a missing run":
            text = text.replace("k: 6}", "k: 6, first_stage: /no/such.run}")
        path = folder / f"r6-{i}.yaml"
        path.write_text(text)
        ws[f"r6_{i}"] = path
        # --stage refine: the recipe has no refine section (or --stage export, disabled), so a recipe that loads runs
        # no stage at all and exits 0: silent, as the value was not checked at load
        stage = "export" if "refine:" in text else "refine"
        extra = "\nexport: {enabled: false}\n" if stage == "export" else ""
        path.write_text(text + extra)
        cases.append(r.RuleCase(6, name, f"run {{r6_{i}}} --stage {stage} --out {{tmp}}/rule6-out", ("{r6_%d}" % i,),
                                ("beir",)))
    return cases


def old_cases() -> list[r.RuleCase]:
    """The earlier table, as rule cases (its ``keep`` paths watched byte and mode)."""
    out = []
    for c in t.CASES:
        rule = {"loss": 3, "traceback": 4, "silent": 7}[c.group]
        rc = r.RuleCase(rule, c.name, c.argv, c.names, c.keep, c.code)
        rc.out = c.out
        out.append(rc)
    return out


def classify(case: r.RuleCase, ws: dict) -> tuple[str, str]:
    result, last = r.outcome(case, ws)
    if result == "correct result" and getattr(case, "out", ()):
        code, out, _, _ = t.run_case(case, ws)  # the expected figures on stdout
        if not all(n in out for n in case.out):
            result = "silent"
    return result, last


def audit_fuzz(tmp: Path, ws: dict) -> Counter:
    counts: Counter = Counter()
    for path in t.fuzz_inputs(tmp):
        for _, load in t.loaders().items():
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


BAD = ("traceback", "silent", "unclear error", "changed user files")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--rules", default=None, help="only these rules, e.g. 1,3,6 (default: all, and the earlier table)")
    args = ap.parse_args()
    only = {int(x) for x in args.rules.split(",")} if args.rules else None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LLMRANK_CACHE"] = str(Path(tmp) / "cache")
        from eval.tiny_models import build_tiny_llama

        ws_old = t.make_workspace(Path(tmp) / "old")
        ws = r.make_rules_workspace(Path(tmp) / "ws")
        ws = r.add_model_workspace(ws, build_tiny_llama(Path(tmp) / "tiny", seed=0))
        tables = [("rules", ws, r.RULE_CASES + r.MODEL_CASES + rule6_cases(ws))]
        if only is None:
            tables.insert(0, ("earlier table", ws_old, old_cases()))
        per_rule: dict[int, Counter] = {}
        totals: Counter = Counter()
        for label, w, cases in tables:
            for case in cases:
                if only is not None and case.rule not in only:
                    continue
                result, last = classify(case, w)
                key = case.rule if label == "rules" else 0
                per_rule.setdefault(key, Counter())[result] += 1
                totals[result] += 1
                if args.verbose or result in BAD:
                    print(f"{result:<18} [rule {case.rule}] {case.name}: {last[:220]}")
        fuzz = Counter()
        if only is None:
            fuzz_dir = Path(tmp) / "fuzz"
            fuzz_dir.mkdir()
            fuzz = audit_fuzz(fuzz_dir, ws_old)
    n = sum(totals.values())
    print("per rule: " + "; ".join(
        f"{'earlier table' if k == 0 else f'rule {k}'}: {sum(c.values())} (" + ", ".join(f"{o} {v}" for o, v in sorted(c.items())) + ")"
        for k, c in sorted(per_rule.items())))
    if fuzz:
        print(f"fuzz: {sum(fuzz.values())} loader and evaluate calls on random and truncated files: "
              + ", ".join(f"{k} {v}" for k, v in sorted(fuzz.items())))
    print(f"reliability audit: {n} inputs, " + ", ".join(f"{k} {totals[k]}" for k in
          ("clear error", "correct result", "traceback", "silent", "unclear error", "changed user files"))
          + f"; fuzz tracebacks {fuzz['traceback']}, fuzz unclear errors {fuzz['unclear error']} "
          f"({time.perf_counter() - start:.0f} s)")
    bad = sum(totals[k] for k in BAD) + fuzz["traceback"] + fuzz["unclear error"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
