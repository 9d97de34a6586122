"""The framing-shift check: does a model read the lungs or the framing?

Each labeled film is scored as it is and re-framed (:mod:`xray_score.io.reframe`: thorax
crop, tighter, looser, off-centre, and a re-encoded control). Per re-framing and class it
reports the share of films whose decision flips and the mean change of the calibrated logit.
A model that reads the lungs keeps its decisions; one that learned "wide framing = normal"
flags normal films once their neck and shoulders are cropped away.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ..io.decode import MAX_PIXELS
from ..io.reframe import REFRAMINGS, ReframedPreprocessor
from ..model.decision import decide, logit
from .bootstrap import clopper_pearson

ORIGINAL = "original"


def framing_scores(scorer: Any, paths: list[str], labels: dict[str, str] | None = None,
                   names: tuple[str, ...] = tuple(REFRAMINGS)) -> pd.DataFrame:
    """Calibrated scores of each file as it is and re-framed: one row per (file, variant) with
    ``path, true_label, variant, p_pneumonia``; files that cannot be read are left out."""
    decode = (scorer.bundle.meta.get("pipeline") or {}).get("decode") or {}
    pre = ReframedPreprocessor(scorer.preprocessor, tuple(REFRAMINGS[n] for n in names),
                               int(decode.get("max_pixels", MAX_PIXELS)))
    rows: list[dict[str, Any]] = []
    for batch in scorer.iter_batches(paths, pre):
        if not batch[0].ok:
            continue
        for i, variant in enumerate((ORIGINAL, *names)):
            probs = scorer.predict([replace(r, x=r.x[i]) for r in batch])
            rows += [{"path": r.path, "true_label": (labels or {}).get(r.path),
                      "variant": variant, "p_pneumonia": float(p)}
                     for r, p in zip(batch, probs, strict=True)]
    return pd.DataFrame(rows, columns=["path", "true_label", "variant", "p_pneumonia"])


def framing_summary(scores: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per re-framing and class: flagged share as is and re-framed, share of decisions that
    flip, mean |delta logit| and mean delta logit (positive: towards PNEUMONIA)."""
    columns = ["variant", "true_label", "n", "flagged_original", "flagged_reframed",
               "flagged_reframed_lo", "flagged_reframed_hi", "flipped", "mean_abs_dlogit",
               "mean_dlogit"]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    wide = scores.pivot_table(index=["path", "true_label"], columns="variant",
                              values="p_pneumonia", dropna=False).reset_index()
    wide = wide.dropna(subset=[ORIGINAL])
    out = []
    for variant in [v for v in scores["variant"].unique() if v != ORIGINAL]:
        for label, part in wide.dropna(subset=[variant]).groupby("true_label"):
            before, after = part[ORIGINAL].to_numpy(), part[variant].to_numpy()
            flag_b, flag_a = decide(before, threshold), decide(after, threshold)
            delta = logit(after) - logit(before)
            lo, hi = clopper_pearson(int(flag_a.sum()), len(part))
            out.append({"variant": variant, "true_label": label, "n": len(part),
                        "flagged_original": float(flag_b.mean()),
                        "flagged_reframed": float(flag_a.mean()),
                        "flagged_reframed_lo": lo, "flagged_reframed_hi": hi,
                        "flipped": float((flag_b != flag_a).mean()),
                        "mean_abs_dlogit": float(np.abs(delta).mean()),
                        "mean_dlogit": float(delta.mean())})
    return pd.DataFrame(out, columns=columns)


def framing_headline(summary: pd.DataFrame) -> dict[str, Any]:
    """The figures a model card quotes: the thorax crop per class, and the worst re-framing."""
    if summary.empty:
        return {}
    table = summary.set_index(["variant", "true_label"])
    crops = summary[summary["variant"] != "reencoded"]
    normal = crops[crops["true_label"] == "NORMAL"]
    pneumonia = crops[crops["true_label"] == "PNEUMONIA"]

    def pick(key: tuple[str, str]) -> float | None:
        return float(table.loc[key, "flagged_reframed"]) if key in table.index else None

    return {
        "normal_flagged_thorax_crop": pick(("thorax", "NORMAL")),
        "pneumonia_flagged_thorax_crop": pick(("thorax", "PNEUMONIA")),
        "normal_flagged_worst_crop": float(normal["flagged_reframed"].max())
        if len(normal) else None,
        "pneumonia_flagged_worst_crop": float(pneumonia["flagged_reframed"].min())
        if len(pneumonia) else None,
        "mean_abs_dlogit": float(crops["mean_abs_dlogit"].mean()) if len(crops) else None,
    }
