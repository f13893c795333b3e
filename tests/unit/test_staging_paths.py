"""S3 staging writes only inside its destination, whatever keys the bucket holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubetune.api.uris import parse_uri
from kubetune.staging import UnsafeKey, download_s3_prefix, target_inside


class FakeS3:
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.downloaded: list[str] = []

    def get_paginator(self, _: str) -> FakeS3:
        return self

    def paginate(self, **_: Any) -> list[dict[str, Any]]:
        return [{"Contents": [{"Key": key} for key in self.keys]}]

    def download_file(self, bucket: str, key: str, path: str) -> None:
        self.downloaded.append(key)
        Path(path).write_text(key)


@pytest.mark.parametrize("relative", ["../escape", "a/../../escape", "/etc/passwd", "", "a/../..", "."])
def test_keys_outside_the_destination_are_refused(tmp_path: Path, relative: str) -> None:
    with pytest.raises(UnsafeKey):
        target_inside(tmp_path / "dest", relative)


def test_nested_keys_stay_inside(tmp_path: Path) -> None:
    assert target_inside(tmp_path, "a/b/../c.bin") == (tmp_path / "a" / "c.bin").resolve()


def test_a_prefix_with_one_bad_key_downloads_nothing(tmp_path: Path) -> None:
    s3 = FakeS3(["models/m/config.json", "models/m/../../outside"])
    with pytest.raises(UnsafeKey, match="outside the destination"):
        download_s3_prefix(s3, parse_uri("s3://bucket/models/m"), tmp_path / "dest")
    assert s3.downloaded == []
    assert not (tmp_path / "outside").exists()


def test_a_clean_prefix_downloads_every_object(tmp_path: Path) -> None:
    s3 = FakeS3(["models/m/config.json", "models/m/sub/", "models/m/sub/w.bin"])
    assert download_s3_prefix(s3, parse_uri("s3://bucket/models/m"), tmp_path) == 2
    assert (tmp_path / "sub" / "w.bin").read_text() == "models/m/sub/w.bin"
