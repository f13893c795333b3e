"""`make images` figures: warm no-change run, rebuild after an edit under operator/, sizes, import and run.

Run after a cold `make images` (its per-image build times are in ~/.cache/kubetune/images/index.json):
    PYTHONPATH=operator:. python3 bench/images.py [--import-all]
The edit is made in a temporary copy of the build inputs; the real repository's images are rebuilt
(from the layer cache) at the end so the index points at them again.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.containerd import throwaway_containerd

from kubetune.devcluster import images

REPO = Path(__file__).resolve().parents[1]
INPUTS = ("pyproject.toml", "README.md", "images", "operator", "charts/kubetune/Chart.yaml")
# What each image's program prints first for --help, run as the image's USER.
HELP_ARGS = {"operator": ["--help"], "router": ["--help"], "trainer": ["--help"], "vllm-cpu": ["--help"]}


def timed(label: str, fn: object) -> float:
    start = time.monotonic()
    fn()  # type: ignore[operator]
    seconds = time.monotonic() - start
    print(f"{label:<48} {seconds:8.1f} s", flush=True)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--import-all", action="store_true", help="also import and run trainer and vllm-cpu")
    args = parser.parse_args()
    paths = images.default_paths()
    for name, entry in images.load_index(paths).items():
        print(f"{name:<10} {entry.ref:<48} {entry.size / 1e9:6.2f} GB   last build {entry.seconds:7.1f} s")
    timed("warm, nothing changed (all images)", lambda: images.build())
    (REPO / "operator/kubetune/__init__.py").touch()
    timed("warm, operator/ file touched (mtime only)", lambda: images.build())
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        copy_inputs(copy)
        init = copy / "operator/kubetune/__init__.py"
        init.write_text(init.read_text() + "# edited by bench/images.py\n")
        for name in ("operator", "router", "trainer"):
            timed(
                f"rebuild {name} after an edit under operator/", lambda n=name: images.build([n], repo=copy)
            )  # type: ignore[misc]
    timed("back to the repository's images (layer cache)", lambda: images.build())
    used = subprocess.run(["du", "-sb", str(paths.cache)], capture_output=True, text=True, check=True)
    print(f"{'disk used by ~/.cache/kubetune/images':<48} {int(used.stdout.split()[0]) / 1e9:8.2f} GB")
    names = list(HELP_ARGS) if args.import_all else ["operator", "router"]
    with throwaway_containerd() as daemon:
        for name in names:
            timed(
                f"import {name} into a fresh containerd",
                lambda n=name: images.import_images(daemon.address, daemon.namespace, [n]),
            )  # type: ignore[misc]
            ref = images.load_index(paths)[name].ref
            config = images.image_config(paths.layout, ref)
            start = time.monotonic()
            result = daemon.run_probed(ref, *config["Entrypoint"], *HELP_ARGS[name], timeout=600)
            probe = [line for line in result.stderr.splitlines() if line.startswith("kt-probe")]
            first = (result.stdout.splitlines() or ["<no output>"])[0][:60]
            print(
                f"run {name:<10} rc={result.returncode} {probe[0] if probe else 'no probe'} "
                f"{time.monotonic() - start:5.1f} s: {first}",
                flush=True,
            )
            if result.returncode != 0:
                print(result.stderr[-3000:])


if __name__ == "__main__":
    main()
