"""Where shipped pipelines and model bundles live, with or without the checkout.

Looked up in order: ``$XRAY_SCORE_HOME``, the source checkout (``toolkit/..``), and the
installed data directory ``<sys.prefix>/share/xray-score`` (see ``setup.cfg``).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from .errors import UsageError

DEFAULT_MODELS = {"baseline": "baseline", "cnn": "cnn"}


def search_roots() -> list[Path]:
    roots = []
    if os.environ.get("XRAY_SCORE_HOME"):
        roots.append(Path(os.environ["XRAY_SCORE_HOME"]))
    roots.append(Path(__file__).resolve().parents[2])  # the checkout, when run from source
    for prefix in {sys.prefix, sysconfig.get_paths()["data"]}:
        roots.append(Path(prefix) / "share" / "xray-score")
    return roots


def find_resource(*parts: str) -> Path | None:
    for root in search_roots():
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    return None


def pipeline_path(name_or_path: str) -> Path:
    """A pipeline YAML given as a path, or by name (``baseline`` -> ``pipelines/baseline.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = name_or_path if name_or_path.endswith((".yaml", ".yml")) else f"{name_or_path}.yaml"
    found = find_resource("pipelines", stem)
    if found is None:
        raise UsageError(f"no pipeline {name_or_path!r} (neither a file nor a shipped pipeline)")
    return found


def default_model(kind: str = "default") -> Path:
    """The shipped bundle of a kind (``baseline`` or ``cnn``); ``default``: the CNN, else the
    baseline."""
    kinds = ["cnn", "baseline"] if kind == "default" else [kind]
    found = None
    for name in kinds:
        found = found or find_resource("models", DEFAULT_MODELS[name], "bundle.json")
    if found is None:
        raise UsageError(f"no shipped {kind} model found (searched "
                         f"{', '.join(str(r / 'models') for r in search_roots())}); "
                         "pass --model BUNDLE")
    return found.parent
