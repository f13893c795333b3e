"""Where programs in kubetune's pods may write: their root filesystem is read-only. Pure.

Every container the operator makes runs with `readOnlyRootFilesystem`. What the trainer, the stagers
and vLLM write goes to two emptyDirs: `/tmp` (tempfile, torchelastic's run folders, vLLM's temporary
files) and `/cache`, which HOME and each library's cache variable point into. docs/security.md lists
which writes the real node showed and which variables cover code paths it does not run (GPU, DeepSpeed).
"""

from __future__ import annotations

from typing import Any

TMP_VOLUME = "tmp"
TMP_MOUNT = "/tmp"
CACHE_VOLUME = "cache"
CACHE_MOUNT = "/cache"

# HOME first: libraries without their own variable fall back to ~/.cache or ~/.config.
CACHE_ENV: dict[str, str] = {
    "HOME": CACHE_MOUNT,
    "TMPDIR": TMP_MOUNT,
    "XDG_CACHE_HOME": f"{CACHE_MOUNT}/xdg-cache",
    "XDG_CONFIG_HOME": f"{CACHE_MOUNT}/xdg-config",
    "HF_HOME": f"{CACHE_MOUNT}/huggingface",
    "TORCHINDUCTOR_CACHE_DIR": f"{CACHE_MOUNT}/torchinductor",
    "TRITON_CACHE_DIR": f"{CACHE_MOUNT}/triton",
    # DeepSpeed builds the ops it has no prebuilt binary for with torch's cpp_extension, here.
    "TORCH_EXTENSIONS_DIR": f"{CACHE_MOUNT}/torch_extensions",
    "MPLCONFIGDIR": f"{CACHE_MOUNT}/matplotlib",
    "NUMBA_CACHE_DIR": f"{CACHE_MOUNT}/numba",
}
VLLM_CACHE_ENV: dict[str, str] = {
    "VLLM_CACHE_ROOT": f"{CACHE_MOUNT}/vllm",
    "VLLM_CONFIG_ROOT": f"{CACHE_MOUNT}/vllm-config",
}


def cache_env(extra: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Env entries pointing HOME, TMPDIR and every known cache into the two emptyDirs."""
    values = CACHE_ENV | (extra or {})
    return [{"name": name, "value": value} for name, value in values.items()]


def writable_mounts() -> list[dict[str, Any]]:
    return [{"name": TMP_VOLUME, "mountPath": TMP_MOUNT}, {"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT}]


def writable_volumes() -> list[dict[str, Any]]:
    return [{"name": TMP_VOLUME, "emptyDir": {}}, {"name": CACHE_VOLUME, "emptyDir": {}}]
