"""The images `make images` built, imported into a throwaway containerd and run as their USER.

Fails (never skips) when the images are missing: `make test` runs `make images` first, and a warm
`make images` takes seconds. The small images only: the trainer and vLLM images (several GB each)
go through the same import in `bench/images.py`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.containerd import Containerd, throwaway_containerd

from kubetune.devcluster import images

# image -> (uid = gid it must run as, text its --help prints first, whether its program is Python)
EXPECTED = {
    "operator": (65532, "usage: kubetune operator", True),
    "router": (65532, "Usage of kubetune-router", False),  # Go: its flag package prints this on stderr
}


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    with throwaway_containerd() as daemon:
        yield daemon


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_image_imports_and_runs_its_program_as_non_root(containerd: Containerd, name: str) -> None:
    paths = images.default_paths()
    refs = images.import_images(containerd.address, containerd.namespace, [name], paths=paths)
    listed = containerd.ctr("images", "ls", "-q")
    assert refs[name] in listed.stdout.split()
    uid, usage, python = EXPECTED[name]
    assert containerd.process_user(refs[name]) == (uid, uid)
    config = images.image_config(paths.layout, refs[name])
    result = containerd.run_probed(refs[name], *config["Entrypoint"], "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    # argparse prints usage on stdout, Go's flag package on stderr.
    assert usage in result.stdout + result.stderr, result.stdout + result.stderr
    if python:
        # The program itself, not only the runtime spec: the probe runs inside its interpreter.
        assert f"kt-probe uid={uid} gid={uid}" in result.stderr
