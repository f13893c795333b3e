"""Chart.yaml metadata: Artifact Hub annotations agree with values.yaml, crds/ and docs/; kubeVersion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.chart.helm import CHART, REPO, helm, template_args
from tests.support.cluster import Kube

CHART_YAML: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
ANNOTATIONS: dict[str, str] = CHART_YAML["annotations"]
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
REPOSITORY = "https://github.com/kubetune/kubetune"


def annotation(name: str) -> list[dict[str, Any]]:
    parsed: list[dict[str, Any]] = yaml.safe_load(ANNOTATIONS[f"artifacthub.io/{name}"])
    return parsed


def default_image(image: dict[str, str]) -> str:
    return f"{image['repository']}:{image['tag'] or CHART_YAML['appVersion']}"


def test_images_are_the_default_values() -> None:
    """What Artifact Hub lists (and scans) is what `helm install` with no values runs."""
    expected = {
        "operator": default_image(VALUES["operator"]["image"]),
        "router": default_image(VALUES["router"]["image"]),
        "trainer": default_image(VALUES["images"]["trainer"]),
        "vllm": default_image(VALUES["images"]["vllm"]),
    }
    assert {i["name"]: i["image"] for i in annotation("images")} == expected


def test_crds_are_the_charts_crds() -> None:
    shipped = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        served = [v["name"] for v in crd["spec"]["versions"] if v["served"]]
        shipped[crd["metadata"]["name"]] = (crd["spec"]["names"]["kind"], served)
    listed = {c["name"]: (c["kind"], [c["version"]]) for c in annotation("crds")}
    assert listed == shipped
    assert all(c["displayName"] and c["description"] for c in annotation("crds"))


def test_links_sources_and_license() -> None:
    assert ANNOTATIONS["artifacthub.io/license"] == "Apache-2.0"
    assert CHART_YAML["home"] == REPOSITORY
    assert REPOSITORY in CHART_YAML["sources"]
    prefix = f"{REPOSITORY}/blob/main/"
    for link in annotation("links"):
        url = link["url"]
        assert url.startswith(f"{REPOSITORY}/"), url
        # Links into the repository point at files (or folders) that exist.
        relative = url.removeprefix(prefix).removeprefix(f"{REPOSITORY}/tree/main/")
        assert (REPO / relative).exists(), url


@pytest.mark.parametrize(("version", "accepted"), [("1.29.0", False), ("1.30.0", True), ("1.34.0", True)])
def test_kube_version_constraint(version: str, accepted: bool) -> None:
    args = template_args()
    args[args.index("--kube-version") + 1] = version
    proc = helm(*args)
    assert (proc.returncode == 0) == accepted, proc.stderr
    if not accepted:
        assert "kubeVersion" in proc.stderr


@pytest.mark.cluster
def test_crd_examples_pass_the_real_apiserver(kube: Kube, namespace: str, tmp_path: Path) -> None:
    """The examples Artifact Hub shows are valid objects (server-side dry run against our CRDs)."""
    examples = annotation("crdsExamples")
    assert {e["kind"] for e in examples} == {c["kind"] for c in annotation("crds")}
    path = tmp_path / "examples.yaml"
    path.write_text(yaml.safe_dump_all(examples))
    kube.kubectl("create", "--dry-run=server", "-n", namespace, "-f", str(path))
