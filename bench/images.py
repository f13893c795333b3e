"""`make images` figures: warm runs, rebuilds after an edit under operator/, sizes, import and run.

Run after a cold `make images` (its per-image build times are in ~/.cache/kubetune/images/index.json):
    PYTHONPATH=operator:. python3 bench/images.py
The edit is made in a temporary copy of the build inputs; the repository's own images are rebuilt
(from the layer cache) at the end so the index points at them again. The images are imported into a
throwaway containerd (never the machine's), once in full and once after the rebuild, and each one's
program is started with --help as the image's USER.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.containerd import Containerd, throwaway_containerd

from kubetune.devcluster import imageplan, images

REPO = Path(__file__).resolve().parents[1]
INPUTS = ("pyproject.toml", "README.md", "images", "operator", "charts/kubetune/Chart.yaml")
REBUILT = ("operator", "router", "trainer")  # every image whose context holds operator/
# Imported into the throwaway containerd; the multi-GB ones need ~2x their size there (content +
# snapshots), so by default they are started with `buildah run` (as their USER) instead.
SMALL = ["operator", "router"]


def timed(label: str, fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    seconds = time.monotonic() - start
    print(f"{label:<52} {seconds:8.1f} s", flush=True)
    return seconds


def copy_inputs(dest: Path) -> None:
    for name in INPUTS:
        source = REPO / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, target)


def import_and_run(daemon: Containerd, names: list[str], label: str) -> None:
    paths = images.default_paths()
    for name in names:
        timed(
            f"{label}: import {name}",
            lambda n=name: images.import_images(daemon.address, daemon.namespace, [n]),
        )  # type: ignore[misc]
        ref = images.load_index(paths)[name].ref
        config = images.image_config(paths.layout, ref)
        start = time.monotonic()
        result = daemon.run_probed(ref, *config["Entrypoint"], "--help", timeout=600)
        probe = [line for line in result.stderr.splitlines() if line.startswith("kt-probe")]
        first = (result.stdout.splitlines() or result.stderr.splitlines()[-1:] or ["<no output>"])[0][:50]
        print(
            f"  run {name:<9} rc={result.returncode} {probe[0] if probe else 'no probe'} "
            f"{time.monotonic() - start:5.1f} s: {first}",
            flush=True,
        )
        if result.returncode != 0:
            print(result.stderr[-3000:])


def buildah_run(name: str) -> None:
    """The image's entrypoint with --help, then its uid, as its USER in buildah (chroot)."""
    paths = images.default_paths()
    ref = images.load_index(paths)[name].ref
    config = images.image_config(paths.layout, ref)
    container = subprocess.run(
        imageplan.buildah(paths, "from", "--pull=never", ref), capture_output=True, text=True, check=True
    ).stdout.strip()

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        command = imageplan.buildah(paths, "run", "--isolation", "chroot", container, "--", *argv)
        return subprocess.run(command, capture_output=True, text=True, check=False)

    try:
        start = time.monotonic()
        result = run(*config["Entrypoint"], "--help")
        seconds = time.monotonic() - start
        uid = run("python", "-c", "import os; print(os.getuid(), os.getgid())").stdout.strip()
    finally:
        subprocess.run(imageplan.buildah(paths, "rm", container), capture_output=True, check=False)
    first = (result.stdout.splitlines() or ["<no output>"])[0][:50]
    print(
        f"  buildah run {name:<9} USER={config.get('User')} uid/gid={uid} rc={result.returncode} "
        f"{seconds:5.1f} s: {first}",
        flush=True,
    )


def du(path: Path) -> float:
    out = subprocess.run(["du", "-sbx", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1e9


def main() -> None:
    paths = images.default_paths()
    entries = images.load_index(paths)
    for name, entry in entries.items():
        print(f"{name:<10} {entry.ref:<44} {entry.size / 1e9:6.2f} GB   last build {entry.seconds:6.1f} s")
    print(f"{'OCI layout (all images, shared layers once)':<52} {du(paths.layout):8.2f} GB")
    print(f"{'buildah storage (bases, images, layer cache)':<52} {du(paths.storage):8.2f} GB")
    timed("warm, nothing changed (all images)", lambda: images.build())
    (REPO / "operator/kubetune/__init__.py").touch()
    timed("warm, a file under operator/ touched (mtime only)", lambda: images.build())
    for name in entries:
        if name not in SMALL:
            buildah_run(name)
    with throwaway_containerd() as daemon:
        import_and_run(daemon, SMALL, "fresh containerd")
        print(f"{'throwaway containerd root after the import':<52} {du(daemon.dir / 'root'):8.2f} GB")
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp)
            copy_inputs(copy)
            init = copy / "operator/kubetune/__init__.py"
            init.write_text(init.read_text() + "# edited by bench/images.py\n")
            for name in REBUILT:
                timed(
                    f"rebuild {name} after an edit under operator/",
                    lambda n=name: images.build([n], repo=copy),
                )  # type: ignore[misc]
        import_and_run(daemon, [n for n in REBUILT if n in SMALL], "after the edit")
    timed("back to the repository's images", lambda: images.build())


if __name__ == "__main__":
    main()
