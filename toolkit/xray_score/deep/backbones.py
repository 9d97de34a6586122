"""Keras backbones, their ImageNet weight files, and serializable preprocessing layers.

TensorFlow-bound: never import this module (or :mod:`xray_score.deep.network`) from worker
code.

- :func:`resolve_weights` turns ``None``/"none", "imagenet", a file or a directory (or the
  ``XRAY_SCORE_WEIGHTS`` environment variable) into what ``keras.applications`` accepts, and
  refuses a known weights file whose sha256 does not match.
- :func:`build_backbone` builds any ``keras.applications`` network without its top
  (``include_top=False``, no pooling), or one of two from-scratch networks reproduced from public
  notebooks: ``five_block_cnn`` and ``dense_mlp``.
- :func:`preprocessing_layers` expresses each backbone's own ``preprocess_input`` as plain
  serializable layers (no ``Lambda``), so saved models load with ``safe_mode=True``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..quiet import native_stderr_muted

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

with native_stderr_muted():  # TensorFlow's C++ banners, when the CLI asks for quiet
    import keras

from ..errors import UsageError  # noqa: E402
from ..hashing import sha256_file  # noqa: E402

log = logging.getLogger(__name__)

WEIGHTS_ENV = "XRAY_SCORE_WEIGHTS"
SCRATCH_BACKBONES = ("five_block_cnn", "dense_mlp")

# sha256 of the no-top ImageNet files Keras itself downloads (see ../shared/weights/SHA256SUMS).
KNOWN_WEIGHTS_SHA256: dict[str, str] = {
    "mobilenet_2_5_224_tf_no_top.h5":
        "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf",
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5":
        "df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f",
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5":
        "279052de2cfa801003aa6cc25cc4d007d35dd0b76f06935268c79788b7642d05",
}

# No-top file names of other applications (looked up in a weights directory; not checksummed).
_NOTOP_FILES: dict[str, str] = {
    "VGG16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "VGG19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "ResNet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "Xception": "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "InceptionV3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "InceptionResNetV2": "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "DenseNet121": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "EfficientNetB0": "efficientnetb0_notop.h5",
}

# keras.applications module -> preprocess_input mode.
_PREPROCESS_MODE: dict[str, str] = {
    "mobilenet": "tf", "mobilenet_v2": "tf", "inception_v3": "tf", "inception_resnet_v2": "tf",
    "xception": "tf", "nasnet": "tf", "resnet_v2": "tf",
    "resnet": "caffe", "vgg16": "caffe", "vgg19": "caffe",
    "densenet": "torch",
    "efficientnet": "none", "efficientnet_v2": "none", "convnext": "none", "regnet": "none",
    "mobilenet_v3": "none",
}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def quiet_tensorflow() -> None:
    """Lower TF/absl log verbosity; Python's warnings filters are left alone."""
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with TF
        pass


def known_weight_names(name: str, alpha: float | None) -> list[str]:
    """File names Keras uses for ``name`` (+ ``alpha``) no-top ImageNet weights, 224 first."""
    rows = (224, 192, 160, 128, 96)
    if name == "MobileNetV2":
        a = str(float(alpha if alpha is not None else 1.0))
        return [f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{a}_{r}_no_top.h5" for r in rows]
    if name == "MobileNet":
        a = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}.get(
            float(alpha if alpha is not None else 1.0), "1_0")
        return [f"mobilenet_{a}_{r}_tf_no_top.h5" for r in rows]
    return [_NOTOP_FILES[name]] if name in _NOTOP_FILES else []


def verify_weights_file(path: str | Path) -> str:
    """Return the file's sha256; raise UsageError if a known file name has another checksum."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"weights file not found: {p}")
    digest = sha256_file(p)
    expected = KNOWN_WEIGHTS_SHA256.get(p.name)
    if expected is not None and digest != expected:
        raise UsageError(
            f"weights file {p} has sha256 {digest}, expected {expected} for {p.name}: "
            "the file is corrupt or not the Keras ImageNet release")
    if expected is None:
        log.info("weights file %s (not in the known table) sha256=%s", p, digest)
    return digest


def resolve_weights(
    weights: str | Path | None, name: str, alpha: float | None = None
) -> str | None:
    """Resolve a weights option into ``None``, ``"imagenet"`` or a verified file path.

    ``weights`` may be None/"none" (random init), "imagenet" (Keras downloads; needs internet),
    a file, or a directory holding Keras's no-top file for ``name``/``alpha``. When ``weights`` is
    None the ``XRAY_SCORE_WEIGHTS`` environment variable (file or directory) is used if set.
    """
    if name in SCRATCH_BACKBONES:
        return None
    if weights is None:
        weights = os.environ.get(WEIGHTS_ENV) or None
        if weights is None:
            return None
    text = str(weights)
    if text.lower() == "none" or not text:
        return None
    if text == "imagenet":
        return "imagenet"
    p = Path(text).expanduser()
    if p.is_dir():
        for fname in known_weight_names(name, alpha):
            if (p / fname).is_file():
                p = p / fname
                break
        else:
            raise UsageError(
                f"no weights file for {name} (alpha={alpha}) in {p}; expected one of "
                f"{known_weight_names(name, alpha) or '(no known file name)'}")
    verify_weights_file(p)
    return str(p)


# ---------------------------------------------------------------- serializable custom layers


@keras.saving.register_keras_serializable(package="xray_score")
class DarkPixelsToZero(keras.layers.Layer):
    """Set pixels below ``threshold`` (0..255 scale) to 0, as the public notebooks did.

    With ``training_only=False`` (default) it is deterministic preprocessing applied at both
    training and inference time, so scoring sees what training saw.
    """

    def __init__(self, threshold: float = 25.0, training_only: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self.training_only = bool(training_only)

    def call(self, inputs, training=None):
        if self.training_only and not training:
            return inputs
        return keras.ops.where(inputs < self.threshold, keras.ops.zeros_like(inputs), inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold,
                "training_only": self.training_only}


@keras.saving.register_keras_serializable(package="xray_score")
class GrayToRGB(keras.layers.Layer):
    """Repeat a single gray channel into three."""

    def call(self, inputs):
        return keras.ops.repeat(inputs, 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


# ---------------------------------------------------------------- backbones


def _application(name: str):
    fn = getattr(keras.applications, name, None)
    if fn is None or not callable(fn):
        raise UsageError(f"unknown backbone {name!r}: not a keras.applications network "
                         f"nor one of {SCRATCH_BACKBONES}")
    return fn


def preprocess_mode(name: str) -> str:
    """'tf' | 'caffe' | 'torch' | 'none' (preprocessing inside the net) | 'scratch'."""
    if name in SCRATCH_BACKBONES:
        return "scratch"
    module = _application(name).__module__.rsplit(".", 1)[-1]
    if module not in _PREPROCESS_MODE:
        raise UsageError(f"backbone {name!r}: unknown preprocessing for module {module}")
    return _PREPROCESS_MODE[module]


def preprocessing_layers(name: str) -> list[keras.layers.Layer]:
    """Layers mapping a (S, S, 1) 0..255 gray tensor to the backbone's expected input."""
    mode = preprocess_mode(name)
    if mode == "scratch":
        return [keras.layers.Rescaling(1.0 / 255.0, name="rescale")]
    layers: list[keras.layers.Layer] = [GrayToRGB(name="gray_to_rgb")]
    if mode == "tf":
        layers.append(keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale"))
    elif mode == "caffe":  # RGB->BGR is a no-op on replicated gray; subtract BGR means
        layers.append(keras.layers.Normalization(
            mean=list(_CAFFE_MEAN_BGR), variance=[1.0, 1.0, 1.0], name="caffe_mean"))
    elif mode == "torch":
        layers.append(keras.layers.Normalization(
            mean=[m * 255.0 for m in _TORCH_MEAN],
            variance=[(s * 255.0) ** 2 for s in _TORCH_STD], name="torch_norm"))
    return layers


def five_block_cnn(input_size: int, filters: tuple[int, ...] = (16, 32, 64, 128, 256),
                   block_dropout: float = 0.2) -> keras.Model:
    """From-scratch CNN of the public notebooks: 5 x (2 Conv2D + BatchNorm + MaxPool).

    Input (S, S, 1) scaled 0..1; output the last feature map. Dropout after blocks 4 and 5.
    """
    inp = keras.Input((input_size, input_size, 1), name="scratch_input")
    x = inp
    for i, f in enumerate(filters, start=1):
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"b{i}_conv1")(x)
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"b{i}_conv2")(x)
        x = keras.layers.BatchNormalization(name=f"b{i}_bn")(x)
        x = keras.layers.MaxPooling2D(2, name=f"b{i}_pool")(x)
        if i >= len(filters) - 1 and block_dropout > 0:
            x = keras.layers.Dropout(block_dropout, name=f"b{i}_dropout")(x)
    return keras.Model(inp, x, name="five_block_cnn")


def dense_mlp(input_size: int, pixels: int = 32, units: tuple[int, ...] = (256, 64),
              dropout: float = 0.2) -> keras.Model:
    """Dense network on area-downsampled pixels (``pixels`` x ``pixels``), as in the notebooks."""
    inp = keras.Input((input_size, input_size, 1), name="scratch_input")
    pool = max(1, input_size // pixels)
    x = keras.layers.AveragePooling2D(pool, name="downsample")(inp) if pool > 1 else inp
    x = keras.layers.Flatten(name="flatten")(x)
    for i, u in enumerate(units, start=1):
        x = keras.layers.Dense(u, activation="relu", name=f"dense{i}")(x)
        if dropout > 0 and i < len(units):
            x = keras.layers.Dropout(dropout, name=f"dense{i}_dropout")(x)
    return keras.Model(inp, x, name="dense_mlp")


def build_backbone(name: str, input_size: int, alpha: float | None = None,
                   weights: str | None = None, **scratch_args: Any) -> keras.Model:
    """Build a headless backbone. ``weights`` must already be resolved (:func:`resolve_weights`).

    keras.applications networks take (S, S, 3) input in their own preprocessing convention;
    the scratch networks take (S, S, 1) scaled 0..1. Pooling is left to the caller.
    """
    if name == "five_block_cnn":
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in scratch_args.items()}
        return five_block_cnn(input_size, **args)
    if name == "dense_mlp":
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in scratch_args.items()}
        return dense_mlp(input_size, **args)
    if scratch_args:
        raise UsageError(f"backbone_args {sorted(scratch_args)} apply to scratch networks only")
    kwargs: dict[str, Any] = {"include_top": False, "weights": weights, "pooling": None,
                              "input_shape": (input_size, input_size, 3)}
    if alpha is not None:
        kwargs["alpha"] = alpha
    try:
        return _application(name)(**kwargs)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cannot build {name} (alpha={alpha}, size={input_size}): {exc}") from exc
