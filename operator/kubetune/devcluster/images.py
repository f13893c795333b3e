"""`make images`: the kubetune images built with buildah, without Docker or a registry.

    python -m kubetune.devcluster.images build [NAME ...] [--push REGISTRY [--tag TAG]] [--upstream-bases]
    python -m kubetune.devcluster.images import --address SOCKET [--namespace k8s.io] [NAME ...]
    python -m kubetune.devcluster.images list
    python -m kubetune.devcluster.images chart-values     # helm --set assignments for the built images
    python -m kubetune.devcluster.images archive NAME OUT.tar

Bases are made locally (mmdebstrap + buildah) and passed by build-arg; each image is tagged with a
hash of everything that decides its content and exported into one OCI layout under
~/.cache/kubetune/images; index.json there maps each name to its ref. A warm run with nothing
changed only hashes files. The planning is in kubetune.devcluster.imageplan; this module runs it.
Uses only the standard library: `make images` runs it before .venv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kubetune.devcluster import imageplan as plan

REPO = Path(__file__).resolve().parents[3]
# Fixed mtime of staged context files (after 1980: wheels are zip files): buildah's layer cache
# then depends on content alone, not on when git last wrote a file.
CONTEXT_MTIME = 315_619_200
INDEX_VERSION = 1


class ImageBuildError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("KUBETUNE_CACHE", str(Path.home() / ".cache" / "kubetune")))


def default_paths() -> plan.BuildPaths:
    cache = cache_root()
    return plan.BuildPaths(
        cache=cache / "images",
        pip_cache=Path(os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))),
        # The module and build caches `make cluster-binaries` fills (.ci/toolchain/build.sh).
        go_mod_cache=cache / "gomod",
        go_build_cache=cache / "gocache",
    )


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], *, quiet: bool = False) -> str:
    """Run a command; its output goes to stderr unless `quiet` (then it is returned)."""
    result = subprocess.run(
        list(argv),
        stdout=subprocess.PIPE if quiet else sys.stderr,
        stderr=subprocess.PIPE if quiet else None,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or "")[-4000:] if quiet else ""
        raise ImageBuildError(f"{' '.join(argv[:6])} … failed ({result.returncode}) {detail}")
    return result.stdout or ""


# ---- the index


@dataclass(frozen=True)
class Entry:
    name: str
    ref: str
    hash: str
    manifest: str
    size: int
    seconds: float
    # The ref this one replaced, kept in the layout too: two checkouts sharing the cache (a branch
    # and main) then switch between their images without rebuilding.
    previous: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "hash": self.hash,
            "manifest": self.manifest,
            "size": self.size,
            "buildSeconds": round(self.seconds, 1),
            "previous": self.previous,
        }


def load_index(paths: plan.BuildPaths) -> dict[str, Entry]:
    try:
        data = json.loads(paths.index.read_text())
    except FileNotFoundError:
        return {}
    if data.get("version") != INDEX_VERSION:
        return {}
    return {
        name: Entry(name, e["ref"], e["hash"], e["manifest"], e["size"], e["buildSeconds"], e.get("previous"))
        for name, e in data["images"].items()
    }


def save_index(paths: plan.BuildPaths, entries: dict[str, Entry]) -> None:
    data = {
        "version": INDEX_VERSION,
        "layout": str(paths.layout),
        "images": {name: entries[name].to_json() for name in sorted(entries)},
    }
    tmp = paths.index.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(paths.index)


@contextlib.contextmanager
def locked(paths: plan.BuildPaths, *, shared: bool = False) -> Iterator[None]:
    """Builds hold the cache exclusively (they rewrite the index and collect layout blobs);
    imports and archives share it, so no build removes a blob they are streaming."""
    paths.cache.mkdir(parents=True, exist_ok=True)
    with open(paths.cache / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


# ---- the OCI layout


def layout_index(layout: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((layout / "index.json").read_text())
    except FileNotFoundError:
        return {"schemaVersion": 2, "manifests": []}
    return data


def ref_name(descriptor: dict[str, Any]) -> str:
    return str(descriptor.get("annotations", {}).get("org.opencontainers.image.ref.name", ""))


def manifest_descriptor(layout: Path, ref: str) -> dict[str, Any] | None:
    for descriptor in layout_index(layout)["manifests"]:
        if ref_name(descriptor) == ref:
            return dict(descriptor)
    return None


def read_manifest(layout: Path, digest: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((layout / plan.blob_path(digest)).read_text())
    return data


def image_config(layout: Path, ref: str) -> dict[str, Any]:
    """The image's runtime config (Entrypoint, Cmd, User, Env, ...) from the layout."""
    descriptor = manifest_descriptor(layout, ref)
    if descriptor is None:
        raise ImageBuildError(f"{ref} is not in {layout}: run `make images`")
    manifest = read_manifest(layout, descriptor["digest"])
    config: dict[str, Any] = json.loads((layout / plan.blob_path(manifest["config"]["digest"])).read_text())
    return dict(config.get("config", {}))


def drop_refs(layout: Path, keep: set[str]) -> None:
    """Remove every ref but `keep` from the layout, then every blob no kept manifest uses."""
    index = layout_index(layout)
    index["manifests"] = [d for d in index["manifests"] if ref_name(d) in keep]
    (layout / "index.json").write_text(json.dumps(index))
    used = set()
    for descriptor in index["manifests"]:
        used.add(descriptor["digest"])
        used.update(plan.layout_blobs(read_manifest(layout, descriptor["digest"])))
    for blob in (layout / "blobs" / "sha256").glob("*"):
        if f"sha256:{blob.name}" not in used:
            blob.unlink()


def image_tar(layout: Path, ref: str, out: IO[bytes], present: Sequence[str] = ()) -> None:
    """One image of the layout as an OCI archive stream (what `ctr images import` reads).

    Written as a stream so a multi-GB image needs no second copy on disk; blobs in `present`
    (already in the target content store) are left out.
    """
    descriptor = manifest_descriptor(layout, ref)
    if descriptor is None:
        raise ImageBuildError(f"{ref} is not in {layout}: run `make images`")
    descriptor["annotations"] = {
        "io.containerd.image.name": ref,
        "org.opencontainers.image.ref.name": ref,
    }
    manifest = read_manifest(layout, descriptor["digest"])
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:

        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add_bytes("index.json", json.dumps({"schemaVersion": 2, "manifests": [descriptor]}).encode())
        for digest in plan.blobs_to_send([descriptor["digest"], *plan.layout_blobs(manifest)], present):
            path = layout / plan.blob_path(digest)
            info = tar.gettarinfo(str(path), str(plan.blob_path(digest)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as blob:
                tar.addfile(info, blob)


# ---- building


def context_digests(spec: plan.ImageSpec, repo: Path = REPO) -> dict[str, str]:
    """Repository-relative path -> sha256 of every file in the image's build context."""
    ignore = (repo / spec.dockerignore).read_text()
    roots = plan.context_roots(plan.parse_dockerignore(ignore))
    candidates: list[str] = []
    for root in [repo / name for name in roots] if roots is not None else [repo]:
        if root.is_file():
            candidates.append(root.relative_to(repo).as_posix())
        for directory, subdirs, filenames in os.walk(root):
            subdirs[:] = [d for d in subdirs if d != ".git"]
            candidates += [(Path(directory) / f).relative_to(repo).as_posix() for f in filenames]
    files = plan.select_context(candidates, ignore)
    return {f: hashlib.sha256((repo / f).read_bytes()).hexdigest() for f in files}


def stage_context(files: Sequence[str], dest: Path, repo: Path = REPO) -> None:
    """Copy exactly the hashed files into a fresh context directory with fixed mtimes."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / name, target)
    for path in [dest, *dest.rglob("*")]:
        os.utime(path, (CONTEXT_MTIME, CONTEXT_MTIME))


def storage_refs(paths: plan.BuildPaths) -> set[str]:
    out = run(plan.buildah(paths, "images", "--format", "{{.Name}}:{{.Tag}}"), quiet=True)
    return {line.strip() for line in out.splitlines() if line.strip()}


def go_version() -> str:
    version = Path("/usr/local/go/VERSION")
    return version.read_text().split()[0] if version.exists() else "none"


def ensure_base(
    paths: plan.BuildPaths,
    base: plan.BaseImage,
    bases: dict[str, plan.BaseImage],
    present: set[str],
    repo: Path = REPO,
) -> None:
    if all(tag in present for tag in base.tags):
        return
    start = time.monotonic()
    log(f"base {base.spec.name} -> {base.ref}")
    if base.spec is plan.PYTHON_BASE:
        with tempfile.TemporaryDirectory(dir=paths.cache) as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            run(plan.python_base_command(rootfs))
            container = run(plan.buildah(paths, "from", "scratch"), quiet=True).strip()
            run(plan.buildah(paths, "add", container, str(rootfs), "/"), quiet=True)
            run(
                plan.buildah(
                    paths,
                    "config",
                    "--env",
                    f"PATH={plan.DEBIAN_PATH}",
                    "--env",
                    "LANG=C.UTF-8",
                    "--cmd",
                    "python3",
                    container,
                ),
                quiet=True,
            )
            run(plan.buildah(paths, "commit", "--rm", container, base.ref), quiet=True)
    elif base.spec is plan.TORCH_BASE:
        context = paths.context("torch-base")
        stage_context([plan.VLLM_CONSTRAINTS], context, repo)
        shutil.move(context / plan.VLLM_CONSTRAINTS, context / "constraints.txt")
        containerfile = context / "Containerfile"
        containerfile.write_text(plan.torch_containerfile(bases["python"].ref))
        run(
            plan.bud_command(
                paths, dockerfile=containerfile, context=context, tag=base.ref, args={"PIP_NO_CACHE_DIR": ""}
            )
        )
        run(plan.buildah(paths, "tag", base.ref, *base.tags), quiet=True)
    else:
        container = run(plan.buildah(paths, "from", bases["python"].ref), quiet=True).strip()
        run(plan.buildah(paths, "copy", container, "/usr/local/go", "/usr/local/go"), quiet=True)
        envs = [a for k, v in plan.go_env(go_version()).items() for a in ("--env", f"{k}={v}")]
        run(plan.buildah(paths, "config", *envs, container), quiet=True)
        run(plan.buildah(paths, "commit", "--rm", container, base.ref), quiet=True)
    present.update(base.tags)
    log(f"base {base.spec.name} built in {time.monotonic() - start:.0f} s")


def build(
    names: Sequence[str] = (),
    *,
    paths: plan.BuildPaths | None = None,
    local_bases: bool = True,
    push: str | None = None,
    tag: str | None = None,
    repo: Path = REPO,
) -> dict[str, Entry]:
    """Build (or find cached) every image in `names` (all when empty); returns the index entries."""
    paths = paths or default_paths()
    specs = [s for s in plan.IMAGES if not names or s.name in names]
    unknown = set(names) - {s.name for s in plan.IMAGES}
    if unknown:
        raise ImageBuildError(f"unknown image(s) {sorted(unknown)}; known: {[s.name for s in plan.IMAGES]}")
    with locked(paths):
        entries = load_index(paths)
        bases = plan.base_images(
            constraints=(repo / plan.VLLM_CONSTRAINTS).read_bytes(), go_version=go_version()
        )
        present: set[str] | None = None
        for spec in specs:
            dockerfile = (repo / spec.dockerfile).read_text()
            needed = plan.bases_for(dockerfile) if local_bases else []
            files = context_digests(spec, repo)
            args = plan.build_args(spec, dockerfile, bases, local=local_bases)
            digest = plan.image_hash(
                dockerfile=dockerfile,
                files=files,
                args=args,
                base_hashes=[bases[b.name].hash for b in needed],
            )
            ref = f"{spec.repository}:{digest}"
            old = entries.get(spec.name)
            exported = manifest_descriptor(paths.layout, ref) is not None
            if exported and push is not None:
                present = present if present is not None else storage_refs(paths)
                exported = ref in present
            if exported:
                if old is None or old.ref != ref:
                    entries[spec.name] = layout_entry(paths, spec.name, ref, digest, old)
                    save_index(paths, entries)
                continue
            present = present if present is not None else storage_refs(paths)
            # buildah refuses a --volume whose host path is missing (a fresh machine has no caches yet).
            for cache in (paths.pip_cache, paths.go_mod_cache, paths.go_build_cache):
                if cache is not None:
                    cache.mkdir(parents=True, exist_ok=True)
            for base in needed:
                ensure_base(paths, bases[base.name], bases, present, repo)
            # The image alone: a base's time is logged on its own.
            start = time.monotonic()
            log(f"{spec.name} -> {ref}")
            context = paths.context(spec.name)
            stage_context(list(files), context, repo)
            run(
                plan.bud_command(
                    paths,
                    dockerfile=repo / spec.dockerfile,
                    context=context,
                    tag=ref,
                    args=args,
                    go=plan.GO_BASE in needed,
                )
            )
            built = time.monotonic()
            run(plan.export_command(paths, ref), quiet=True)
            log(f"{spec.name}: buildah bud {built - start:.0f} s, export {time.monotonic() - built:.0f} s")
            entry = layout_entry(paths, spec.name, ref, digest, old, time.monotonic() - start)
            entries[spec.name] = entry
            present.add(ref)
            if old is not None and old.previous not in (None, ref, old.ref):
                # Best effort: its layers are freed once nothing else uses them.
                subprocess.run(
                    plan.buildah(paths, "rmi", str(old.previous)), capture_output=True, check=False
                )
            drop_refs(paths.layout, {r for e in entries.values() for r in (e.ref, e.previous) if r})
            save_index(paths, entries)
            log(f"{spec.name} built in {entry.seconds:.0f} s ({entry.size / 1e6:.0f} MB)")
        if push is not None:
            version = tag or chart_app_version()
            authfile = os.environ.get("REGISTRY_AUTH_FILE")
            for spec in specs:
                destination = plan.registry_ref(push, spec.name, version)
                log(f"push {entries[spec.name].ref} -> {destination}")
                run(plan.push_command(paths, entries[spec.name].ref, destination, authfile))
        return {s.name: entries[s.name] for s in specs}


def layout_entry(
    paths: plan.BuildPaths, name: str, ref: str, digest: str, old: Entry | None, seconds: float = 0.0
) -> Entry:
    """The index entry of `ref`, exported in the layout; `old` (the entry it replaces) becomes previous."""
    descriptor = manifest_descriptor(paths.layout, ref)
    assert descriptor is not None, f"{ref} missing from {paths.layout}"
    manifest = read_manifest(paths.layout, descriptor["digest"])
    size = sum(int(layer["size"]) for layer in manifest["layers"])
    previous = old.ref if old is not None and old.ref != ref else (old.previous if old is not None else None)
    return Entry(name, ref, digest, descriptor["digest"], size, seconds, previous)


def chart_app_version() -> str:
    for line in (REPO / "charts" / "kubetune" / "Chart.yaml").read_text().splitlines():
        if line.startswith("appVersion:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise ImageBuildError("charts/kubetune/Chart.yaml has no appVersion")


# ---- importing into containerd


def import_images(
    address: str,
    namespace: str = "k8s.io",
    names: Sequence[str] = (),
    *,
    paths: plan.BuildPaths | None = None,
    ctr: str = "ctr",
) -> dict[str, str]:
    """Import the built images (all when `names` is empty) into a containerd; returns name -> ref.

    Refs already in that namespace are skipped: a content-hash tag names one content only.
    """
    paths = paths or default_paths()
    with locked(paths, shared=True):
        return _import_locked(address, namespace, names, paths, ctr)


def _import_locked(
    address: str, namespace: str, names: Sequence[str], paths: plan.BuildPaths, ctr: str
) -> dict[str, str]:
    entries = load_index(paths)
    missing = [n for n in names if n not in entries]
    if missing or not entries:
        raise ImageBuildError(f"no built image {missing or ''} in {paths.index}: run `make images`")
    chosen = {n: entries[n] for n in (names or sorted(entries))}
    listed = subprocess.run(
        [ctr, "--address", address, "--namespace", namespace, "images", "ls", "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    present = set(listed.stdout.split())
    for name, entry in chosen.items():
        if entry.ref in present:
            continue
        start = time.monotonic()
        blobs = subprocess.run(
            [ctr, "--address", address, "--namespace", namespace, "content", "ls", "-q"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        # A blob garbage-collected between the listing and the import fails it: send everything then.
        if not _import_one(address, namespace, ctr, paths.layout, entry.ref, blobs):
            log(f"import of {name} with known blobs left out failed; sending all of them")
            if not _import_one(address, namespace, ctr, paths.layout, entry.ref, ()):
                raise ImageBuildError(f"ctr import of {entry.ref} failed")
        log(f"imported {name} ({entry.ref}) in {time.monotonic() - start:.0f} s")
    return {name: entry.ref for name, entry in chosen.items()}


def _import_one(
    address: str, namespace: str, ctr: str, layout: Path, ref: str, present: Sequence[str]
) -> bool:
    with subprocess.Popen(plan.import_command(address, namespace, ctr), stdin=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        try:
            image_tar(layout, ref, proc.stdin, present)
        except BrokenPipeError:
            pass  # ctr exited early; its status says why
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
    return proc.returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubetune.devcluster.images", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the images (cached by content hash)")
    p_build.add_argument("names", nargs="*", help=f"default: all of {[s.name for s in plan.IMAGES]}")
    p_build.add_argument("--push", metavar="REGISTRY", help="then push to REGISTRY/kubetune/<name>:<tag>")
    p_build.add_argument("--tag", help="tag pushed (default: the chart's appVersion)")
    p_build.add_argument(
        "--upstream-bases",
        action="store_true",
        help="use the Dockerfiles' default (CUDA) bases, pulled by buildah",
    )
    p_import = sub.add_parser("import", help="import the built images into a containerd")
    p_import.add_argument("names", nargs="*")
    p_import.add_argument("--address", required=True, help="containerd socket")
    p_import.add_argument("--namespace", default="k8s.io")
    sub.add_parser("list", help="print the index: name, ref, size")
    sub.add_parser("chart-values", help="print the helm --set assignments that select the built images")
    p_archive = sub.add_parser("archive", help="write one image as an OCI archive (for `ctr images import`)")
    p_archive.add_argument("name")
    p_archive.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            entries = build(args.names, local_bases=not args.upstream_bases, push=args.push, tag=args.tag)
            for name, entry in entries.items():
                print(f"{name}\t{entry.ref}")
        elif args.command == "import":
            for name, ref in import_images(args.address, args.namespace, args.names).items():
                print(f"{name}\t{ref}")
        elif args.command == "chart-values":
            entries = load_index(default_paths())
            print("\n".join(plan.chart_values({n: e.ref for n, e in entries.items()})))
        elif args.command == "list":
            for name, entry in load_index(default_paths()).items():
                print(f"{name}\t{entry.ref}\t{entry.size / 1e6:.0f} MB")
        else:
            paths = default_paths()
            with locked(paths, shared=True), open(args.out, "wb") as out:
                image_tar(paths.layout, load_index(paths)[args.name].ref, out)
    except ImageBuildError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
