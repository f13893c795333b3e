"""Which URLs a user's spec may make the operator (or a scaler it configures) call. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit


def _origin(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port, parts.path.rstrip("/")


def url_allowed(url: str, allowlist: Sequence[str]) -> bool:
    """Whether `url` is one of `allowlist` (same scheme, host and port; the path under the entry's).

    No user info, query or fragment is accepted: they only serve to disguise where a URL points.
    """
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return False
    scheme, host, port, path = _origin(url)
    for entry in allowlist:
        e_scheme, e_host, e_port, e_path = _origin(entry)
        if (scheme, host, port) == (e_scheme, e_host, e_port) and (
            path == e_path or path.startswith(e_path + "/")
        ):
            return True
    return False
