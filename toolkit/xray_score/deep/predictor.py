"""A trained CNN: prediction and embeddings on canonical images, bundle storage and loading.

``predict_raw``/``embed`` run either the Keras network or, when the bundle carries one, its
TFLite twin (:mod:`xray_score.deep.lite`): ``engine="auto"`` picks TFLite when present. Which one
runs is ``CnnPredictor.engine``; training fits calibration and threshold on the engine the
bundle will be scored with.

Importing this module does not import TensorFlow, and neither does scoring a bundle with a
TFLite twin: the Keras network is loaded on first use of ``CnnPredictor.model`` (Grad-CAM,
``engine="keras"``, training). That saves about 8 s and 0.8 GB per scoring process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BundleError, UsageError
from ..model.domain import image_statistics
from .lite import ENGINES
from .spec import normalize_spec
from .weights import weights_for_load

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)
_CHUNK = 32


class CnnPredictor:
    """A trained CNN: ``predict_raw``/``embed`` on uint8 (N, S, S) batches, save/load.

    ``predict_raw`` returns uncalibrated probabilities (network sigmoid or LightGBM). With
    ``lite`` (a :class:`~xray_score.deep.lite.LiteNetwork` of the same network) both run on TFLite;
    ``model`` (Keras) stays available for Grad-CAM and training: given, or built on first use
    by ``model_loader``.
    """

    def __init__(self, model: keras.Model | None, spec: dict[str, Any], booster: Any = None,
                 history: dict | None = None, weights_info: dict | None = None,
                 lite: Any = None, model_loader: Callable[[], keras.Model] | None = None,
                 embedding_dim: int | None = None) -> None:
        if model is None and model_loader is None:
            raise UsageError("CnnPredictor needs a Keras model or a way to load one")
        self._model, self._model_loader, self._embedder = model, model_loader, None
        self._embedding_dim, self.lite = embedding_dim, lite
        self.spec, self.booster, self.weights_info = spec, booster, weights_info
        self.history = history or {}
        self.input_size = int(spec["input_size"])
        self.domain: Any = None  # the bundle's DomainModel, when it has one

    @property
    def model(self) -> keras.Model:
        """The Keras network (loaded now if this predictor started without it)."""
        if self._model is None:
            assert self._model_loader is not None
            self._model = self._model_loader()
        return self._model

    @property
    def embedding_dim(self) -> int:
        if self._embedding_dim is None:
            self._embedding_dim = int(self.model.get_layer("embedding").output.shape[-1])
        return self._embedding_dim

    @property
    def head(self) -> str:
        return self.spec["head"]

    @property
    def engine(self) -> str:
        """The runtime of ``predict_raw``/``embed``: "tflite" or "keras"."""
        return "keras" if self.lite is None else "tflite"

    @property
    def runtime(self) -> str:
        """What runs the network, for logs and reports (library and threads)."""
        if self.lite is None:
            import keras

            return f"keras {keras.__version__} (TensorFlow)"
        n = self.lite.threads
        return f"TFLite via {self.lite.runtime} with XNNPACK, {n} thread{'s' * (n != 1)}"

    @property
    def fine_tuned(self) -> bool:
        from .backbones import SCRATCH_BACKBONES

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
            if n < _CHUNK and len(batch) > _CHUNK and self.lite is None:  # one traced shape
                # for Keras; TFLite takes any batch size (padding would waste its compute)
                chunk = np.concatenate([chunk, np.zeros((_CHUNK - n, *chunk.shape[1:]),
                                                        np.float32)])
            yield chunk, n

    def _run(self, batch: np.ndarray, output: str) -> list[np.ndarray]:
        """One network output ("embedding" | "probability") per chunk of ``batch``."""
        if self.lite is not None:
            return [self.lite.run(xb)[output][:n] for xb, n in self._batches(batch)]
        if output == "probability":
            network = self.model
        else:
            import keras

            if self._embedder is None:
                self._embedder = keras.Model(self.model.inputs,
                                             self.model.get_layer("embedding").output)
            network = self._embedder
        return [np.asarray(network.predict_on_batch(xb))[:n] for xb, n in self._batches(batch)]

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embedding (N, D): the backbone's global-average-pooled features."""
        parts = self._run(batch, "embedding")
        return (np.concatenate(parts) if parts
                else np.zeros((0, self.embedding_dim), np.float32))

    def predict_raw(self, batch: np.ndarray) -> np.ndarray:
        """(N,) probability of PNEUMONIA before calibration."""
        if self.head == "lightgbm":
            emb = self.embed(batch)
            return np.asarray(self.booster.predict(emb), float) if len(emb) else np.zeros(0)
        parts = [p.reshape(-1) for p in self._run(batch, "probability")]
        return np.concatenate(parts).astype(float) if parts else np.zeros(0)

    def heatmap(self, pixels: np.ndarray) -> np.ndarray | None:
        """Grad-CAM evidence for PNEUMONIA over one canonical image (logistic heads only)."""
        if self.head != "logistic":
            return None
        from .gradcam import grad_cam

        return grad_cam(self.model, pixels)

    # -- storage

    def save(self, directory: str | Path) -> tuple[dict[str, Any], list[str]]:
        """Write model files into ``directory``; return (extra bundle.json keys, file names)."""
        from .storage import save_predictor

        return save_predictor(self, Path(directory))

    def predict_with_domain(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw probabilities and domain scores from one pass of the network."""
        if self.domain is None:
            return self.predict_raw(batch), None
        if self.lite is not None and self.head == "logistic":
            chunks = [(self.lite.run(xb), n) for xb, n in self._batches(batch)]
            if not chunks:
                return np.zeros(0), np.zeros(0)
            raw = np.concatenate([o["probability"][:n].reshape(-1) for o, n in chunks])
            emb = np.concatenate([o["embedding"][:n] for o, n in chunks])
        else:
            raw, emb = self.predict_raw(batch), self.embed(batch)
        features = np.concatenate([emb, image_statistics(batch)], axis=1)
        return raw.astype(float), self.domain.score(features)

    @classmethod
    def load(cls, source: str | Path | Any, meta: dict[str, Any],
             weights: str | Path | None = None, engine: str = "auto",
             threads: int | None = None) -> CnnPredictor:
        """Rebuild from ``save`` output; head-only bundles need the referenced weights file.

        ``source``: a verified :class:`~xray_score.model.bundle.Bundle` (files are read only
        when bundle.json lists them, checksums verified), or the folder ``save`` wrote.
        ``engine``: "auto" runs the bundle's TFLite network when it has one, else Keras;
        "keras" always Keras; "tflite" the stored network, or one converted now (slow start).
        ``threads``: the network's threads (default :func:`~xray_score.deep.lite.network_threads`).
        """
        if engine not in ENGINES:
            raise UsageError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        d = source if hasattr(source, "file") else _Folder(Path(source))
        try:
            cm, bm = meta["cnn"], meta["backbone"]
            spec = normalize_spec(cm["spec"])
        except (KeyError, TypeError) as exc:
            raise BundleError(f"bundle.json lacks cnn/backbone keys: {exc}") from exc
        booster = None
        if cm["head"] == "lightgbm":
            from ..classical.native import load_booster

            booster = load_booster(d.read("lightgbm.txt"))
        info = {"file": bm.get("weights_file"), "sha256": bm.get("weights_sha256")}
        common = {"history": meta.get("history") or cm.get("history"),
                  "weights_info": info if info["sha256"] else None}
        stored = cm.get("tflite")
        if engine != "keras" and stored and cm["storage"] == "full":  # no TensorFlow needed
            from .lite import LiteNetwork

            pred = cls(None, spec, booster, **common,
                       lite=LiteNetwork(d.read(stored["file"]), threads),
                       model_loader=lambda: _load_keras(d, cm, bm, spec, weights, threads),
                       embedding_dim=cm.get("embedding_dim"))
        else:
            model = _load_keras(d, cm, bm, spec, weights, threads)
            lite = None
            if engine == "tflite":
                from .lite import LiteNetwork, convert

                log.info("bundle has no TFLite network; converting the Keras one now")
                lite = LiteNetwork(convert(model), threads)
            pred = cls(model, spec, booster, **common, lite=lite)
        log.info("CNN %s runs on %s", spec["backbone"], pred.runtime)
        return pred


class _Folder:
    """Files of a folder ``save`` just wrote (plain names only, nothing outside it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def file(self, name: str) -> Path:
        if Path(name).name != name or name in ("", ".", ".."):
            raise BundleError(f"{self.path}: refusing file name {name!r}")
        return self.path / name

    def read(self, name: str) -> bytes:
        return self.file(name).read_bytes()


def _load_keras(d: Any, cm: dict[str, Any], bm: dict[str, Any], spec: dict[str, Any],
                weights: str | Path | None, threads: int | None = None) -> keras.Model:
    """The bundle's Keras network (imports TensorFlow); head-only bundles need the weights."""
    from .network import build_network, keras, set_tf_threads

    set_tf_threads(threads)
    if cm["storage"] == "full":
        return keras.models.load_model(d.file("model.keras"), safe_mode=True, compile=False)
    model = build_network(spec, weights_for_load(bm, weights), augment=False)
    if cm["head"] == "logistic":
        top = keras.models.load_model(d.file("head.keras"), safe_mode=True, compile=False)
        for layer in top.layers:
            if layer.weights:
                model.get_layer(layer.name).set_weights(layer.get_weights())
    return model
