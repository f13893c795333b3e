"""The serving init container's staging command (the parts that need no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune.api.uris import with_revision
from kubetune.serving.stage import already_staged, main, stage


@pytest.mark.parametrize(
    ("marker", "staged"),
    [("config.json", True), ("adapter_config.json", True), ("README.md", False), (None, False)],
)
def test_already_staged(tmp_path: Path, marker: str | None, staged: bool) -> None:
    if marker:
        (tmp_path / marker).write_text("{}")
    assert already_staged(tmp_path) is staged


def test_a_staged_folder_is_not_downloaded_again(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert "already holds a model" in stage("hf://org/model", tmp_path)


def test_mounted_schemes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is mounted"):
        stage("pvc://claim/path", tmp_path / "x")


def test_cli_fails_with_status_1(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["pvc://claim/path", str(tmp_path / "x")]) == 1
    assert "staging pvc://claim/path failed" in caplog.text


def test_a_pinned_hugging_face_model_is_downloaded_at_its_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str | None]] = []

    def fake_download(repo: str, dest: Path, *, token: str | None, revision: str | None = None) -> Path:
        calls.append((repo, revision))
        return dest

    monkeypatch.setattr("kubetune.serving.stage.download_hf", fake_download)
    stage("hf://Qwen/Qwen2.5-0.5B@abc123", tmp_path / "pinned")
    stage("Qwen/Qwen2.5-0.5B", tmp_path / "unpinned")
    assert calls == [("Qwen/Qwen2.5-0.5B", "abc123"), ("Qwen/Qwen2.5-0.5B", None)]


@pytest.mark.parametrize(
    ("uri", "revision", "pinned"),
    [
        ("Qwen/Qwen2.5-0.5B", "abc", "hf://Qwen/Qwen2.5-0.5B@abc"),
        ("hf://Qwen/Qwen2.5-0.5B", "abc", "hf://Qwen/Qwen2.5-0.5B@abc"),
        ("hf://Qwen/Qwen2.5-0.5B@def", "abc", "hf://Qwen/Qwen2.5-0.5B@def"),
        ("pvc://models/qwen", "abc", "pvc://models/qwen"),
        ("Qwen/Qwen2.5-0.5B", None, "Qwen/Qwen2.5-0.5B"),
    ],
)
def test_with_revision(uri: str, revision: str | None, pinned: str) -> None:
    assert with_revision(uri, revision) == pinned
