"""Keras 3 CNN path: model building, training, fine-tuning, storage, Grad-CAM.

TensorFlow-bound: never import this module from joblib worker code (workers only produce the
canonical (S, S) uint8 image; this module turns batches of them into probabilities).

Model input is a float32 batch (N, S, S, 1) holding the canonical uint8 gray values 0..255.
Layers: [augmentation, training only] -> [DarkPixelsToZero] -> backbone preprocessing
(gray->RGB + Rescaling/Normalization; no Lambda) -> backbone -> ``embedding``
(GlobalAveragePooling2D) -> [``hidden`` Dense relu] -> ``dropout`` -> ``head`` Dense(1, sigmoid).

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
training:
  epochs_head, epochs_fine_tune, lr_head, lr_fine_tune, batch_size,
  patience          early stopping on val_auc (best weights restored)
  class_weight      "balanced" | null
  augmentation      {zoom, rotation_deg, shift, shear, flip ("horizontal"|"vertical"|
                    "horizontal_and_vertical"), brightness, contrast (fractions of 0..255),
                    fill_mode, dark_threshold (pixels below -> 0),
                    dark_training_only (default false: applied at inference too)}
  seed, deterministic (tf op determinism)
input_size          S (top level of the pipeline)
(``model`` and ``training`` are merged, so a key may sit in either section.)

Training: phase "head" (pretrained backbone frozen; scratch networks train whole) with lr_head,
then phase "fine_tune" (unfrozen per ``fine_tune``, BatchNorm frozen) with lr_fine_tune.

Storage (:meth:`CnnPredictor.save`): a backbone that is fine-tuned (or a scratch net, or random
init) is stored whole in ``model.keras``; an unchanged pretrained backbone is NOT stored: only
``head.keras`` (logistic) and the weights file name + sha256 go in bundle.json, and loading
needs that file again (argument, ``XRAY_SCORE_WEIGHTS``, or the Keras cache). The LightGBM
head is ``lightgbm.txt`` (text model; it has no Grad-CAM). Every .keras file is written without
augmentation layers and loaded with ``safe_mode=True``.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextmanager
def _fd2_muted(active: bool):
    """Mute file descriptor 2 (C++ start-up banners) while TensorFlow loads, for the CLI."""
    if not active:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _fd2_muted(os.environ.get("XRAY_SCORE_QUIET_TF_IMPORT") == "1"):
    import keras
    import tensorflow as tf

import copy  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from xray_score.backbones import (  # noqa: E402
    KNOWN_WEIGHTS_SHA256,
    SCRATCH_BACKBONES,
    WEIGHTS_ENV,
    DarkPixelsToZero,
    build_backbone,
    known_weight_names,
    preprocessing_layers,
    quiet_tensorflow,
    resolve_weights,
    sha256_file,
    verify_weights_file,
)
from xray_score.errors import BundleError, UsageError  # noqa: E402

quiet_tensorflow()
log = logging.getLogger(__name__)

MODEL_DEFAULTS: dict[str, Any] = {
    "backbone": "MobileNetV2", "alpha": None, "weights": None, "head": "logistic",
    "hidden_units": 0, "dropout": 0.2, "fine_tune": "none", "backbone_args": {},
    "lightgbm": {}, "lightgbm_rounds": 500,
}
TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs_head": 5, "epochs_fine_tune": 5, "lr_head": 1e-3, "lr_fine_tune": 1e-5,
    "batch_size": 32, "patience": 3, "class_weight": "balanced", "augmentation": {},
    "seed": 0, "deterministic": True, "head_on_embeddings": False,
}
AUGMENTATION_KEYS = {"zoom", "rotation_deg", "shift", "shear", "flip", "fill_mode",
                     "brightness", "contrast", "dark_threshold", "dark_training_only"}
_PIPELINE_ONLY_KEYS = {"kind", "name", "description", "calibration", "threshold", "validation"}
_CHUNK = 32


# ---------------------------------------------------------------- runtime setup


def set_tf_threads(n: int | None = None) -> None:
    """Use ``n`` intra-op threads (default os.cpu_count()) and 1 inter-op thread."""
    n = n or int(os.environ.get("XRAY_SCORE_TF_THREADS", 0)) or os.cpu_count() or 1
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


# ---------------------------------------------------------------- spec


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
    return _build(s, resolved, augment)


def _build(s: dict[str, Any], resolved: str | None, augment: bool) -> keras.Model:
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


# ---------------------------------------------------------------- training


class _Batches(keras.utils.PyDataset):
    """uint8 (N, S, S) in memory -> float32 (B, S, S, 1) batches, converted per batch."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool,
                 seed: int, sample_weight: np.ndarray | None = None) -> None:
        super().__init__()
        self.x, self.y, self.w = x, np.asarray(y, np.float32), sample_weight
        self.batch_size, self.shuffle = int(batch_size), shuffle
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x)) if shuffle else np.arange(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i: int):
        idx = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        xb = self.x[idx].astype(np.float32)[..., None]
        if self.w is None:
            return xb, self.y[idx]
        return xb, self.y[idx], self.w[idx]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.order = self.rng.permutation(len(self.x))


def _class_weights(y: np.ndarray, mode: str | None) -> np.ndarray | None:
    if mode != "balanced":
        return None
    y = np.asarray(y).astype(int)
    counts = np.bincount(y, minlength=2).astype(float)
    per_class = len(y) / (2.0 * np.maximum(counts, 1.0))
    return per_class[y].astype(np.float32)


def _check_xy(x: np.ndarray, y: np.ndarray, size: int, what: str) -> None:
    if x.ndim != 3 or x.shape[1:] != (size, size):
        raise UsageError(f"{what}: expected (N, {size}, {size}) images, got {x.shape}")
    if len(y) != len(x):
        raise UsageError(f"{what}: {len(x)} images but {len(y)} labels")


def _run_phase(model: keras.Model, lr: float, epochs: int, train: Any, val: Any,
               patience: int, **fit_kwargs: Any) -> dict[str, list[float]]:
    """Compile and fit one phase with epoch logging and early stopping on val_auc."""
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")], jit_compile=False)
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: log.info(
            "epoch %d: %s", epoch + 1,
            ", ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()))))]
    if val is not None and patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=int(patience), restore_best_weights=True))
    hist = model.fit(train, validation_data=val, epochs=int(epochs), callbacks=callbacks,
                     verbose=0, **fit_kwargs)
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def _embeddings(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Clean (augmentation-free) embeddings of uint8 images, in chunks."""
    emb = keras.Model(model.inputs, model.get_layer("embedding").output)
    parts = [np.asarray(emb.predict_on_batch(x[i:i + 64].astype(np.float32)[..., None]))
             for i in range(0, len(x), 64)]
    return np.concatenate(parts)


def _head_on_embeddings(model: keras.Model, s: dict[str, Any], train: _Batches,
                        val: _Batches | None, lr: float, epochs: int) -> dict[str, list]:
    """Warm up the head on embeddings computed once (no augmentation): the frozen
    backbone then runs once per image instead of once per image per epoch."""
    dim = int(model.get_layer("embedding").output.shape[-1])
    inp = keras.Input((dim,), name="embedding_in")
    h = inp
    for name in ("hidden", "dropout", "head"):
        layer = _maybe_layer(model, name)
        if layer is not None:
            h = layer(h)  # shared layers: training this model trains the full network's head
    head_model = keras.Model(inp, h, name="head_warmup")
    e_train = _embeddings(model, train.x)
    val_data = None if val is None else (_embeddings(model, val.x), val.y)
    return _run_phase(head_model, lr, epochs, e_train, val_data, s["patience"], y=train.y,
                      sample_weight=train.w, batch_size=s["batch_size"], shuffle=True)


def _train_network(model: keras.Model, s: dict[str, Any], train: _Batches,
                   val: _Batches | None) -> dict[str, list]:
    backbone = get_backbone(model)
    pretrained = s["backbone"] not in SCRATCH_BACKBONES
    phases = [("head", s["lr_head"], s["epochs_head"])]
    if pretrained and s["fine_tune"] != "none" and s["epochs_fine_tune"] > 0:
        phases.append(("fine_tune", s["lr_fine_tune"], s["epochs_fine_tune"]))
    history: dict[str, list] = {"phase": []}
    for phase, lr, epochs in phases:
        if epochs <= 0:
            continue
        if pretrained:
            n = set_fine_tune(backbone, "none" if phase == "head" else s["fine_tune"])
            log.info("phase %s: %d trainable backbone layers, lr=%g", phase, n, lr)
        if phase == "head" and pretrained and s["head_on_embeddings"]:
            h = _head_on_embeddings(model, s, train, val, lr, epochs)
        else:
            h = _run_phase(model, lr, epochs, train, val, s["patience"])
        for key, vals in h.items():
            history.setdefault(key, []).extend(vals)
        history["phase"].extend([phase] * len(h.get("loss", [])))
    if pretrained:
        set_fine_tune(backbone, "none")
    return history


def fit_cnn(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None,
            y_val: np.ndarray | None, spec: dict[str, Any],
            weights: str | Path | None = None) -> CnnPredictor:
    """Train per ``spec`` on uint8 (N, S, S) images with 0/1 labels; returns a CnnPredictor.

    Head "lightgbm" fits LightGBM on the (frozen or fine-tuned) backbone embeddings; it has
    no Grad-CAM. With head "lightgbm" and fine_tune "none" the network is not trained at all.
    """
    s = normalize_spec(spec)
    set_tf_threads()
    _check_xy(x_train, y_train, s["input_size"], "train")
    if x_val is not None:
        _check_xy(x_val, y_val, s["input_size"], "validation")
    seed_everything(s["seed"], s["deterministic"])
    resolved = resolve_weights(weights if weights is not None else s["weights"],
                               s["backbone"], s["alpha"])
    if resolved is None and s["backbone"] not in SCRATCH_BACKBONES:
        log.warning("%s with random initial weights (no weights file given; set %s)",
                    s["backbone"], WEIGHTS_ENV)
    model = _build(s, resolved, augment=True)
    train = _Batches(x_train, y_train, s["batch_size"], True, s["seed"],
                     _class_weights(y_train, s["class_weight"]))
    val = None if x_val is None else _Batches(x_val, y_val, s["batch_size"], False, 0)
    skip_net = s["head"] == "lightgbm" and s["fine_tune"] == "none" \
        and s["backbone"] not in SCRATCH_BACKBONES
    history = {} if skip_net else _train_network(model, s, train, val)
    pred = CnnPredictor(model, s, history=history, weights_info=_weights_info(resolved, s))
    if s["head"] == "lightgbm":
        pred.booster = _fit_lightgbm(pred, x_train, y_train, x_val, y_val, s)
    return pred


def _fit_lightgbm(pred: CnnPredictor, x_tr: np.ndarray, y_tr: np.ndarray,
                  x_val: np.ndarray | None, y_val: np.ndarray | None, s: dict[str, Any]):
    import lightgbm as lgb

    params = {"objective": "binary", "metric": "auc", "learning_rate": 0.05, "num_leaves": 15,
              "min_data_in_leaf": 20, "feature_fraction": 0.5, "lambda_l2": 1.0,
              "seed": int(s["seed"]), "deterministic": True, "num_threads": os.cpu_count() or 1,
              "verbose": -1, "is_unbalance": s["class_weight"] == "balanced"}
    params.update(s["lightgbm"] or {})
    dtrain = lgb.Dataset(pred.embed(x_tr), np.asarray(y_tr, float))
    evals: dict = {}
    callbacks = [lgb.record_evaluation(evals)]
    valid = []
    if x_val is not None:
        valid = [lgb.Dataset(pred.embed(x_val), np.asarray(y_val, float), reference=dtrain)]
        callbacks.append(lgb.early_stopping(max(10, 10 * int(s["patience"])), verbose=False))
    booster = lgb.train(params, dtrain, int(s["lightgbm_rounds"]), valid_sets=valid,
                        valid_names=["val"] if valid else None, callbacks=callbacks)
    if valid:
        pred.history["lightgbm_val_auc"] = [float(v) for v in evals["val"]["auc"]]
    pred.history["lightgbm_best_iteration"] = int(booster.best_iteration or 0)
    return booster


# ---------------------------------------------------------------- predictor and storage


def _keras_cache_file(fname: str) -> Path | None:
    base = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    p = base / "models" / fname
    return p if p.is_file() else None


def _weights_info(resolved: str | None, s: dict[str, Any]) -> dict[str, Any] | None:
    """{file, sha256} of the backbone's initial weights when reproducible from a file."""
    if resolved is None:
        return None
    if resolved == "imagenet":
        for fname in known_weight_names(s["backbone"], s["alpha"]):
            cached = _keras_cache_file(fname)
            if cached is not None:
                return {"file": fname, "sha256": verify_weights_file(cached)}
        return None
    return {"file": Path(resolved).name, "sha256": sha256_file(resolved)}


class CnnPredictor:
    """A trained CNN: ``predict_raw``/``embed`` on uint8 (N, S, S) batches, save/load.

    ``predict_raw`` returns uncalibrated probabilities (network sigmoid or LightGBM).
    """

    def __init__(self, model: keras.Model, spec: dict[str, Any], booster: Any = None,
                 history: dict | None = None, weights_info: dict | None = None) -> None:
        self.model = model
        self.spec = spec
        self.booster = booster
        self.history = history or {}
        self.weights_info = weights_info
        self.input_size = int(spec["input_size"])
        self._embedder: keras.Model | None = None

    @property
    def head(self) -> str:
        return self.spec["head"]

    @property
    def fine_tuned(self) -> bool:
        return self.spec["backbone"] in SCRATCH_BACKBONES or (
            self.spec["fine_tune"] != "none" and self.spec["epochs_fine_tune"] > 0)

    def _batches(self, batch: np.ndarray):
        batch = np.asarray(batch)
        if batch.ndim == 4 and batch.shape[-1] == 1:
            batch = batch[..., 0]
        if batch.ndim != 3 or batch.shape[1:] != (self.input_size, self.input_size):
            raise UsageError(f"expected (N, {self.input_size}, {self.input_size}) images, "
                             f"got {batch.shape}")
        for i in range(0, len(batch), _CHUNK):
            chunk = batch[i:i + _CHUNK].astype(np.float32)[..., None]
            n = len(chunk)
            if n < _CHUNK and len(batch) > _CHUNK:  # one traced shape for every chunk
                chunk = np.concatenate([chunk, np.zeros((_CHUNK - n, *chunk.shape[1:]),
                                                        np.float32)])
            yield chunk, n

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embedding (N, D): the backbone's global-average-pooled features."""
        if self._embedder is None:
            self._embedder = keras.Model(self.model.inputs,
                                         self.model.get_layer("embedding").output)
        parts = [np.asarray(self._embedder.predict_on_batch(xb))[:n]
                 for xb, n in self._batches(batch)]
        dim = int(self._embedder.output.shape[-1])
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)

    def predict_raw(self, batch: np.ndarray) -> np.ndarray:
        """(N,) probability of PNEUMONIA before calibration."""
        if self.head == "lightgbm":
            emb = self.embed(batch)
            return np.asarray(self.booster.predict(emb), float) if len(emb) else np.zeros(0)
        parts = [np.asarray(self.model.predict_on_batch(xb)).reshape(-1)[:n]
                 for xb, n in self._batches(batch)]
        return np.concatenate(parts).astype(float) if parts else np.zeros(0)

    # -- storage

    def inference_model(self) -> keras.Model:
        """The trained network without augmentation layers (what is stored in bundles)."""
        if not any(layer.name.startswith("aug_") for layer in self.model.layers):
            return self.model
        clean = _build(self.spec, None, augment=False)
        for layer in clean.layers:
            if layer.weights:
                layer.set_weights(self.model.get_layer(layer.name).get_weights())
        return clean

    def _top_model(self) -> keras.Model:
        dim = int(self.model.get_layer("embedding").output.shape[-1])
        inp = keras.Input((dim,), name="embedding_in")
        x = inp
        for name in ("hidden", "dropout", "head"):
            src = _maybe_layer(self.model, name)
            if src is None:
                continue
            layer = src.__class__.from_config(src.get_config())
            x = layer(x)
            layer.set_weights(src.get_weights())
        return keras.Model(inp, x, name="head_top")

    def save(self, directory: str | Path) -> tuple[dict[str, Any], list[str]]:
        """Write model files into ``directory``; return (extra bundle.json keys, file names)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        head_only = not self.fine_tuned and self.weights_info is not None
        files: list[str] = []
        if not head_only:
            self.inference_model().save(d / "model.keras")
            files.append("model.keras")
        elif self.head == "logistic":
            self._top_model().save(d / "head.keras")
            files.append("head.keras")
        if self.head == "lightgbm":
            self.booster.save_model(str(d / "lightgbm.txt"))
            files.append("lightgbm.txt")
        wi = self.weights_info or {}
        meta = {
            "backbone": {"name": self.spec["backbone"], "alpha": self.spec["alpha"],
                         "weights_file": wi.get("file"), "weights_sha256": wi.get("sha256"),
                         "fine_tuned": self.fine_tuned, "stored_in_bundle": not head_only},
            "cnn": {"storage": "head_only" if head_only else "full", "head": self.head,
                    "input_size": self.input_size, "spec": _json_safe(self.spec),
                    "embedding_dim": int(self.model.get_layer("embedding").output.shape[-1]),
                    "history": _json_safe(self.history)},
        }
        return meta, files

    @classmethod
    def load(cls, directory: str | Path, meta: dict[str, Any],
             weights: str | Path | None = None) -> CnnPredictor:
        """Rebuild from ``save`` output; head-only bundles need the referenced weights file."""
        d = Path(directory)
        set_tf_threads()
        try:
            cm, bm = meta["cnn"], meta["backbone"]
            spec = normalize_spec(cm["spec"])
        except (KeyError, TypeError) as exc:
            raise BundleError(f"bundle.json lacks cnn/backbone keys: {exc}") from exc
        if cm["storage"] == "full":
            model = keras.models.load_model(d / "model.keras", safe_mode=True, compile=False)
        else:
            path = _weights_for_load(bm, weights)
            model = _build(spec, path, augment=False)
            if cm["head"] == "logistic":
                top = keras.models.load_model(d / "head.keras", safe_mode=True, compile=False)
                for layer in top.layers:
                    if layer.weights:
                        model.get_layer(layer.name).set_weights(layer.get_weights())
        booster = None
        if cm["head"] == "lightgbm":
            import lightgbm as lgb

            booster = lgb.Booster(model_file=str(d / "lightgbm.txt"))
        info = {"file": bm.get("weights_file"), "sha256": bm.get("weights_sha256")}
        return cls(model, spec, booster, history=cm.get("history"),
                   weights_info=info if info["sha256"] else None)


FittedCnn = CnnPredictor


def _maybe_layer(model: keras.Model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _weights_for_load(bm: dict[str, Any], weights: str | Path | None) -> str:
    """Find and verify the backbone weights a head-only bundle references."""
    fname, expected = bm.get("weights_file"), bm.get("weights_sha256")
    candidate = weights if weights is not None else os.environ.get(WEIGHTS_ENV) or None
    if candidate is None and fname:
        candidate = _keras_cache_file(fname)
    if candidate is None:
        raise UsageError(
            f"this model uses the unchanged backbone weights {fname} (sha256 {expected}); "
            f"pass the file or its directory as --weights or set {WEIGHTS_ENV}")
    p = Path(candidate).expanduser()
    if p.is_dir() and fname and (p / fname).is_file():
        p = p / fname
    path = Path(resolve_weights(str(p), bm["name"], bm.get("alpha")) or "")
    digest = sha256_file(path)
    if digest != expected:
        known = KNOWN_WEIGHTS_SHA256.get(path.name)
        raise UsageError(
            f"weights file {path} has sha256 {digest}, but the model was trained on "
            f"{fname} with sha256 {expected}" + (" (known Keras release)" if known else ""))
    return str(path)


# ---------------------------------------------------------------- Grad-CAM


def grad_cam(model: keras.Model, image: np.ndarray, target: str = "pneumonia") -> np.ndarray:
    """Grad-CAM heatmap (S, S) in 0..1 on the backbone's last feature map (logistic head).

    Gradients are of the head's pre-sigmoid logit (``target="pneumonia"``: evidence for
    PNEUMONIA, all zeros when there is none) or of its negation (``"normal"``), or of the
    predicted class (``"predicted"``). Not available for LightGBM heads (they have no
    network head) or networks without a spatial feature map (dense_mlp).
    """
    if target not in ("pneumonia", "normal", "predicted"):
        raise UsageError(f"grad_cam target must be pneumonia | normal | predicted, not {target}")
    img = np.asarray(image)
    if img.ndim != 2:
        raise UsageError(f"grad_cam expects one (S, S) image, got {img.shape}")
    backbone = get_backbone(model)
    x = tf.convert_to_tensor(img.astype(np.float32)[None, ..., None])
    layers = [ly for ly in model.layers if not isinstance(ly, keras.layers.InputLayer)]
    head = model.get_layer("head")
    k = layers.index(backbone)
    for layer in layers[:k]:
        x = layer(x, training=False)
    with tf.GradientTape() as tape:
        fmap = backbone(x, training=False)
        if len(fmap.shape) != 4:
            raise UsageError(f"{backbone.name} has no spatial feature map for Grad-CAM")
        tape.watch(fmap)
        h = fmap
        for layer in layers[k + 1:]:
            if layer is not head:
                h = layer(h, training=False)
        logit = tf.matmul(h, head.kernel) + head.bias
        sign = -1.0 if target == "normal" or (target == "predicted" and logit[0, 0] < 0) else 1.0
        score = sign * logit
    grads = tape.gradient(score, fmap)[0]
    weights = tf.reduce_mean(grads, axis=(0, 1))
    cam = tf.nn.relu(tf.reduce_sum(fmap[0] * weights, axis=-1))[..., None]
    cam = tf.image.resize(cam, img.shape, method="bilinear")[..., 0].numpy()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32)
