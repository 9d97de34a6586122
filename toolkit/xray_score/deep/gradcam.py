"""Grad-CAM heatmaps for CNN bundles with a logistic head (the network's own Dense head)."""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .network import get_backbone, keras, tf


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
