"""Pipeline specs: YAML files that say how to rebuild preprocessing and train a model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError
from .resources import pipeline_path

COMMON_DEFAULTS: dict[str, Any] = {
    "decode": {"jpeg_draft": False, "max_pixels": 60_000_000},
    "calibration": {"method": "platt"},
    "threshold": {"policy": "sensitivity", "target": 0.95},
    "validation": {"fraction": 0.15, "seed": 0},
}


def load_pipeline(name_or_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a pipeline YAML (by path or shipped name), fill defaults, apply dotted overrides."""
    path = pipeline_path(name_or_path)
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(spec, dict) or spec.get("kind") not in ("baseline", "cnn"):
        raise UsageError(f"{path}: a pipeline needs 'kind: baseline' or 'kind: cnn'")
    if "input_size" not in spec:
        raise UsageError(f"{path}: a pipeline needs 'input_size'")
    merged = merge(COMMON_DEFAULTS, spec)
    for dotted, value in (overrides or {}).items():
        set_dotted(merged, dotted, value)
    merged.setdefault("name", Path(path).stem)
    return merged


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(spec: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(spec, "training.epochs", 3)``."""
    keys = dotted.split(".")
    node = spec
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UsageError(f"cannot set {dotted}: {key} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` with the value parsed as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise UsageError(f"--set takes KEY=VALUE, got {text!r}")
    key, _, raw = text.partition("=")
    return key.strip(), yaml.safe_load(raw)
