"""Text normalisation applied to every string before validation."""

from __future__ import annotations

import re
import unicodedata

# C0/C1 control characters and DEL, except tab, newline and carriage return which carry layout.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """NFKC-normalise (full-width forms, ligatures, compatibility spaces) and drop control characters."""
    return _CONTROL.sub("", unicodedata.normalize("NFKC", text)).replace("\r\n", "\n")
