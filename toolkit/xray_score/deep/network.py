"""Keras 3 CNN path, the network: TensorFlow set-up, building, fine-tune switches.

Training is :mod:`xray_score.deep.train`, the trained model and its storage
:mod:`xray_score.deep.predictor`, the fast runtime :mod:`xray_score.deep.lite`, Grad-CAM
:mod:`xray_score.deep.gradcam`.

TensorFlow-bound: never import this module from joblib worker code (workers only produce the
canonical (S, S) uint8 image; this module turns batches of them into probabilities).

Model input is a float32 batch (N, S, S, 1) holding the canonical uint8 gray values 0..255.
Layers: [augmentation, training only] -> [DarkPixelsToZero] -> backbone preprocessing
(gray->RGB + Rescaling/Normalization; no Lambda) -> backbone -> ``embedding``
(GlobalAveragePooling2D) -> [``hidden`` Dense relu] -> ``dropout`` -> ``head`` Dense(1, sigmoid).

Spec keys: :mod:`xray_score.deep.spec`.

Training (:mod:`xray_score.deep.train`): phase "head" (pretrained backbone frozen; scratch
networks train whole) with lr_head, then phase "fine_tune" (unfrozen per ``fine_tune``,
BatchNorm frozen) with lr_fine_tune.

Storage (:meth:`xray_score.deep.predictor.CnnPredictor.save`): a backbone that is fine-tuned (or a
scratch net, or random init) is stored whole in ``model.keras``, with its TFLite twin
``model.tflite`` (spec key ``tflite``, default true; checked against Keras when written); an
unchanged pretrained backbone is NOT stored: only ``head.keras`` (logistic) and the weights
file name + sha256 go in bundle.json, and loading needs that file again (argument,
``XRAY_SCORE_WEIGHTS``, or the Keras cache). The LightGBM head is ``lightgbm.txt`` (text model;
it has no Grad-CAM). Every .keras file is written without augmentation layers and loaded with
``safe_mode=True``.
"""

from __future__ import annotations

import os

from ..quiet import native_stderr_muted

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

with native_stderr_muted():
    import keras
    import tensorflow as tf

import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from ..errors import UsageError  # noqa: E402
from .backbones import (  # noqa: E402
    DarkPixelsToZero,
    build_backbone,
    preprocessing_layers,
    quiet_tensorflow,
    resolve_weights,
)
from .lite import network_threads  # noqa: E402
from .spec import (  # noqa: E402, F401 - the spec API, re-exported
    AUGMENTATION_KEYS,
    MODEL_DEFAULTS,
    TRAINING_DEFAULTS,
    normalize_spec,
)

quiet_tensorflow()
log = logging.getLogger(__name__)

# ---------------------------------------------------------------- runtime setup


def set_tf_threads(n: int | None = None) -> None:
    """Use ``n`` intra-op threads (default :func:`~xray_score.deep.lite.network_threads`) and 1
    inter-op thread."""
    n = n or network_threads()
    if tf.config.threading.get_intra_op_parallelism_threads() == n:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        log.debug("TF runtime already initialized; intra-op threads stay %s",
                    tf.config.threading.get_intra_op_parallelism_threads())


def seed_everything(seed: int, deterministic: bool = True) -> None:
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        try:
            tf.config.experimental.enable_op_determinism()
        except Exception as exc:  # pragma: no cover - depends on the TF build
            log.warning("op determinism unavailable: %s", exc)


# ---------------------------------------------------------------- model


def augmentation_layers(aug: dict[str, Any], seed: int) -> list[keras.layers.Layer]:
    """Random layers (inactive at inference) from the ``augmentation`` dict."""
    fill = aug.get("fill_mode", "constant")
    layers: list[keras.layers.Layer] = []
    if aug.get("rotation_deg"):
        layers.append(keras.layers.RandomRotation(
            float(aug["rotation_deg"]) / 360.0, fill_mode=fill, seed=seed, name="aug_rotation"))
    if aug.get("zoom"):
        layers.append(keras.layers.RandomZoom(
            float(aug["zoom"]), fill_mode=fill, seed=seed + 1, name="aug_zoom"))
    if aug.get("shift"):
        f = float(aug["shift"])
        layers.append(keras.layers.RandomTranslation(
            f, f, fill_mode=fill, seed=seed + 2, name="aug_shift"))
    if aug.get("shear"):
        f = float(aug["shear"])
        layers.append(keras.layers.RandomShear(
            f, f, fill_mode=fill, seed=seed + 3, name="aug_shear"))
    if aug.get("flip"):
        layers.append(keras.layers.RandomFlip(aug["flip"], seed=seed + 4, name="aug_flip"))
    if aug.get("brightness"):  # exposure differences between machines and sites
        layers.append(keras.layers.RandomBrightness(
            float(aug["brightness"]), value_range=(0, 255), seed=seed + 5, name="aug_brightness"))
    if aug.get("contrast"):
        layers.append(keras.layers.RandomContrast(
            float(aug["contrast"]), value_range=(0, 255), seed=seed + 6, name="aug_contrast"))
    return layers


def build_model(spec: dict[str, Any], weights: str | Path | None = None,
                augment: bool = True) -> keras.Model:
    """Build the (uncompiled) network of ``spec``; ``weights`` overrides ``spec['weights']``."""
    s = normalize_spec(spec)
    resolved = resolve_weights(weights if weights is not None else s["weights"],
                               s["backbone"], s["alpha"])
    return build_network(s, resolved, augment)


def build_network(s: dict[str, Any], resolved: str | None, augment: bool) -> keras.Model:
    """The network of a normalized spec ``s`` with already resolved backbone weights."""
    size = s["input_size"]
    backbone = build_backbone(s["backbone"], size, s["alpha"], resolved,
                              **(s["backbone_args"] or {}))
    inp = keras.Input((size, size, 1), name="image")
    x = inp
    aug = s["augmentation"]
    if augment:
        for layer in augmentation_layers(aug, int(s["seed"])):
            x = layer(x)
    if aug.get("dark_threshold") is not None:
        x = DarkPixelsToZero(aug["dark_threshold"], bool(aug.get("dark_training_only", False)),
                             name="dark_pixels")(x)
    for layer in preprocessing_layers(s["backbone"]):
        x = layer(x)
    x = backbone(x)
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    else:
        x = keras.layers.Identity(name="embedding")(x)
    if s["hidden_units"]:
        x = keras.layers.Dense(int(s["hidden_units"]), activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(float(s["dropout"]), name="dropout")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="head")(x)
    return keras.Model(inp, out, name=f"xray_{s['backbone']}".lower())


def get_backbone(model: keras.Model) -> keras.Model:
    """The nested backbone model inside a model from :func:`build_model`."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise UsageError("model has no single nested backbone")
    return nested[0]


def set_fine_tune(backbone: keras.Model, mode: str) -> int:
    """Unfreeze the backbone per ``mode``; BatchNorm stays frozen. Returns #trainable layers."""
    backbone.trainable = mode != "none"
    if mode.startswith("top:"):
        n = int(mode.split(":", 1)[1])
        for layer in backbone.layers[: max(0, len(backbone.layers) - n)]:
            layer.trainable = False
    elif mode.startswith("from:"):
        names = [layer.name for layer in backbone.layers]
        start = mode.split(":", 1)[1]
        if start not in names:
            raise UsageError(f"fine_tune {mode!r}: no layer {start!r} in {backbone.name}")
        for layer in backbone.layers[: names.index(start)]:
            layer.trainable = False
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # Keras 3: frozen BN runs in inference mode
    return sum(1 for layer in backbone.layers if layer.trainable and layer.weights)


def optional_layer(model: keras.Model, name: str) -> keras.layers.Layer | None:
    """``model.get_layer(name)``, or None when the network has no such layer."""
    try:
        return model.get_layer(name)
    except ValueError:
        return None
