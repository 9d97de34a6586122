"""The ``cnn`` model kind: canonical pixels in the workers, a Keras/TFLite network here."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io.decode import MAX_PIXELS
from ..io.preprocess import Preprocessor
from ..model.domain import IMAGE_STATISTICS, DomainCheck, image_statistics
from ..model.kinds import KindBase, register_kind
from ..model.spec import check_section
from .predictor import CnnPredictor
from .spec import MODEL_DEFAULTS, TRAINING_DEFAULTS, normalize_spec

SECTION_KEYS = {"input_size", *MODEL_DEFAULTS, *TRAINING_DEFAULTS}  # model/training may mix


class CnnKind(KindBase):
    name = "cnn"

    def check_spec(self, spec: dict[str, Any]) -> None:
        check_section(spec, "model", SECTION_KEYS)
        check_section(spec, "training", SECTION_KEYS)
        check_section(spec, "", {"model", "training"})
        normalize_spec(spec)  # values: head, fine_tune, augmentation keys and ranges

    def preprocessor(self, spec: dict[str, Any]) -> Preprocessor:
        decode = spec.get("decode") or {}
        return Preprocessor(size=int(spec["input_size"]),
                            jpeg_draft=bool(decode.get("jpeg_draft", False)),
                            max_pixels=int(decode.get("max_pixels", MAX_PIXELS)))

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
            y_val: np.ndarray, spec: dict[str, Any], **options: Any) -> CnnPredictor:
        from .train import fit_cnn  # imports TensorFlow

        return fit_cnn(x_train, y_train, x_val, y_val, spec, weights=options.get("weights"))

    def load(self, bundle: Any, weights: str | None = None, engine: str = "auto",
             threads: int | None = None) -> CnnPredictor:
        predictor = CnnPredictor.load(bundle, bundle.meta, weights=weights, engine=engine,
                                      threads=threads)
        predictor.domain = DomainCheck.load(bundle)
        return predictor

    def domain_features(self, model: Any, x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
        """The network's embedding, then a few image statistics (polarity, exposure)."""
        return np.concatenate([model.embed(x), image_statistics(x)], axis=1)

    def domain_blocks(self, spec: dict[str, Any], dim: int) -> list[tuple[str, int, int]]:
        image = len(IMAGE_STATISTICS)
        return [("embedding", 0, dim - image), ("image", dim - image, dim)]


register_kind(CnnKind())
