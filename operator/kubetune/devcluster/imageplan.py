"""What `make images` builds, from which inputs, under which content-hash tags: pure functions.

No I/O here: the caller (kubetune.devcluster.images) reads files, lists storage and runs buildah,
mmdebstrap and ctr with the argument lists built below. One table (IMAGES) names each image's
Dockerfile, build context and build arguments; the bases a Dockerfile needs are found from the
ARGs it declares (PYTHON_IMAGE, TORCH_IMAGE, GO_IMAGE), so a Dockerfile that switches base (the
router moving to Go) needs no change here beyond its context.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# Bump when the build or export mechanism changes in a way the hashed inputs do not show; the
# bases have their own (a bump there rebuilds everything, torch included).
BUILDER_VERSION = "2"
BASE_RECIPE_VERSION = "1"
HASH_LENGTH = 12
LOCAL_REPOSITORY = "localhost/kubetune"
BASE_REPOSITORY = "localhost/kubetune-base"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TORCH_VERSION = "2.13.0"
VLLM_CONSTRAINTS = "images/vllm-cpu/constraints.txt"


@dataclass(frozen=True)
class ImageSpec:
    """One image of `make images`. Its build context is what `<dockerfile>.dockerignore` lets
    through (the file BuildKit reads too), so the hash and the context cannot disagree."""

    name: str
    dockerfile: str
    # Local (CPU) overrides, passed only when the Dockerfile declares the ARG.
    build_args: Mapping[str, str] = field(default_factory=dict)

    @property
    def repository(self) -> str:
        return f"{LOCAL_REPOSITORY}/{self.name}"

    @property
    def dockerignore(self) -> str:
        return f"{self.dockerfile}.dockerignore"


IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("operator", "images/operator/Dockerfile"),
    ImageSpec("router", "images/router/Dockerfile"),
    # No nvcc on a CPU base: DeepSpeed builds its ops on first use instead of ahead of time.
    ImageSpec(
        "trainer",
        "images/trainer/Dockerfile",
        {"DS_BUILD_FUSED_ADAM": "0", "DS_BUILD_CPU_ADAM": "0", "DS_BUILD_UTILS": "0"},
    ),
    ImageSpec("vllm-cpu", "images/vllm-cpu/Dockerfile"),
)

# Debian packages of the Python base: a stand-in for python:3.11-slim-bookworm.
# libnuma1: vLLM's CPU kernels (vllm._C) link it; without it the engine dies at start-up.
PYTHON_PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "python-is-python3",
    "ca-certificates",
    "passwd",
    "libnuma1",
)
# mmdebstrap hooks run on the host with the rootfs as $1. pip may install system-wide as in the
# python:3.11 images (no EXTERNALLY-MANAGED marker) and trusts the system bundle, which a build
# replaces by the host's (mounted, never copied).
PYTHON_HOOKS = (
    'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
    f'printf "[global]\\ncert = {CA_BUNDLE}\\n" > "$1/etc/pip.conf"',
)
PYTHON_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")


@dataclass(frozen=True)
class BaseSpec:
    """A locally made base image: the value of a Dockerfile build-arg such as PYTHON_IMAGE."""

    name: str
    arg: str
    parent: str | None
    # Suffixes tagged on the same image: the trainer's Dockerfile uses ${TORCH_IMAGE}-devel and -runtime.
    suffixes: tuple[str, ...] = ("",)


PYTHON_BASE = BaseSpec("python", "PYTHON_IMAGE", None)
TORCH_BASE = BaseSpec("torch", "TORCH_IMAGE", "python", ("-devel", "-runtime"))
GO_BASE = BaseSpec("golang", "GO_IMAGE", "python")
BASES: dict[str, BaseSpec] = {b.name: b for b in (PYTHON_BASE, TORCH_BASE, GO_BASE)}
BASE_BY_ARG: dict[str, BaseSpec] = {b.arg: b for b in BASES.values()}


def torch_containerfile(python_ref: str) -> str:
    """The torch base: PyPI's torch (a CUDA build that runs on CPU) in the system site-packages."""
    return (
        f"FROM {python_ref}\n"
        "ARG PIP_NO_CACHE_DIR=1\n"
        "COPY constraints.txt /tmp/torch-constraints.txt\n"
        f'RUN python -m pip install -c /tmp/torch-constraints.txt "torch=={TORCH_VERSION}"\n'
    )


def python_base_command(out: Path, suite: str = "bookworm") -> list[str]:
    """mmdebstrap of a minimal Debian with Python 3.11, as a tarball."""
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--include=" + ",".join(PYTHON_PACKAGES),
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in PYTHON_EXCLUDES),
        *(f"--customize-hook={hook}" for hook in PYTHON_HOOKS),
        suite,
        str(out),
    ]


DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def go_env(go_version: str) -> dict[str, str]:
    """Environment of the golang stand-in, as in the golang:<version>-bookworm images."""
    return {
        "GOLANG_VERSION": go_version.removeprefix("go"),
        "GOPATH": "/go",
        "GOTOOLCHAIN": "local",
        "PATH": f"/go/bin:/usr/local/go/bin:{DEBIAN_PATH}",
    }


def base_recipe(base: BaseSpec, *, constraints: bytes, go_version: str) -> str:
    """Everything that decides a base's content, as text: its hash names the base's tag."""
    if base is PYTHON_BASE:
        recipe = " ".join(python_base_command(Path("-")))
    elif base is TORCH_BASE:
        recipe = torch_containerfile("{parent}") + hashlib.sha256(constraints).hexdigest()
    else:
        recipe = json.dumps(go_env(go_version), sort_keys=True)
    return f"{BASE_RECIPE_VERSION}\n{base.name}\n{recipe}"


@dataclass(frozen=True)
class BaseImage:
    spec: BaseSpec
    hash: str

    @property
    def ref(self) -> str:
        """What the build-arg is set to (the Dockerfile may append a suffix)."""
        return f"{BASE_REPOSITORY}/{self.spec.name}:{self.hash}"

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.ref + suffix for suffix in self.spec.suffixes)


def base_images(*, constraints: bytes, go_version: str) -> dict[str, BaseImage]:
    """Every base with its content hash; a child's hash includes its parent's."""
    out: dict[str, BaseImage] = {}
    for base in BASES.values():  # parents come first in BASES
        parent = out[base.parent].hash if base.parent else ""
        recipe = base_recipe(base, constraints=constraints, go_version=go_version)
        out[base.name] = BaseImage(base, digest_text(parent + "\n" + recipe))
    return out


def digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def declared_args(dockerfile: str) -> dict[str, str | None]:
    """ARG name -> default (None: no default), across all stages, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile)
    args: dict[str, str | None] = {}
    for line in text.splitlines():
        words = line.strip().split()
        if not words or words[0].upper() != "ARG":
            continue
        for word in words[1:]:
            name, eq, default = word.partition("=")
            args[name] = default.strip('"') if eq else None
    return args


def bases_for(dockerfile: str) -> list[BaseSpec]:
    """The locally made bases a Dockerfile needs, parents included, parents first."""
    names: set[str] = set()
    for arg in declared_args(dockerfile):
        base: BaseSpec | None = BASE_BY_ARG.get(arg)
        while base is not None:
            names.add(base.name)
            base = BASES[base.parent] if base.parent else None
    return [b for b in BASES.values() if b.name in names]


def build_args(
    spec: ImageSpec, dockerfile: str, bases: Mapping[str, BaseImage], *, local: bool
) -> dict[str, str]:
    """Build arguments for one image: local bases and CPU overrides (`local`), else the defaults.

    Only ARGs the Dockerfile declares are passed, so the content hash does not change with
    arguments the build would ignore.
    """
    declared = declared_args(dockerfile)
    if not local:
        return {}
    args: dict[str, str] = {}
    for name in declared:
        base = BASE_BY_ARG.get(name)
        if base is not None:
            args[name] = bases[base.name].ref
    if "PIP_NO_CACHE_DIR" in declared:
        # pip treats any non-empty value (even "0") as "no cache"; empty means the default cache.
        args["PIP_NO_CACHE_DIR"] = ""
    args |= {k: v for k, v in spec.build_args.items() if k in declared}
    return dict(sorted(args.items()))


@dataclass(frozen=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    include: bool  # a "!pattern" line


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore glob: `*` and `?` stay within a path component, `**` spans any number."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append(IgnoreRule(_glob_regex(str(PurePosixPath(pattern))), include))
    return rules


def in_context(path: str, rules: Sequence[IgnoreRule]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    selected = True
    for rule in rules:
        if any(rule.pattern.fullmatch(prefix) for prefix in prefixes):
            selected = rule.include
    return selected


def context_roots(rules: Sequence[IgnoreRule]) -> list[str] | None:
    """Top-level names worth walking when the file starts with `*` (everything else is excluded);
    None: walk the whole repository."""
    if not rules or rules[0].include or rules[0].pattern.pattern != "[^/]*":
        return None
    return sorted({rule.pattern.pattern.split("/")[0].replace("\\", "") for rule in rules if rule.include})


def select_context(paths: Iterable[str], dockerignore: str) -> list[str]:
    """Repository-relative file paths (POSIX) in the build context, sorted."""
    rules = parse_dockerignore(dockerignore)
    return sorted(p for p in paths if in_context(p, rules))


def image_hash(
    *,
    dockerfile: str,
    files: Mapping[str, str],
    args: Mapping[str, str],
    base_hashes: Iterable[str],
) -> str:
    """The content hash (and tag) of an image: Dockerfile, context files (path -> sha256), args, bases."""
    payload = json.dumps(
        {
            "builder": BUILDER_VERSION,
            "dockerfile": dockerfile,
            "files": dict(sorted(files.items())),
            "args": dict(sorted(args.items())),
            "bases": sorted(base_hashes),
        },
        sort_keys=True,
    )
    return digest_text(payload)


@dataclass(frozen=True)
class BuildPaths:
    """Where a build reads and writes on the host (all outside the repository)."""

    cache: Path  # ~/.cache/kubetune/images
    pip_cache: Path
    ca_bundle: Path = Path(CA_BUNDLE)
    go_mod_cache: Path | None = None
    go_build_cache: Path | None = None

    @property
    def storage(self) -> Path:
        return self.cache / "storage"

    @property
    def runroot(self) -> Path:
        return self.cache / "run"

    @property
    def layout(self) -> Path:
        """One OCI layout for every image: layers shared by images (torch) are stored once."""
        return self.cache / "oci"

    @property
    def index(self) -> Path:
        return self.cache / "index.json"

    def context(self, name: str) -> Path:
        return self.cache / "context" / name


def buildah(paths: BuildPaths, *args: str) -> list[str]:
    """buildah on its own overlay storage (vfs would copy every multi-GB layer whole)."""
    return [
        "buildah",
        "--root",
        str(paths.storage),
        "--runroot",
        str(paths.runroot),
        "--storage-driver",
        "overlay",
        *args,
    ]


def volumes(paths: BuildPaths, *, go: bool) -> list[str]:
    """Host paths mounted into every RUN step: the CA bundle (read-only) and the download caches."""
    mounts = [f"{paths.ca_bundle}:{CA_BUNDLE}:ro", f"{paths.pip_cache}:/root/.cache/pip"]
    if go and paths.go_mod_cache is not None:
        mounts.append(f"{paths.go_mod_cache}:/go/pkg/mod")
    if go and paths.go_build_cache is not None:
        mounts.append(f"{paths.go_build_cache}:/root/.cache/go-build")
    return [arg for mount in mounts for arg in ("--volume", mount)]


def bud_command(
    paths: BuildPaths, *, dockerfile: Path, context: Path, tag: str, args: Mapping[str, str], go: bool = False
) -> list[str]:
    return buildah(
        paths,
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "--format",
        "oci",
        "-f",
        str(dockerfile),
        "-t",
        tag,
        *(f"--build-arg={k}={v}" for k, v in sorted(args.items())),
        *volumes(paths, go=go),
        str(context),
    )


def export_command(paths: BuildPaths, ref: str) -> list[str]:
    """Into the shared OCI layout, uncompressed: containerd imports it without inflating anything.

    skopeo rather than `buildah push`: buildah 1.28 regenerates and recompresses every layer
    (111 s for the trainer after a one-line change), skopeo streams them as stored (48 s).
    """
    source = f"containers-storage:[overlay@{paths.storage}+{paths.runroot}]{ref}"
    return [
        "skopeo",
        "copy",
        "--quiet",
        "--dest-oci-accept-uncompressed-layers",
        source,
        f"oci:{paths.layout}:{ref}",
    ]


def registry_ref(registry: str, name: str, tag: str) -> str:
    """`<registry>/kubetune/<name>:<tag>`: what the chart resolves with global.imageRegistry=<registry>."""
    return f"{registry.rstrip('/')}/kubetune/{name}:{tag}"


def push_command(paths: BuildPaths, ref: str, destination: str, authfile: str | None = None) -> list[str]:
    """`buildah push` to a registry; REGISTRY_AUTH_FILE (docker/podman auth JSON) if given."""
    auth = ["--authfile", authfile] if authfile else []
    return buildah(paths, "push", *auth, ref, f"docker://{destination}")


def blobs_to_send(blobs: Sequence[str], present: Iterable[str]) -> list[str]:
    """The image's blobs containerd does not hold yet, in order: after a rebuild only the new
    layers travel (containerd takes the others from its content store)."""
    have = set(present)
    return [b for b in blobs if b not in have]


def import_command(address: str, namespace: str, ctr: str = "ctr") -> list[str]:
    """ctr reading one image's OCI tar stream on stdin (kubetune.devcluster.images.image_tar)."""
    return [ctr, "--address", address, "--namespace", namespace, "images", "import", "-"]


def layout_blobs(manifest: Mapping[str, object]) -> list[str]:
    """Digests an image manifest refers to: its config and its layers."""
    config = manifest["config"]
    layers = manifest["layers"]
    assert isinstance(config, dict)
    assert isinstance(layers, list)
    return [str(config["digest"]), *(str(layer["digest"]) for layer in layers)]


def blob_path(digest: str) -> PurePosixPath:
    algorithm, _, hex_digest = digest.partition(":")
    return PurePosixPath("blobs", algorithm, hex_digest)


# Where each image goes in the chart's values (vllm-cpu stands in for the upstream vLLM image).
CHART_IMAGE_KEYS = {
    "operator": "operator.image",
    "router": "router.image",
    "trainer": "images.trainer",
    "vllm-cpu": "images.vllm",
}


def chart_values(refs: Mapping[str, str]) -> list[str]:
    """`helm install --set` assignments that make the chart use the locally built images
    (imported into the node's containerd, so nothing is pulled: the content-hash tags are never
    `latest`, and IfNotPresent finds them)."""
    values = []
    for name, ref in sorted(refs.items()):
        key = CHART_IMAGE_KEYS.get(name)
        if key is None:
            continue
        repository, _, tag = ref.rpartition(":")
        values += [f"{key}.repository={repository}", f"{key}.tag={tag}", f"{key}.digest="]
    if "operator" in refs:
        values.append("operator.image.pullPolicy=IfNotPresent")
    return values
