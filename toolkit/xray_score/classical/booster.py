"""LightGBM on HOG/LBP features: fitting, prediction, storage as LightGBM text."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODEL_FILE = "model.lgb.txt"
# The LightGBM parameters a pipeline's ``model`` section may set (``n_estimators``: the most
# boosting rounds; early stopping picks fewer). Others are refused, so a typo is not ignored.
LIGHTGBM_KEYS = frozenset({
    "n_estimators", "objective", "boosting", "learning_rate", "num_leaves", "max_depth",
    "min_data_in_leaf", "min_sum_hessian_in_leaf", "bagging_fraction", "bagging_freq",
    "feature_fraction", "feature_fraction_bynode", "lambda_l1", "lambda_l2",
    "min_gain_to_split", "max_bin", "extra_trees", "path_smooth", "max_delta_step", "metric",
    "verbosity", "deterministic", "force_col_wise", "linear_tree", "drop_rate",
})
_DEFAULT_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "metric": ["auc", "binary_logloss"],
    "verbosity": -1,
    "deterministic": True,
    "force_col_wise": True,
}


@dataclass
class BaselinePredictor:
    """A LightGBM booster on HOG/LBP features; ``predict_raw`` runs in the main process."""

    booster: Any
    spec: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    training_rows: int | None = None  # feature rows fitted on (films + re-framed copies)
    domain: Any = None  # the bundle's DomainModel, when it has one

    @property
    def input_size(self) -> int:
        return int(self.spec["input_size"])

    @property
    def runtime(self) -> str:
        from .native import lightgbm_version

        return f"LightGBM {lightgbm_version()}, 1 thread"

    def predict_raw(self, batch: np.ndarray) -> np.ndarray:
        # one thread: the cores belong to the decode workers; OpenMP spinning would steal them
        return np.asarray(self.booster.predict(np.asarray(batch, dtype=np.float32),
                                               num_threads=1), dtype=np.float64)

    def predict_with_domain(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw probabilities and domain scores (on the same HOG/LBP features)."""
        raw = self.predict_raw(batch)
        return raw, None if self.domain is None else self.domain.score(batch)

    def save(self, folder: Path) -> tuple[dict[str, Any], list[str]]:
        self.booster.save_model(str(folder / MODEL_FILE))
        extra = {
            "model_file": MODEL_FILE,
            "best_iteration": int(self.booster.best_iteration or self.booster.num_trees()),
            "history": self.history,
            "training_rows": self.training_rows,
        }
        return extra, [MODEL_FILE]

    @classmethod
    def load(cls, bundle: Any) -> BaselinePredictor:
        from .native import load_booster

        booster = load_booster(bundle.read(bundle.meta["model_file"]))
        return cls(booster=booster, spec=bundle.meta["pipeline"], history=bundle.history)


def fit_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                 y_val: np.ndarray, spec: dict[str, Any]) -> BaselinePredictor:
    """Train LightGBM with class weighting and early stopping on the validation AUC."""
    import lightgbm as lgb

    training = spec.get("training") or {}
    seed = int(training.get("seed", 0))
    params = {**_DEFAULT_PARAMS, **(spec.get("model") or {}), "seed": seed,
              "num_threads": int(training.get("threads", 0))}
    rounds = int(params.pop("n_estimators", 2000))
    weights = _class_weights(y_train, training.get("class_weight", "balanced"))
    train_set = lgb.Dataset(x_train, label=y_train, weight=weights, free_raw_data=True)
    val_set = lgb.Dataset(x_val, label=y_val, reference=train_set)
    history: dict[str, dict[str, list[float]]] = {}
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=rounds,
        valid_sets=[train_set, val_set],
        valid_names=["train", "val"],
        callbacks=[
            lgb.early_stopping(int(training.get("early_stopping_rounds", 100)),
                               first_metric_only=True, verbose=False),
            lgb.record_evaluation(history),
            lgb.log_evaluation(period=0),
        ],
    )
    log.info("LightGBM stopped at %d rounds (best %d)", booster.current_iteration(),
             booster.best_iteration)
    flat = {f"{name}_{metric}": [float(v) for v in values]
            for name, metrics in history.items() for metric, values in metrics.items()}
    return BaselinePredictor(booster=booster, spec=spec, history=flat,
                             training_rows=int(len(x_train)))


def _class_weights(y: np.ndarray, policy: str | None) -> np.ndarray | None:
    if policy in (None, "none"):
        return None
    if policy != "balanced":
        raise ValueError(f"unknown class_weight {policy!r} (balanced, none)")
    counts = np.bincount(y, minlength=2).astype(np.float64)
    per_class = len(y) / (2 * np.maximum(counts, 1))
    return per_class[y]
