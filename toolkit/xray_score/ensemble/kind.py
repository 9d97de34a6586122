"""The ``ensemble`` model kind: the mean logit of member bundles, calibrated on its own.

Each member scores with its own preprocessing, model and calibration (one read and one decode
per file for all of them, as ``compare`` does); the ensemble averages the members' calibrated
logits (optionally weighted) and fits its own calibration and threshold on validation like any
kind. Members are pinned by ``model_id`` in ``ensemble.json`` (a listed, verified file) and
found by their path relative to the ensemble bundle, else among the installed shipped bundles.
An ensemble is not trained on films: ``train ensemble`` only needs validation films.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, UsageError
from ..io.preprocess import MultiPreprocessor
from ..model.bundle import Bundle
from ..model.decision import expit, logit
from ..model.kinds import DomainAware, KindBase, register_kind
from ..model.spec import check_section

log = logging.getLogger(__name__)
MEMBERS_FILE = "ensemble.json"


class EnsemblePredictor:
    """Members' calibrated logits, averaged: ``predict_raw`` of a MultiPreprocessor batch."""

    def __init__(self, members: list[Bundle], weights: list[float] | None = None,
                 predictors: list[Any] | None = None) -> None:
        if len(members) < 2:
            raise UsageError("an ensemble needs at least two member bundles")
        self.members = members
        self.weights = np.asarray(weights or [1.0] * len(members), dtype=np.float64)
        if len(self.weights) != len(members) or (self.weights <= 0).any():
            raise UsageError("ensemble weights: one positive number per member")
        self.predictors = predictors or [m.predictor() for m in members]
        self.history: dict[str, Any] = {}
        self.input_size = max(m.input_size for m in members)  # gallery thumbnails

    @property
    def runtime(self) -> str:
        return " + ".join(f"{m.kind} ({p.runtime})" for m, p in
                          zip(self.members, self.predictors, strict=True))

    def predict_raw(self, batch: tuple[Any, ...]) -> np.ndarray:
        return self.predict_with_domain(batch)[0]

    def predict_with_domain(self, batch: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray | None]:
        """The mean logit, and the largest of the members' domain scores (the member furthest
        from what it knows decides)."""
        logits, domains = [], []
        for member, predictor, x in zip(self.members, self.predictors, batch, strict=True):
            if isinstance(predictor, DomainAware):
                raw, domain = predictor.predict_with_domain(x)
            else:
                raw, domain = predictor.predict_raw(x), None
            logits.append(logit(member.operating_point.probability(raw)))
            if domain is not None:
                domains.append(domain)
        z = (self.weights[:, None] * np.stack(logits)).sum(axis=0) / self.weights.sum()
        return expit(z), np.max(domains, axis=0) if domains else None

    def save(self, folder: Path) -> tuple[dict[str, Any], list[str]]:
        final = folder.resolve().parent / "bundle"  # staging sits beside --out: same paths
        entries = [{"model_id": m.model_id, "name": m.name, "kind": m.kind,
                    "path": os.path.relpath(m.path.resolve(), final)}
                   for m in self.members]
        (folder / MEMBERS_FILE).write_text(json.dumps(
            {"members": entries, "weights": self.weights.tolist()}, indent=2) + "\n")
        domain = {"from_members": True} if any(m.meta.get("domain") for m in self.members) \
            else None
        return {"history": {}, "members": entries, "domain": domain}, [MEMBERS_FILE]


def find_member(entry: dict[str, Any], near: Path) -> Bundle:
    """A member bundle by its recorded path (relative to the ensemble folder), else among the
    installed shipped bundles; its model_id must be the pinned one."""
    from ..resources import search_roots

    candidates = [near / entry["path"]]
    candidates += sorted(p.parent for root in search_roots()
                         for p in (root / "models").glob("*/bundle.json"))
    for folder in candidates:
        if (folder / "bundle.json").is_file():
            member = Bundle.load(folder)
            if member.model_id == entry["model_id"]:
                return member
    raise BundleError(f"ensemble member {entry.get('name')!r} (model_id {entry['model_id']}) "
                      f"not found at {near / entry['path']} nor among the shipped bundles")


class EnsembleKind(KindBase):
    name = "ensemble"
    needs_training_data = False
    takes_input_size = False

    def check_spec(self, spec: dict[str, Any]) -> None:
        check_section(spec, "", {"members", "weights"})
        if not isinstance(spec.get("members"), list) or len(spec["members"]) < 2:
            raise UsageError("an ensemble pipeline lists at least two member bundles "
                             "(members: [path, path], or train ensemble --member B ...)")

    def _members(self, spec: dict[str, Any]) -> list[Bundle]:
        return [Bundle.load(p) for p in spec["members"]]

    def preprocessor(self, spec: dict[str, Any]) -> MultiPreprocessor:
        return MultiPreprocessor(tuple(m.preprocessor() for m in self._members(spec)))

    def bundle_preprocessor(self, bundle: Bundle) -> MultiPreprocessor:
        return MultiPreprocessor(tuple(m.preprocessor() for m in self._bundle_members(bundle)))

    def fit(self, x_train: Any, y_train: Any, x_val: Any, y_val: Any, spec: dict[str, Any],
            **options: Any) -> EnsemblePredictor:
        return EnsemblePredictor(self._members(spec), spec.get("weights"))

    def load(self, bundle: Bundle, weights: str | None = None, engine: str = "auto",
             threads: int | None = None) -> EnsemblePredictor:
        members = self._bundle_members(bundle)
        stored = json.loads(bundle.read(MEMBERS_FILE))
        return EnsemblePredictor(members, stored.get("weights"),
                                 [m.predictor(weights=weights, engine=engine, threads=threads)
                                  for m in members])

    def copy_files(self, bundle: Bundle, staging: Path, final: Path) -> list[str]:
        """Members stay where they are: the copy's ``ensemble.json`` points at them from its
        new place."""
        members = self._bundle_members(bundle)
        stored = json.loads(bundle.read(MEMBERS_FILE))
        for entry, member in zip(stored["members"], members, strict=True):
            entry["path"] = os.path.relpath(member.path.resolve(), final.resolve())
        (staging / MEMBERS_FILE).write_text(json.dumps(stored, indent=2) + "\n")
        return [MEMBERS_FILE]

    def _bundle_members(self, bundle: Bundle) -> list[Bundle]:
        stored = json.loads(bundle.read(MEMBERS_FILE))
        return [find_member(entry, bundle.path) for entry in stored["members"]]


register_kind(EnsembleKind())
