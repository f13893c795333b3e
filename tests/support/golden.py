"""Golden files: what a builder renders, compared with a reviewed file that can be regenerated."""

from __future__ import annotations

import os
from pathlib import Path

UPDATE = "KUBETUNE_UPDATE_GOLDEN"


def assert_golden(path: Path, rendered: str) -> None:
    """`rendered` is `path`'s text; with KUBETUNE_UPDATE_GOLDEN=1 the file is first rewritten (review
    the diff)."""
    if os.environ.get(UPDATE) == "1":
        path.write_text(rendered)
    assert path.exists(), f"{path} missing: run with {UPDATE}=1"
    assert rendered == path.read_text()
