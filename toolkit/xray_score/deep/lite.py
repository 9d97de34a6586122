"""TFLite (LiteRT) runtime for CNN bundles: the same network as ``model.keras``, run by XNNPACK.

A bundle's ``model.tflite`` is a float32 flatbuffer of the inference network with one signature,
``image`` (N, S, S, 1) float32 in -> ``embedding`` (N, D) and ``probability`` (N, 1) out. It is
converted and checked against the Keras network when the bundle is written; at scoring time it
runs about twice as fast as Keras on two CPU cores (``benchmarks/bench_cnn.py``).

The runtime is ``ai_edge_litert`` when installed (a dependency of xray-score), else TensorFlow's
deprecated ``tf.lite.Interpreter``. Conversion needs TensorFlow; running does not.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from typing import Any

import numpy as np

from ..errors import BundleError
from ..quiet import native_stderr_muted

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"
ENGINES = ("auto", "keras", "tflite")  # CnnPredictor.load(engine=...), the CLI's --engine
TOLERANCE = 1e-4  # largest |keras - tflite| probability difference accepted at conversion


def _interpreter_class() -> tuple[type, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, "tf.lite"


def convert(model: Any) -> bytes:
    """Flatbuffer of a Keras network built by :mod:`xray_score.deep.network` (needs an ``embedding``
    layer); float32, no quantization, so its outputs match Keras to float round-off."""
    import keras
    import tensorflow as tf

    size = tuple(model.inputs[0].shape[1:])
    both = keras.Model(model.inputs, {"embedding": model.get_layer("embedding").output,
                                      "probability": model.outputs[0]})
    archive = keras.export.ExportArchive()
    archive.track(both)
    archive.add_endpoint(SIGNATURE, lambda image: both(image, training=False),
                         input_signature=[tf.TensorSpec((None, *size), tf.float32, name="image")])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xray-score-tflite-") as tmp:
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[SIGNATURE])
        with native_stderr_muted():  # the MLIR converter's C++ log lines, under the CLI
            blob = converter.convert()
    log.info("converted %s to TFLite in %.1f s (%d bytes)", model.name,
             time.perf_counter() - start, len(blob))
    return bytes(blob)


def network_threads() -> int:
    """Threads for the network (TFLite or TensorFlow): ``XRAY_SCORE_TF_THREADS``, else all
    cores."""
    return int(os.environ.get("XRAY_SCORE_TF_THREADS", 0)) or os.cpu_count() or 1


class LiteNetwork:
    """A converted network ready to run: ``run(x)`` -> {"embedding", "probability"}."""

    def __init__(self, content: bytes, threads: int | None = None) -> None:
        threads = threads or network_threads()
        interpreter_cls, self.runtime = _interpreter_class()
        with warnings.catch_warnings(), native_stderr_muted():  # tf.lite's deprecation notice
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            try:
                self._interpreter = interpreter_cls(model_content=content, num_threads=threads)
                self._runner = self._interpreter.get_signature_runner(SIGNATURE)
            except (ValueError, RuntimeError) as exc:
                raise BundleError(f"not a usable xray-score TFLite network: {exc}") from exc
        self.threads = threads
        self._shape: tuple[int, ...] | None = None

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for a float32 (N, S, S, 1) batch (copies: the buffers are reused)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape == self._shape:
            out = self._runner(image=x)
        else:  # (re)allocation applies the XNNPACK delegate, which announces itself on fd 2
            with native_stderr_muted():
                out = self._runner(image=x)
            self._shape = x.shape
        return {k: np.array(v) for k, v in out.items()}


def max_difference(keras_model: Any, network: LiteNetwork, size: int, seed: int = 0) -> float:
    """Largest |Keras - TFLite| probability over a seeded probe batch of 8 images (noise,
    gradients, black and white frames)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    probe = np.stack([rng.uniform(0, 255, (size, size)).astype(np.float32) for _ in range(4)]
                     + [np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)),
                        np.zeros((size, size), np.float32),
                        np.full((size, size), 255, np.float32)])[..., None]
    want = np.asarray(keras_model.predict_on_batch(probe)).reshape(-1)
    got = network.run(probe)["probability"].reshape(-1)
    return float(np.max(np.abs(want - got)))
