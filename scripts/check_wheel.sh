#!/usr/bin/env bash
# The installed package works without the checkout: build the wheel, install it into a fresh virtualenv
# (it sees the system site-packages, so torch and transformers are not reinstalled; llmrank itself must
# come from the wheel, not from an editable checkout), then, from a folder outside the checkout, rerank a
# tiny candidates file with the SHIPPED yes_no prompt (by name and by its documented path
# prompts/yes_no.yaml) and load a shipped eval suite. Uses a 2-layer random model; well under a minute.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/llmrank-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
unset PYTHONPATH  # the checkout must not be importable

echo "[check_wheel] building the wheel"
# build from a copy so that the checkout gets no build/ or egg-info folders
mkdir -p "$WORK/src"
git -C "$REPO" ls-files -z --cached --others --exclude-standard | (cd "$REPO" && xargs -0 cp -P --parents -t "$WORK/src" 2>/dev/null || true)
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" >/dev/null
WHEEL="$(ls "$WORK"/dist/llmrank-*.whl)"
# list the wheel once into a file: `zipfile -l | grep -q` fails under pipefail when grep exits early and
# zipfile's print meets a closed pipe (the listing outgrew the pipe buffer)
"$PY" -m zipfile -l "$WHEEL" > "$WORK/wheel-files.txt"
for asset in llmrank/assets/prompts/yes_no.yaml llmrank/assets/suites/trec-dl.yaml; do
  grep -q "$asset" "$WORK/wheel-files.txt" \
    || { echo "[check_wheel] the wheel lacks $asset" >&2; exit 1; }
done

echo "[check_wheel] installing $(basename "$WHEEL") into a fresh virtualenv"
"$PY" -m venv --system-site-packages "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --no-deps --no-index --force-reinstall "$WHEEL"

mkdir -p "$WORK/outside"
cd "$WORK/outside"
"$VPY" - "$WORK/venv" "$REPO" <<'PY'
import json, sys
from pathlib import Path
import llmrank
from llmrank.prompts import load_prompt
from llmrank.recipe import load_suite
venv = Path(sys.argv[1]).resolve()
where = Path(llmrank.__file__).resolve()
assert venv in where.parents, f"llmrank was imported from {where}, not from the wheel in {venv}"
for ref in ("yes_no", "prompts/yes_no.yaml"):
    p = Path(load_prompt(ref).path)
    assert venv in p.parents, f"prompt {ref} read from {p}, not from the wheel"
path, entries = load_suite("trec-dl")
assert venv in path.parents and entries, path
# a tiny dataset: 2 queries x 4 candidates (RankGPT-style candidates JSON) with judgements beside it
items = [{"query": "how do mosquito nets prevent malaria", "hits": [
            {"qid": "q1", "docid": f"a{j}", "rank": j + 1, "score": 4.0 - j, "content": t} for j, t in enumerate([
                "Bed nets treated with insecticide stop mosquitoes that carry malaria from biting at night.",
                "The stock market fell sharply on Tuesday.", "Coffee contains caffeine.",
                "Malaria is spread by Anopheles mosquitoes."])]},
         {"query": "does aspirin prevent heart attacks", "hits": [
            {"qid": "q2", "docid": f"b{j}", "rank": j + 1, "score": 4.0 - j, "content": t} for j, t in enumerate([
                "Rain is expected tomorrow.", "Low-dose aspirin lowers the risk of a first heart attack in some adults.",
                "Aspirin is an anti-inflammatory drug.", "Football is popular in Brazil."])]}]
Path("data").mkdir(exist_ok=True)
Path("data/cands.json").write_text(json.dumps(items))
Path("data/qrels.txt").write_text("q1 0 a0 2\nq1 0 a3 1\nq2 0 b1 2\nq2 0 b2 1\n")
# the benchmarks' tiny-model builder, loaded from its file (the checkout stays off sys.path: llmrank is the wheel's)
import importlib.util
spec = importlib.util.spec_from_file_location("tiny_models", Path(sys.argv[2]) / "eval" / "tiny_models.py")
tiny = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny)
tiny.build_tiny_llama("model", seed=0)
assert venv in Path(sys.modules["llmrank.models"].__file__).resolve().parents
print(f"[check_wheel] llmrank {llmrank.__version__} from {where.parent}")
PY
"$WORK/venv/bin/llmrank" rerank data/cands.json --model model --prompt prompts/yes_no.yaml --top-k 4 -o run.trec
"$WORK/venv/bin/llmrank" rerank data/cands.json --model model --prompt yes_no --top-k 4 -o run2.trec
test "$(wc -l < run.trec)" -eq 8 && cmp -s run.trec run2.trec \
  || { echo "[check_wheel] the reranked run is not 8 lines, or the prompt by path and by name disagree" >&2; exit 1; }
echo "[check_wheel] ok: the wheel ranks with its packaged prompt from $(pwd)"
