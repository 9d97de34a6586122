"""The backbone's initial weights as bundles record them (file name + sha256), and finding and
verifying that file again when a head-only bundle is loaded (TensorFlow-free until used)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import UsageError


def _keras_cache_file(fname: str) -> Path | None:
    base = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    p = base / "models" / fname
    return p if p.is_file() else None


def weights_info(resolved: str | None, s: dict[str, Any]) -> dict[str, Any] | None:
    """{file, sha256} of the backbone's initial weights when reproducible from a file."""
    from ..hashing import sha256_file
    from .backbones import known_weight_names, verify_weights_file

    if resolved is None:
        return None
    if resolved == "imagenet":
        for fname in known_weight_names(s["backbone"], s["alpha"]):
            cached = _keras_cache_file(fname)
            if cached is not None:
                return {"file": fname, "sha256": verify_weights_file(cached)}
        return None
    return {"file": Path(resolved).name, "sha256": sha256_file(resolved)}


def weights_for_load(bm: dict[str, Any], weights: str | Path | None) -> str:
    """Find and verify the backbone weights a head-only bundle references."""
    from ..hashing import sha256_file
    from .backbones import KNOWN_WEIGHTS_SHA256, WEIGHTS_ENV, resolve_weights

    fname, expected = bm.get("weights_file"), bm.get("weights_sha256")
    candidate = weights if weights is not None else os.environ.get(WEIGHTS_ENV) or None
    if candidate is None and fname:
        candidate = _keras_cache_file(fname)
    if candidate is None:
        raise UsageError(
            f"this model uses the unchanged backbone weights {fname} (sha256 {expected}); "
            f"pass the file or its directory as --weights or set {WEIGHTS_ENV}")
    p = Path(candidate).expanduser()
    if p.is_dir() and fname and (p / fname).is_file():
        p = p / fname
    path = Path(resolve_weights(str(p), bm["name"], bm.get("alpha")) or "")
    digest = sha256_file(path)
    if digest != expected:
        known = KNOWN_WEIGHTS_SHA256.get(path.name)
        raise UsageError(
            f"weights file {path} has sha256 {digest}, but the model was trained on "
            f"{fname} with sha256 {expected}" + (" (known Keras release)" if known else ""))
    return str(path)
