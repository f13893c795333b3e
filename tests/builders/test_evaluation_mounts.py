"""The frozen evaluation set and the champion reach the trainer as read-only claim mounts."""

from __future__ import annotations

from typing import Any

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.builders.storage import storage_layout

BASE: dict[str, Any] = {
    "baseModel": {"uri": "Qwen/Qwen2.5-0.5B"},
    "dataset": {"uri": "pvc://data/train.jsonl"},
    "output": {"uri": "pvc://models/run/"},
}
FROZEN = {"frozenSet": {"uri": "pvc://eval/frozen.jsonl"}}
CHAMPION = {"champion": {"name": "w-1", "adapterUri": "pvc://models/w-1/adapter"}}


def test_frozen_set_and_champion_are_mounted_read_only() -> None:
    spec = FineTuneJobSpec.model_validate({**BASE, "evaluation": {**FROZEN, **CHAMPION}})
    layout = storage_layout(spec)
    assert layout.paths.frozen_set == "/mnt/kubetune/frozen-set/frozen.jsonl"
    assert layout.paths.champion == "/mnt/kubetune/champion"
    volumes = {v["name"]: v["persistentVolumeClaim"] for v in layout.volumes if "persistentVolumeClaim" in v}
    mounts = {m["mountPath"]: m for m in layout.input_mounts}
    frozen, champion = mounts["/mnt/kubetune/frozen-set"], mounts["/mnt/kubetune/champion"]
    assert (volumes[frozen["name"]]["claimName"], frozen.get("subPath", ""), frozen["readOnly"]) == (
        "eval",
        "",
        True,
    )
    # The champion shares the output's claim: one volume, written by the run, mounted read-only here.
    assert (volumes[champion["name"]]["claimName"], champion["subPath"]) == ("models", "w-1/adapter")
    assert champion["readOnly"] is True
    assert champion["name"] == layout.output_mounts[0]["name"]
    # Without them nothing changes (the paths stay out of the rendered config).
    plain = storage_layout(FineTuneJobSpec.model_validate(BASE))
    assert (plain.paths.frozen_set, plain.paths.champion) == (None, None)
    assert len(plain.input_mounts) == len(layout.input_mounts) - 2
