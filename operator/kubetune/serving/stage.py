"""`python -m kubetune.serving.stage URI DEST`: download a model or adapter before vLLM starts.

Runs as the init container of a serving pod (trainer image: it has huggingface_hub, and boto3 when
s3:// is used). hf:// uses HF_TOKEN; s3:// uses the standard AWS_* variables. A DEST that already
holds a model (config.json or adapter_config.json) is left alone, so a restarted pod whose emptyDir
survived does not download again.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kubetune.api.uris import Scheme, StorageUri, hf_repo_and_revision, parse_uri
from kubetune.staging import download_hf, download_s3_prefix, s3_client

log = logging.getLogger("kubetune.serving.stage")
MARKERS = ("config.json", "adapter_config.json")


def already_staged(dest: Path) -> bool:
    return any((dest / marker).is_file() for marker in MARKERS)


def _download_s3(uri: StorageUri, dest: Path, endpoint_url: str | None) -> None:
    client = s3_client(endpoint_url)
    if download_s3_prefix(client, uri, dest) == 0:
        raise FileNotFoundError(f"s3://{uri.authority}/{uri.path.rstrip('/')}/ holds no objects")


def stage(uri_text: str, dest: Path, *, hf_token: str | None = None, s3_endpoint: str | None = None) -> str:
    """Make `uri_text` available at `dest`; return what was done (for the log)."""
    uri = parse_uri(uri_text)
    if already_staged(dest):
        return f"{dest} already holds a model"
    dest.mkdir(parents=True, exist_ok=True)
    if uri.scheme is Scheme.HF:
        repo, revision = hf_repo_and_revision(uri)
        download_hf(repo, dest, token=hf_token, revision=revision)
    elif uri.scheme is Scheme.S3:
        _download_s3(uri, dest, s3_endpoint)
    else:
        raise ValueError(f"{uri_text}: only hf:// and s3:// are staged; {uri.scheme} is mounted")
    return f"staged {uri_text} into {dest}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubetune.serving.stage", description=__doc__.splitlines()[0]
    )
    parser.add_argument("uri", help="hf://org/name, org/name or s3://bucket/prefix")
    parser.add_argument("dest", type=Path, help="local folder to fill")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        done = stage(
            args.uri,
            args.dest,
            hf_token=os.environ.get("HF_TOKEN") or None,
            s3_endpoint=os.environ.get("AWS_ENDPOINT_URL") or None,
        )
        log.info(done)
    except Exception:
        log.exception("staging %s failed", args.uri)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
