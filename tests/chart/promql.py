"""Check PromQL with the real Prometheus parser (`promtool`, Debian's `prometheus` package)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

# Grafana expands these before Prometheus sees a query; stand-ins with the same syntax class.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run `make system-packages` (apt-get install prometheus)"
    return path


def expand_grafana(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    # Template variables only appear inside label matchers, as regexes.
    return re.sub(r"\$\{?[A-Za-z_]+\}?", ".*", expr)


def check_rules(groups: list[dict[str, Any]], workdir: Path) -> subprocess.CompletedProcess[str]:
    path = workdir / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


def check_expressions(exprs: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Every expression as a recording rule: `promtool check rules` parses each one."""
    rules = [{"record": f"kubetune:check_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    return check_rules([{"name": "expressions", "rules": rules}], workdir)
