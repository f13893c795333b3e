"""The FineTuneSchedule schema: the cron pattern agrees with the parser, and templates stay editable."""

from __future__ import annotations

import json
import re

import pytest

from kubetune.api.finetuneschedule import SCHEDULE_PATTERN
from kubetune.crdgen import all_crds
from kubetune.planning.cron import CronError, parse_cron

# (expression, accepted by the schema, accepted by the operator)
EXPRESSIONS = [
    ("0 3 * * 1", True, True),
    ("*/15 * * * *", True, True),
    ("0 0 1,15 * *", True, True),
    ("0 22 * * MON-FRI", True, True),
    ("0 3 * JAN,JUL *", True, True),
    ("0 3 L * *", True, True),
    ("0 3 * * 5L", True, True),
    ("0 3 * * 1#2", True, True),
    ("@weekly", True, True),
    ("@hourly", True, True),
    # The schema catches ranges and shapes...
    ("60 * * * *", False, False),
    ("0 24 * * *", False, False),
    ("0 0 32 * *", False, False),
    ("0 0 * 13 *", False, False),
    ("0 0 * * 8", False, False),
    ("0 0 * *", False, False),
    ("CRON_TZ=UTC 0 0 * * *", False, False),
    ("0 0 ? * *", False, False),
    # ...the operator what a pattern cannot see (Accepted=False naming spec.schedule).
    ("0 0 30 2 *", True, False),
    ("0 0 * FOO *", True, False),
    ("0 0 * * XYZ", True, False),
]


@pytest.mark.parametrize(("expression", "schema", "operator"), EXPRESSIONS)
def test_schema_and_operator_agree_on_schedules(expression: str, schema: bool, operator: bool) -> None:
    assert bool(re.fullmatch(SCHEDULE_PATTERN, expression)) == schema
    if operator:
        parse_cron(expression, "UTC")
    else:
        with pytest.raises(CronError, match=r"^spec\.schedule: ") as caught:
            parse_cron(expression, "UTC")
        assert caught.value.field == "spec.schedule"


def test_the_job_template_has_the_finetunejob_rules_but_not_its_immutability() -> None:
    crds = all_crds()
    job = json.dumps(crds["kubetune.io_finetunejobs.yaml"])
    schedule = crds["kubetune.io_finetuneschedules.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    template = json.dumps(schedule["properties"]["spec"]["properties"]["jobTemplate"])
    assert "oldSelf" in job
    assert "oldSelf" not in template
    assert "lora must not be set when method is full" in template


def test_kubectl_get_fts_shows_the_schedule_and_its_last_runs() -> None:
    names = all_crds()["kubetune.io_finetuneschedules.yaml"]["spec"]["names"]
    version = all_crds()["kubetune.io_finetuneschedules.yaml"]["spec"]["versions"][0]
    assert (names["kind"], names["shortNames"], names["categories"]) == (
        "FineTuneSchedule",
        ["fts"],
        ["kubetune"],
    )
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Schedule",
        "Suspend",
        "Phase",
        "Last-Schedule",
        "Last-Success",
        "Latest-Good",
        "Reason",
        "Message",
        "Age",
    ]
    assert version["subresources"] == {"status": {}}
