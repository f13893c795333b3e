"""Rendered children of 3 representative FineTuneJobs vs reviewed files in tests/golden/finetunejob/.

Regenerate with `KUBETUNE_UPDATE_GOLDEN=1 pytest tests/builders/test_finetunejob_golden.py`, then
review the diff.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.golden import UPDATE, assert_golden

from kubetune.builders.finetunejob import build_children
from kubetune.kube.client import KubeClient

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "finetunejob"
CASES = sorted(p.stem for p in (GOLDEN / "inputs").glob("*.yaml"))


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (config.json, scripts) as literal blocks, so the diff reads like the file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def render(case: str) -> str:
    ftj: dict[str, Any] = yaml.safe_load((GOLDEN / "inputs" / f"{case}.yaml").read_text())
    children = build_children(ftj, restart=0)
    header = f"# Rendered from inputs/{case}.yaml by build_children(restart=0). Regenerate: {UPDATE}=1\n"
    return header + yaml.dump_all(children.all(), Dumper=_Dumper, sort_keys=False, width=120)


def test_the_three_representative_specs_are_present() -> None:
    assert CASES == ["lora-1x1", "qlora-kueue", "zero3-full-2x8"]


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    rendered = render(case)
    assert_golden(GOLDEN / f"{case}.yaml", rendered)
    # The files are real manifests: they load back into exactly what the builder produced.
    ftj = yaml.safe_load((GOLDEN / "inputs" / f"{case}.yaml").read_text())
    assert list(yaml.safe_load_all(rendered)) == build_children(ftj, restart=0).all()


def test_multinode_example_renders_a_two_by_eight_zero3_gang() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "finetunejob-multinode.yaml"
    ftj: dict[str, Any] = yaml.safe_load(example.read_text())
    ftj["metadata"] |= {"namespace": "default", "uid": "u"}
    ftj["apiVersion"], ftj["kind"] = "kubetune.io/v1alpha1", "FineTuneJob"
    children = build_children(ftj, restart=0)
    job = children.training_job["spec"]
    assert (job["completions"], job["parallelism"]) == (2, 2)
    assert "--nproc-per-node=8" in job["template"]["spec"]["containers"][0]["command"]
    assert '"stage": 3' in children.config_map["data"]["deepspeed.json"]


def _collection(manifest: dict[str, Any]) -> str:
    plural = {
        "ConfigMap": "configmaps",
        "Service": "services",
        "ServiceAccount": "serviceaccounts",
        "Role": "roles",
        "RoleBinding": "rolebindings",
        "Job": "jobs",
        "Pod": "pods",
        "NetworkPolicy": "networkpolicies",
    }[manifest["kind"]]
    base = "/api/v1" if manifest["apiVersion"] == "v1" else f"/apis/{manifest['apiVersion']}"
    return f"{base}/namespaces/{manifest['metadata']['namespace']}/{plural}"


@pytest.mark.cluster
@pytest.mark.parametrize("case", CASES)
async def test_golden_manifests_pass_the_real_apiserver(
    case: str, client: KubeClient, namespace: str
) -> None:
    """Strict field validation, and Pod Security "restricted" for the pods the Jobs would create."""
    await client.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}",
        content_type="application/merge-patch+json",
        body={"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    strict = {"dryRun": "All", "fieldValidation": "Strict"}
    for manifest in yaml.safe_load_all((GOLDEN / f"{case}.yaml").read_text()):
        manifest["metadata"]["namespace"] = namespace
        await client.request("POST", _collection(manifest), body=manifest, params=strict)
        if manifest["kind"] == "Job":
            pod_spec = dict(manifest["spec"]["template"]["spec"])
            pod_spec.pop("priorityClassName", None)  # no PriorityClass objects in the test cluster
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "spec": pod_spec,
                "metadata": {"name": f"{manifest['metadata']['name']}-0", "namespace": namespace},
            }
            await client.request("POST", _collection(pod), body=pod, params=strict)
