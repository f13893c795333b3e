"""Downloads from hf:// and s3:// into a local folder: shared by the trainer's and the serving pod's
staging commands (both run in the trainer image; huggingface_hub and boto3 are imported lazily).

The credentials come from the calling program's entry point (HF_TOKEN, AWS_ENDPOINT_URL and the
standard AWS_* variables that boto3 reads itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubetune.api.uris import StorageUri


def s3_client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client; ImportError when boto3 is not installed in this image."""
    import boto3  # type: ignore[import-not-found]

    return boto3.client("s3", endpoint_url=endpoint_url)


class UnsafeKey(ValueError):
    """An object key that would land outside the destination folder."""


def target_inside(dest: Path, relative: str) -> Path:
    """`dest / relative`, refusing keys that leave `dest` (`../`, absolute, empty): S3 keys are
    arbitrary strings, and whoever writes the bucket must not choose where the pod writes."""
    if not relative or relative.startswith("/") or "\x00" in relative:
        raise UnsafeKey(f"object key {relative!r} is not a relative path")
    root = dest.resolve()
    target = (root / relative).resolve()
    if target == root or not target.is_relative_to(root):
        raise UnsafeKey(f"object key {relative!r} resolves outside the destination")
    return target


def download_s3_prefix(client: Any, uri: StorageUri, dest: Path) -> int:
    """Every object under `uri` (a prefix) into `dest`, keeping relative paths; the number downloaded.

    Raises UnsafeKey (before downloading anything) for a key that resolves outside `dest`.
    """
    prefix = uri.path.rstrip("/") + "/"
    items = [
        item
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=uri.authority, Prefix=prefix)
        for item in page.get("Contents", [])
        if not item["Key"].endswith("/")  # folder markers hold nothing
    ]
    targets = [target_inside(dest, item["Key"][len(prefix) :]) for item in items]
    for item, target in zip(items, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(uri.authority, item["Key"], str(target))
    return len(items)


def download_s3_object(client: Any, uri: StorageUri, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    client.download_file(uri.authority, uri.path, str(dest))


def download_hf(
    repo: str, dest: Path, *, token: str | None, revision: str | None = None, repo_type: str = "model"
) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo, revision=revision, repo_type=repo_type, local_dir=dest, token=token))
