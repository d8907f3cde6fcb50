#!/usr/bin/env bash
# Set up flowdsl in ./.venv on a fresh machine (idempotent; a second run takes seconds).
# PyTorch is installed first as the CPU build (torch==2.13.0), so no multi-GB CUDA build is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
LOG=.venv/setup.log
quiet_pip() {  # pip's output goes to the log; it is shown only if pip fails
    if ! "$VPY" -m pip install --quiet "$@" >"$LOG" 2>&1; then
        cat "$LOG" >&2
        echo "setup failed: pip install $*" >&2
        exit 1
    fi
}
if ! "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" >/dev/null 2>&1; then
    quiet_pip "torch==2.13.0"
fi
quiet_pip -e ".[dev]"
echo "flowdsl is set up in .venv ($("$VPY" -c 'import flowdsl; print(flowdsl.__version__)'))"
