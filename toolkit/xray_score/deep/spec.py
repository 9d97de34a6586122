"""The CNN pipeline spec: keys, defaults, validation (TensorFlow-free).

Spec keys (flat; a pipeline dict ``{input_size, model: {...}, training: {...}}`` is flattened by
:func:`normalize_spec`; unknown keys are a UsageError):

model:
  backbone          keras.applications name ("MobileNetV2", "VGG16", ...) or "five_block_cnn" /
                    "dense_mlp" (from scratch)
  alpha             width multiplier (MobileNet*), else null
  weights           null (XRAY_SCORE_WEIGHTS or random init) | "none" | "imagenet" | file | dir
  head              "logistic" (the network's sigmoid) | "lightgbm" (LightGBM on embeddings)
  hidden_units      0 or the width of a Dense relu layer between embedding and dropout
  dropout           dropout rate before the head
  fine_tune         "none" | "top:N" (last N backbone layers) | "from:LAYER" | "all";
                    backbone BatchNormalization layers always stay frozen
  backbone_args     scratch-network options (five_block_cnn: filters, block_dropout;
                    dense_mlp: pixels, units, dropout)
  lightgbm          LightGBM parameter overrides;  lightgbm_rounds: max boosting rounds
  tflite            also store the network as TFLite (faster scoring; full storage only)
training:
  epochs_head, epochs_fine_tune, lr_head, lr_fine_tune, batch_size,
  patience          early stopping on val_auc (best weights restored)
  class_weight      "balanced" | null
  augmentation      {zoom, rotation_deg, shift, shear, flip ("horizontal"|"vertical"|
                    "horizontal_and_vertical"), brightness, contrast (fractions of 0..255),
                    fill_mode, dark_threshold (pixels below -> 0),
                    dark_training_only (default false: applied at inference too),
                    blur (largest Gaussian sigma), sharpen (largest unsharp-mask amount),
                    jpeg_quality ([low, high] re-compression),
                    degrade_p (probability of each; default 0.5): see xray_score.deep.degrade,
                    framing, intensity (numpy re-framing and re-lighting of every training
                    image, both classes alike): see xray_score.model.augment}
  seed, deterministic (tf op determinism)
input_size          S (top level of the pipeline)
(``model`` and ``training`` are merged, so a key may sit in either section.)
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ..errors import UsageError
from ..model.augment import check_options as check_framing
from .degrade import KEYS as DEGRADE_KEYS
from .degrade import check_options

MODEL_DEFAULTS: dict[str, Any] = {
    "backbone": "MobileNetV2", "alpha": None, "weights": None, "head": "logistic",
    "hidden_units": 0, "dropout": 0.2, "fine_tune": "none", "backbone_args": {},
    "lightgbm": {}, "lightgbm_rounds": 500, "tflite": True,
}
TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs_head": 5, "epochs_fine_tune": 5, "lr_head": 1e-3, "lr_fine_tune": 1e-5,
    "batch_size": 32, "patience": 3, "class_weight": "balanced", "augmentation": {},
    "seed": 0, "deterministic": True, "head_on_embeddings": False,
}
AUGMENTATION_KEYS = {"zoom", "rotation_deg", "shift", "shear", "flip", "fill_mode",
                     "brightness", "contrast", "dark_threshold", "dark_training_only",
                     "framing", "intensity", *DEGRADE_KEYS}
_PIPELINE_ONLY_KEYS = {"kind", "name", "description", "calibration", "threshold", "validation"}


def normalize_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Flatten a pipeline dict (or accept a flat spec), fill defaults, validate."""
    spec = copy.deepcopy(dict(spec))
    if isinstance(spec.get("model"), dict) or isinstance(spec.get("training"), dict):
        flat = {"input_size": spec.get("input_size", 224)}
        flat.update(spec.get("model") or {})
        flat.update(spec.get("training") or {})  # other top-level keys belong to the pipeline
    else:
        flat = {k: v for k, v in spec.items() if k not in _PIPELINE_ONLY_KEYS}
    out = {"input_size": 224, **copy.deepcopy(MODEL_DEFAULTS),
           **copy.deepcopy(TRAINING_DEFAULTS), **flat}
    unknown = set(out) - {"input_size"} - set(MODEL_DEFAULTS) - set(TRAINING_DEFAULTS)
    if unknown:
        raise UsageError(f"unknown cnn spec keys: {sorted(unknown)}")
    _validate(out)
    return out


def _validate(s: dict[str, Any]) -> None:
    s["input_size"] = int(s["input_size"])
    if s["head"] not in ("logistic", "lightgbm"):
        raise UsageError(f"head must be 'logistic' or 'lightgbm', not {s['head']!r}")
    ft = str(s["fine_tune"] or "none")
    if not (ft in ("none", "all") or re.fullmatch(r"top:\d+", ft) or ft.startswith("from:")):
        raise UsageError(f"fine_tune must be none | top:N | from:LAYER | all, not {ft!r}")
    s["fine_tune"] = ft
    if s["class_weight"] in ("none", "None"):
        s["class_weight"] = None
    if s["class_weight"] not in (None, "balanced"):
        raise UsageError("class_weight must be 'balanced' or null")
    unknown = set(s["augmentation"] or {}) - AUGMENTATION_KEYS
    if unknown:
        raise UsageError(f"unknown augmentation keys: {sorted(unknown)}")
    s["augmentation"] = dict(s["augmentation"] or {})
    check_options(s["augmentation"])
    check_framing(s["augmentation"].get("framing"), s["augmentation"].get("intensity"))
