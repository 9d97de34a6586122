"""Pipeline specs: YAML files that say how to rebuild preprocessing and train a model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io.decode import MAX_PIXELS
from ..resources import pipeline_path
from .kinds import get_kind, kind_names

COMMON_DEFAULTS: dict[str, Any] = {
    "decode": {"jpeg_draft": False, "max_pixels": MAX_PIXELS},
    "calibration": {"method": "platt"},
    "threshold": {"policy": "sensitivity", "target": 0.95},
    "validation": {"fraction": 0.15, "seed": 0, "calibration_share": 0.5, "reframed": True},
}


def load_pipeline(name_or_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a pipeline YAML (by path or shipped name), fill defaults, apply dotted overrides."""
    import yaml  # here, not at import: scoring workers load bundles, never pipeline YAML

    path = pipeline_path(name_or_path)
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(spec, dict) or spec.get("kind") not in kind_names():
        raise UsageError(f"{path}: a pipeline needs 'kind:' one of {', '.join(kind_names())}")
    if "input_size" not in spec and getattr(get_kind(spec["kind"]), "takes_input_size", True):
        raise UsageError(f"{path}: a pipeline needs 'input_size'")
    merged = merge(COMMON_DEFAULTS, spec)
    for dotted, value in (overrides or {}).items():
        set_dotted(merged, dotted, value)
    merged.setdefault("name", Path(path).stem)
    check_common(merged)
    get_kind(merged["kind"]).check_spec(merged)
    return merged


# Keys every pipeline may carry, whatever its kind (sections: their keys).
COMMON_TOP_KEYS = frozenset({"kind", "name", "description", "input_size", *COMMON_DEFAULTS})
COMMON_SECTION_KEYS = {
    "decode": {"jpeg_draft", "max_pixels"},
    "calibration": {"method", "C"},
    "threshold": {"policy", "target", "value"},
    "validation": {"fraction", "seed", "calibration_share", "reframed"},
}


def check_section(spec: dict[str, Any], section: str, allowed: set[str] | frozenset[str],
                  ) -> None:
    """Refuse keys of ``spec[section]`` (``""``: the top level, beyond the common keys) that
    are not in ``allowed``, naming the key and the valid ones."""
    node = spec if not section else spec.get(section)
    if node is None:
        return
    where = f"{section}." if section else ""
    if not isinstance(node, dict):
        raise UsageError(f"pipeline section {section!r} must be a mapping, not {node!r}")
    valid = set(allowed) | (set(COMMON_TOP_KEYS) if not section else set())
    unknown = sorted(set(node) - valid)
    if unknown:
        raise UsageError(f"unknown pipeline key(s) {', '.join(where + k for k in unknown)}; "
                         f"valid {'keys of ' + section if section else 'top-level keys'}: "
                         f"{', '.join(sorted(valid))}")


def check_common(spec: dict[str, Any]) -> None:
    """The sections every kind shares (decode, calibration, threshold, validation)."""
    for section, keys in COMMON_SECTION_KEYS.items():
        check_section(spec, section, keys)


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
    import yaml

    key, _, raw = text.partition("=")
    return key.strip(), yaml.safe_load(raw)
