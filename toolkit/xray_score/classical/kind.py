"""The ``baseline`` model kind: HOG/LBP features in the workers, LightGBM in the main process."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io.decode import MAX_PIXELS
from ..io.preprocess import Preprocessor
from ..model.kinds import KindBase, register_kind
from ..model.spec import check_section
from .booster import LIGHTGBM_KEYS, BaselinePredictor, fit_baseline
from .features import HogLbpFeatures

FEATURE_KEYS = tuple(HogLbpFeatures().get_params())
TRAINING_KEYS = ("class_weight", "early_stopping_rounds", "seed", "threads")


def feature_extractor(spec: dict[str, Any]) -> HogLbpFeatures:
    """The HOG/LBP transformer a baseline pipeline spec describes."""
    params = dict(spec.get("features") or {})
    for key in ("lbp_points", "lbp_radii"):
        if key in params:
            params[key] = tuple(params[key])
    return HogLbpFeatures(image_size=int(spec["input_size"]), **params).fit(None)


class BaselineKind(KindBase):
    name = "baseline"

    def check_spec(self, spec: dict[str, Any]) -> None:
        check_section(spec, "features", set(FEATURE_KEYS) - {"image_size"})
        check_section(spec, "model", LIGHTGBM_KEYS)
        check_section(spec, "training", TRAINING_KEYS)
        check_section(spec, "", {"features", "model", "training"})

    def preprocessor(self, spec: dict[str, Any]) -> Preprocessor:
        decode = spec.get("decode") or {}
        return Preprocessor(size=int(spec["input_size"]), transform=feature_extractor(spec),
                            jpeg_draft=bool(decode.get("jpeg_draft", False)),
                            max_pixels=int(decode.get("max_pixels", MAX_PIXELS)))

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
            y_val: np.ndarray, spec: dict[str, Any], **options: Any) -> BaselinePredictor:
        return fit_baseline(x_train, y_train, x_val, y_val, spec)

    def load(self, bundle: Any, weights: str | None = None,
             engine: str = "auto") -> BaselinePredictor:
        return BaselinePredictor.load(bundle)


register_kind(BaselineKind())
