"""Parsing of the storage URIs the API accepts (models, datasets, outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scheme(StrEnum):
    PVC = "pvc"
    S3 = "s3"
    HF = "hf"
    CONFIGMAP = "configMap"


@dataclass(frozen=True)
class StorageUri:
    scheme: Scheme
    authority: str  # claim, bucket, ConfigMap name, or HF org/name
    path: str  # path inside the claim/bucket, ConfigMap key, or "" for HF

    @property
    def needs_staging(self) -> bool:
        """s3:// and hf:// must be downloaded by an init step; pvc and configMap are mounted."""
        return self.scheme in (Scheme.S3, Scheme.HF)

    def __str__(self) -> str:
        if self.scheme is Scheme.HF:
            return f"hf://{self.authority}"
        return f"{self.scheme.value}://{self.authority}/{self.path}".rstrip("/")


def parse_uri(uri: str) -> StorageUri:
    """Parse a URI; a bare `org/name` is a Hugging Face model id."""
    if "://" not in uri:
        if uri.count("/") != 1:
            raise ValueError(f"{uri!r} is neither a URI nor a Hugging Face id (org/name)")
        return StorageUri(Scheme.HF, uri, "")
    scheme_text, rest = uri.split("://", 1)
    try:
        scheme = Scheme(scheme_text)
    except ValueError:
        raise ValueError(f"{uri!r}: unsupported scheme {scheme_text!r}") from None
    if scheme is Scheme.HF:
        return StorageUri(scheme, rest.strip("/"), "")
    authority, _, path = rest.partition("/")
    if not authority:
        raise ValueError(f"{uri!r}: missing {'claim' if scheme is Scheme.PVC else 'name'}")
    return StorageUri(scheme, authority, path.strip("/"))


def with_revision(uri: str, revision: str | None) -> str:
    """A Hugging Face model URI pinned to `revision` (`hf://org/name@revision`); other schemes, an
    empty revision or an already pinned URI unchanged. The serving stager downloads that revision."""
    if not revision:
        return uri
    try:
        parsed = parse_uri(uri)
    except ValueError:
        return uri
    if parsed.scheme is not Scheme.HF or "@" in parsed.authority:
        return uri
    return f"hf://{parsed.authority}@{revision}"


def hf_repo_and_revision(uri: StorageUri) -> tuple[str, str | None]:
    """(org/name, revision or None) of an hf:// URI written by `with_revision`."""
    repo, _, revision = uri.authority.partition("@")
    return repo, revision or None


def join(uri: str, *parts: str) -> str:
    """Append path segments to a URI (for artifact locations under spec.output.uri)."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p)])
