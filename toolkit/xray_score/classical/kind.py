"""The ``baseline`` model kind: HOG/LBP features in the workers, LightGBM in the main process."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from ..errors import UsageError
from ..io.decode import MAX_PIXELS
from ..io.preprocess import Preprocessor
from ..model.domain import DomainCheck
from ..model.kinds import KindBase, register_kind
from ..model.spec import check_section
from .augmented import augmentation_options, augmented_features
from .booster import LIGHTGBM_KEYS, BaselinePredictor, fit_baseline
from .extract import FeatureExtractor

FEATURE_KEYS = tuple(f.name for f in fields(FeatureExtractor))
TRAINING_KEYS = ("class_weight", "early_stopping_rounds", "seed", "threads")
AUGMENTATION_KEYS = ("copies", "framing", "intensity")


def feature_extractor(spec: dict[str, Any]) -> FeatureExtractor:
    """The HOG/LBP extractor a baseline pipeline spec describes."""
    params = dict(spec.get("features") or {})
    for key in ("lbp_points", "lbp_radii"):
        if key in params:
            params[key] = tuple(params[key])
    try:
        return FeatureExtractor(image_size=int(spec["input_size"]), **params)
    except ValueError as exc:
        raise UsageError(f"features: {exc}") from exc


class BaselineKind(KindBase):
    name = "baseline"

    def check_spec(self, spec: dict[str, Any]) -> None:
        check_section(spec, "features", set(FEATURE_KEYS) - {"image_size"})
        check_section(spec, "model", LIGHTGBM_KEYS)
        check_section(spec, "training", TRAINING_KEYS)
        check_section(spec, "augmentation", AUGMENTATION_KEYS)
        check_section(spec, "", {"features", "model", "training", "augmentation"})
        try:
            augmentation_options(spec)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc

    def preprocessor(self, spec: dict[str, Any], features: bool = True) -> Preprocessor:
        decode = spec.get("decode") or {}
        return Preprocessor(size=int(spec["input_size"]),
                            transform=feature_extractor(spec) if features else None,
                            jpeg_draft=bool(decode.get("jpeg_draft", False)),
                            max_pixels=int(decode.get("max_pixels", MAX_PIXELS)))

    def training_preprocessor(self, spec: dict[str, Any]) -> Preprocessor:
        """Pixels when the pipeline augments (features come after re-framing), else features."""
        return self.preprocessor(spec, features=not augmentation_options(spec)[0])

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
            y_val: np.ndarray, spec: dict[str, Any], **options: Any) -> BaselinePredictor:
        if x_train.ndim == 3:  # canonical pixels: add re-framed copies, then features
            threads = int((spec.get("training") or {}).get("threads", 0)) or 2
            x_train, y_train = augmented_features(x_train, y_train, feature_extractor(spec),
                                                  spec, n_jobs=threads)
        return fit_baseline(x_train, y_train, x_val, y_val, spec)

    def load(self, bundle: Any, weights: str | None = None, engine: str = "auto",
             threads: int | None = None) -> BaselinePredictor:
        predictor = BaselinePredictor.load(bundle)
        predictor.domain = DomainCheck.load(bundle)
        return predictor

    def domain_blocks(self, spec: dict[str, Any], dim: int) -> list[tuple[str, int, int]]:
        return feature_extractor(spec).blocks()  # HOG, LBP, intensity histogram

    def domain_features(self, model: Any, x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
        """HOG/LBP features (computed here when ``x`` holds the augmenting path's pixels)."""
        if x.ndim == 3:
            extractor = feature_extractor(spec)
            return np.concatenate([extractor.transform_batch(x[i:i + 256])
                                   for i in range(0, len(x), 256)])
        return x


register_kind(BaselineKind())
