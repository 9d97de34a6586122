"""Model bundles: a directory with ``bundle.json`` and model files, verified before use.

Nothing in a bundle is ever unpickled: models are LightGBM text files and ``.keras`` archives
(loaded with ``safe_mode=True``); every file's sha256 is in ``bundle.json`` and is checked
before any model code runs.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..hashing import sha256_bytes, sha256_file
from .decision import OperatingPoint
from .kinds import get_kind, kind_names

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "xray-score-bundle"
FORMAT_VERSION = 1
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".sav", ".npy", ".npz", ".pt", ".pth"}
DOC_FILES = {"MODEL_CARD.md", "README.md"}


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    meta: dict[str, Any]
    model_id: str

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def input_size(self) -> int:
        return int(self.meta["input_size"])

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"]["value"])

    @property
    def calibration(self) -> dict:
        return self.meta.get("calibration") or {"method": "none"}

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.name

    @cached_property
    def operating_point(self) -> OperatingPoint:
        """Calibration and threshold: raw model output -> probability -> label."""
        return OperatingPoint(self.calibration, self.threshold)

    @property
    def history(self) -> dict[str, Any]:
        """Training curves (older CNN bundles kept them under ``cnn.history``)."""
        return self.meta.get("history") or (self.meta.get("cnn") or {}).get("history") or {}

    def file(self, name: str) -> Path:
        """A model file of this bundle: only names bundle.json lists (verified at load)."""
        if name not in (self.meta.get("files") or {}):
            raise BundleError(f"{self.path}: {name!r} is not listed in bundle.json's files "
                              "(unverified); refusing to load it")
        return self.path / name

    def read(self, name: str) -> bytes:
        """A model file's bytes, checked against bundle.json's sha256 as they are read: what a
        model loads is what was verified, even if the file changed after :meth:`load`."""
        data = self.file(name).read_bytes()
        _check_digest(self.path, name, sha256_bytes(data), self.meta["files"][name],
                      "has changed since the bundle was verified; refusing to load it")
        return data

    @classmethod
    def load(cls, path: str | os.PathLike) -> Bundle:
        """Read and verify a bundle; raise :class:`BundleError` on anything suspicious."""
        path = Path(path)
        manifest = path / "bundle.json"
        if not manifest.is_file():
            raise BundleError(f"{path} is not a model bundle (no bundle.json)")
        raw = manifest.read_bytes()
        try:
            meta = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{manifest}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{manifest}: unknown bundle format {meta.get('format')!r}"
                              if isinstance(meta, dict) else f"{manifest}: not a bundle")
        if meta.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{manifest}: bundle format version {meta.get('format_version')!r}"
                              f" is not supported (this xray-score reads {FORMAT_VERSION})")
        if meta.get("kind") not in kind_names():
            raise BundleError(f"{manifest}: unknown model kind {meta.get('kind')!r}")
        _verify_files(path, meta.get("files") or {})
        return cls(path=path, meta=meta, model_id=sha256_bytes(raw)[:12])

    def preprocessor(self) -> Any:
        """The worker-side preprocessing this bundle's model was trained with (TF-free)."""
        return get_kind(self.kind).bundle_preprocessor(self)

    def predictor(self, weights: str | None = None, engine: str = "auto",
                  threads: int | None = None) -> Any:
        """The model behind this bundle (:class:`xray_score.model.kinds.Predictor`);
        ``threads`` goes to kinds whose ``load`` takes it."""
        kind = get_kind(self.kind)
        options: dict[str, Any] = {"weights": weights, "engine": engine}
        if "threads" in inspect.signature(kind.load).parameters:
            options["threads"] = threads
        return kind.load(self, **options)


def _check_digest(path: Path, name: str, actual: str, digest: str, what: str) -> None:
    """Refuse a model file whose sha256 is not the one bundle.json lists."""
    if actual != digest:
        raise BundleError(f"{path}: {name} {what} (sha256 {actual[:12]}..., bundle.json says "
                          f"{str(digest)[:12]}...)")


def _verify_files(path: Path, files: dict[str, str]) -> None:
    if not files:
        raise BundleError(f"{path}: bundle.json lists no model files")
    for name, digest in files.items():
        target = (path / name).resolve()
        if Path(name).is_absolute() or path.resolve() not in target.parents:
            raise BundleError(f"{path}: file entry {name!r} points outside the bundle")
        if not target.is_file():
            raise BundleError(f"{path}: missing file {name}")
        if Path(name).suffix.lower() in _PICKLE_SUFFIXES or _looks_pickled(target):
            raise BundleError(f"{path}: {name} is a pickle; bundles never load pickles")
        _check_digest(path, name, sha256_file(target), digest, "has been modified")
    for extra in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = extra.relative_to(path).as_posix()
        if rel in files or rel == "bundle.json":
            continue
        if extra.suffix.lower() in _PICKLE_SUFFIXES or _looks_pickled(extra):
            raise BundleError(f"{path}: unexpected pickle {rel}; bundles never load pickles")
        if rel not in DOC_FILES:
            log.warning("%s: ignoring unlisted file %s", path, rel)


def _looks_pickled(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(2)
    return len(head) == 2 and head[0] == 0x80 and 1 <= head[1] <= 5
