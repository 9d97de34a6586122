"""Writing a trained CNN into a bundle folder: the Keras network without augmentation layers,
its checked TFLite twin, or only the head when the backbone is an unchanged download."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BundleError

if TYPE_CHECKING:
    import keras

TFLITE_FILE = "model.tflite"


def inference_model(pred: Any) -> keras.Model:
    """The trained network without augmentation layers (what is stored in bundles)."""
    from .network import build_network

    if not any(layer.name.startswith("aug_") for layer in pred.model.layers):
        return pred.model
    clean = build_network(pred.spec, None, augment=False)
    for layer in clean.layers:
        if layer.weights:
            layer.set_weights(pred.model.get_layer(layer.name).get_weights())
    return clean

def top_model(pred: Any) -> keras.Model:
    from .network import keras, optional_layer

    inp = keras.Input((pred.embedding_dim,), name="embedding_in")
    x = inp
    for name in ("hidden", "dropout", "head"):
        src = optional_layer(pred.model, name)
        if src is None:
            continue
        layer = src.__class__.from_config(src.get_config())
        x = layer(x)
        layer.set_weights(src.get_weights())
    return keras.Model(inp, x, name="head_top")

def save_predictor(pred: Any, d: Path) -> tuple[dict[str, Any], list[str]]:
    """Write model files into ``directory``; return (extra bundle.json keys, file names)."""
    d.mkdir(parents=True, exist_ok=True)
    head_only = not pred.fine_tuned and pred.weights_info is not None
    files: list[str] = []
    lite_meta = None
    if not head_only:
        network = inference_model(pred)
        network.save(d / "model.keras")
        files.append("model.keras")
        if pred.spec.get("tflite", True):
            lite_meta = save_tflite(pred, network, d / TFLITE_FILE)
            files.append(TFLITE_FILE)
    elif pred.head == "logistic":
        top_model(pred).save(d / "head.keras")
        files.append("head.keras")
    if pred.head == "lightgbm":
        pred.booster.save_model(str(d / "lightgbm.txt"))
        files.append("lightgbm.txt")
    wi = pred.weights_info or {}
    meta = {
        "history": _json_safe(pred.history),
        "backbone": {"name": pred.spec["backbone"], "alpha": pred.spec["alpha"],
                     "weights_file": wi.get("file"), "weights_sha256": wi.get("sha256"),
                     "fine_tuned": pred.fine_tuned, "stored_in_bundle": not head_only},
        "cnn": {"storage": "head_only" if head_only else "full", "head": pred.head,
                "input_size": pred.input_size, "spec": _json_safe(pred.spec),
                "embedding_dim": pred.embedding_dim, "tflite": lite_meta},
    }
    return meta, files

def save_tflite(pred: Any, network: keras.Model, path: Path) -> dict[str, Any]:
    """Convert, check against Keras, write; from now on this predictor runs the TFLite
    network (as a loaded bundle will), so validation scores come from the same runtime."""
    from .lite import TOLERANCE, LiteNetwork, convert, max_difference

    blob = convert(network)
    lite = LiteNetwork(blob)
    diff = max_difference(network, lite, pred.input_size)
    if not diff <= TOLERANCE:
        raise BundleError(f"the TFLite network differs from Keras by {diff:.3g} "
                          f"(> {TOLERANCE}); set 'tflite: false' in the pipeline's model")
    path.write_bytes(blob)
    pred.lite = lite
    return {"file": path.name, "max_abs_diff_vs_keras": diff, "runtime": lite.runtime}


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
