"""The honest operating point: fitted on some validation patients, measured on the others.

Validation films share the training films' hospital and framing, so scores on them are
optimistic. The validation patients are split in two (by patient, per class):

- the **calibration** half, as the films are and re-framed (:mod:`xray_score.io.reframe`,
  both classes alike), fits the calibration and the operating threshold, and is what a kind
  may use to stop training early;
- the **check** half is never fitted on: the bundle's validation metrics, the framing-shift
  check and the calibration error on re-framed films are measured there.

``validation.calibration_share`` (default 0.5) sets the split; 1 uses every validation patient
for both (the check is then not independent, and ``validation_split`` says so).
``validation.reframed`` (default true) adds the re-framed copies to the calibration half.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..batch.parallel import TaskFailure, resilient_map
from ..errors import UsageError
from ..io.datasets import patient_split
from ..io.decode import MAX_PIXELS
from ..io.reframe import REFRAMINGS, ReframedPreprocessor
from ..labels import CLASS_NAMES
from .calibration import choose_threshold, fit_calibration
from .decision import OperatingPoint

log = logging.getLogger(__name__)

CROPS = tuple(n for n in REFRAMINGS if n != "reencoded")  # what calibration sees re-framed
ORIGINAL = "original"


def split_validation(val_df: pd.DataFrame, spec: dict[str, Any]
                     ) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """(calibration, check, independent): validation patients split per class."""
    cfg = spec.get("validation") or {}
    share = float(cfg.get("calibration_share", 0.5))
    if not 0 < share <= 1:
        raise UsageError("validation.calibration_share must be in (0, 1]")
    if share < 1:
        cal, check = patient_split(val_df, 1 - share, int(cfg.get("seed", 0)) + 1)
        if cal["label"].nunique() == 2 and check["label"].nunique() == 2:
            log.info("operating point fitted on %d validation patients, checked on %d others",
                     cal["patient_id"].nunique(), check["patient_id"].nunique())
            return cal, check, True
        log.warning("too few validation patients to split in two with both classes on each "
                    "side: calibration and check use the same films (not independent)")
    return val_df, val_df, False


@dataclass
class Variants:
    """Each validation film's model inputs: as it is, then re-framed (``names``)."""

    xs: list[tuple[Any, ...]]
    y: np.ndarray
    paths: list[str]
    names: tuple[str, ...]

    def stacked(self, preprocessor: Any, names: tuple[str, ...] | None = None
                ) -> tuple[Any, np.ndarray]:
        """One batch input holding the chosen variants of every film, and their labels."""
        picks = [self.names.index(n) for n in (names or self.names)]
        flat = [x[i] for i in picks for x in self.xs]
        return preprocessor.stack(flat), np.tile(self.y, len(picks))


def load_variants(df: pd.DataFrame, preprocessor: Any, spec: dict[str, Any],
                  names: tuple[str, ...], n_jobs: int = 2) -> Variants:
    """Read, decode and re-frame validation films in parallel (bad files are left out)."""
    max_pixels = int((spec.get("decode") or {}).get("max_pixels", MAX_PIXELS))
    task = ReframedPreprocessor(preprocessor, tuple(REFRAMINGS[n] for n in names), max_pixels)
    found: dict[int, tuple[Any, ...]] = {}
    for index, path, outcome in resilient_map(task, df["path"].tolist(), n_jobs=n_jobs):
        if isinstance(outcome, TaskFailure) or not outcome.ok:
            log.warning("validation file %s left out: %s", path,
                        outcome.message if isinstance(outcome, TaskFailure) else outcome.error)
            continue
        found[index] = outcome.x
    keep = sorted(found)
    if not keep:
        raise UsageError("no usable validation images")
    return Variants([found[i] for i in keep], df["label"].to_numpy()[keep],
                    [df["path"].iloc[i] for i in keep], (ORIGINAL, *names))


def fit_operating_point(model: Any, preprocessor: Any, cal: Variants, spec: dict[str, Any]
                        ) -> tuple[OperatingPoint, dict[str, Any], dict[str, Any]]:
    """Calibration and threshold fitted on the calibration films (and their re-framings)."""
    x, y = cal.stacked(preprocessor)
    raw = model.predict_raw(x)
    ccfg = spec["calibration"]
    calibration = fit_calibration(raw, y, ccfg.get("method", "platt"),
                                  **{k: v for k, v in ccfg.items() if k != "method"})
    p = OperatingPoint(calibration, 0.5).probability(raw)
    tcfg = spec["threshold"]
    threshold = choose_threshold(p, y, tcfg.get("policy", "sensitivity"),
                                 float(tcfg.get("target", 0.95)), float(tcfg.get("value", 0.5)))
    threshold["chosen_on"] = ("calibration half of validation"
                              + (", as is and re-framed" if len(cal.names) > 1 else ""))
    threshold["n_images"] = int(len(y))
    return OperatingPoint(calibration, threshold["value"]), calibration, threshold


def check_scores(model: Any, preprocessor: Any, op: OperatingPoint, check: Variants
                 ) -> pd.DataFrame:
    """Calibrated scores of the check films, per variant (``framing_summary``'s input)."""
    frames = []
    for name in check.names:
        x, y = check.stacked(preprocessor, (name,))
        p = op.probability(model.predict_raw(x))
        frames.append(pd.DataFrame({"path": check.paths, "variant": name, "p_pneumonia": p,
                                    "true_label": [CLASS_NAMES[int(v)] for v in y]}))
    return pd.concat(frames, ignore_index=True)
