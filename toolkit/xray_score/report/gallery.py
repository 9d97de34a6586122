"""Thumbnails for the reports' gallery of the most confident mistakes (with heatmaps when the
model can draw them)."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
import pandas as pd

from ..io.decode import MAX_PIXELS
from ..io.preprocess import Preprocessor
from ..labels import CLASS_NAMES, to_binary
from ..model.decision import decide, margin
from ..model.kinds import Explainer

log = logging.getLogger(__name__)
LABEL_COLUMN = "true_label"


def thumbnails_for(df: pd.DataFrame, bundle: Any, predictor: Any, n: int = 8,
                   size: int = 160) -> list[dict[str, Any]]:
    """Thumbnails of the most confident errors (heatmap overlays from explaining models)."""
    pixels_of = canonical_pixels(bundle)
    explains = isinstance(predictor, Explainer)
    out = []
    for _, row in most_confident_errors(df, bundle.threshold, n).iterrows():
        result = pixels_of(row["path"])
        if not result.ok:
            continue
        pixels = result.x
        thumb = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)
        item = {"path": row["path"], "p": float(row["p_pneumonia"]),
                "true_label": row[LABEL_COLUMN], "predicted_label": row["predicted_label"],
                "png_bytes": cv2.imencode(".png", thumb)[1].tobytes()}
        if explains:
            try:
                heat = predictor.heatmap(pixels)
                if heat is not None:
                    item["overlay_png_bytes"] = _overlay(pixels, heat, size)
            except Exception as exc:  # noqa: BLE001 - a report without one overlay is fine
                log.warning("no heatmap for %s: %s", row["path"], exc)
        out.append(item)
    return out


def out_of_domain_thumbnails(df: pd.DataFrame, bundle: Any, n: int = 12, size: int = 120
                             ) -> list[dict[str, Any]]:
    """Thumbnails of the rows flagged out of domain, farthest first."""
    if "in_domain" not in df:
        return []
    odd = df[df["in_domain"].astype(str).eq("false")].sort_values("domain_score",
                                                                   ascending=False)
    pixels_of = canonical_pixels(bundle)
    out = []
    for _, row in odd.head(n).iterrows():
        result = pixels_of(row["path"])
        if not result.ok:
            continue
        thumb = cv2.resize(result.x, (size, size), interpolation=cv2.INTER_AREA)
        out.append({"path": row["path"], "p": float(row["p_pneumonia"]),
                    "domain_score": float(row["domain_score"]),
                    "png_bytes": cv2.imencode(".png", thumb)[1].tobytes()})
    return out


def most_confident_errors(df: pd.DataFrame, threshold: float, n: int) -> pd.DataFrame:
    """The ``n`` wrongly decided rows farthest from the threshold on the logit scale (with a
    threshold of 0.92, p = 0.95 for a normal film is a near miss, p = 0.2 for pneumonia is
    not)."""
    ok = df[(df["status"] == "ok") & df[LABEL_COLUMN].isin(CLASS_NAMES)]
    if ok.empty:
        return ok
    p = ok["p_pneumonia"].to_numpy(float)
    wrong = ok[decide(p, threshold).astype(int) != to_binary(ok[LABEL_COLUMN])]
    distance = np.abs(margin(wrong["p_pneumonia"].to_numpy(float), threshold))
    return wrong.iloc[np.argsort(-distance, kind="stable")[:n]]


def canonical_pixels(bundle: Any) -> Preprocessor:
    """Decode + resize only, with the bundle's decode settings (the images the model saw)."""
    decode = (bundle.meta.get("pipeline") or {}).get("decode") or {}
    return Preprocessor(size=bundle.input_size, jpeg_draft=bool(decode.get("jpeg_draft")),
                        max_pixels=int(decode.get("max_pixels", MAX_PIXELS)))


def _overlay(pixels: np.ndarray, heat: np.ndarray, size: int) -> bytes:
    color = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    base = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    overlay = cv2.addWeighted(base, 0.6, color, 0.4, 0)
    overlay = cv2.resize(overlay, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".png", overlay)[1].tobytes()
