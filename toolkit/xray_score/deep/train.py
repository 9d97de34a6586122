"""Training of the CNN path: the head phase, fine-tuning, the LightGBM head on embeddings.

Phases are described in :mod:`xray_score.deep.network`, spec keys in :mod:`xray_score.deep.spec`.
Training is seeded and, where TensorFlow allows (``deterministic: true``), deterministic; the
per-epoch history is returned with the model and stored in the bundle.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..model.augment import augment_batch
from ..model.augment import check_options as check_framing
from .backbones import SCRATCH_BACKBONES, WEIGHTS_ENV, resolve_weights
from .degrade import degrade_batch, wanted
from .network import (
    build_network,
    get_backbone,
    keras,
    normalize_spec,
    optional_layer,
    seed_everything,
    set_fine_tune,
    set_tf_threads,
)
from .predictor import CnnPredictor
from .weights import weights_info

log = logging.getLogger(__name__)


class _Batches(keras.utils.PyDataset):
    """uint8 (N, S, S) in memory -> float32 (B, S, S, 1) batches, converted per batch."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool,
                 seed: int, sample_weight: np.ndarray | None = None,
                 degrade: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.x, self.y, self.w = x, np.asarray(y, np.float32), sample_weight
        self.degrade = degrade if degrade and wanted(degrade) else None
        self.framing, self.intensity = check_framing(*(
            (degrade or {}).get(k) for k in ("framing", "intensity")))
        self.batch_size, self.shuffle = int(batch_size), shuffle
        self.rng = np.random.default_rng(seed)
        self.seed, self.epoch = int(seed), 0
        self.order = self.rng.permutation(len(x)) if shuffle else np.arange(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i: int):
        idx = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        xb = self.x[idx]
        rng = np.random.default_rng([self.seed, self.epoch, i])  # same order, same draws
        if self.framing is not None or self.intensity is not None:
            xb = augment_batch(xb, rng, self.framing, self.intensity)
        if self.degrade is not None:
            xb = degrade_batch(xb, rng, self.degrade)
        xb = xb.astype(np.float32)[..., None]
        if self.w is None:
            return xb, self.y[idx]
        return xb, self.y[idx], self.w[idx]

    def on_epoch_end(self) -> None:
        self.epoch += 1
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
        layer = optional_layer(model, name)
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
    model = build_network(s, resolved, augment=True)
    train = _Batches(x_train, y_train, s["batch_size"], True, s["seed"],
                     _class_weights(y_train, s["class_weight"]), degrade=s["augmentation"])
    val = None if x_val is None else _Batches(x_val, y_val, s["batch_size"], False, 0)
    skip_net = s["head"] == "lightgbm" and s["fine_tune"] == "none" \
        and s["backbone"] not in SCRATCH_BACKBONES
    history = {} if skip_net else _train_network(model, s, train, val)
    pred = CnnPredictor(model, s, history=history, weights_info=weights_info(resolved, s))
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
