"""Bundles written by an older release keep loading and scoring exactly as they did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xray_score.batch.scorer import BatchScorer
from xray_score.io.discover import discover
from xray_score.model.bundle import Bundle

LEGACY = Path(__file__).parent / "fixtures" / "legacy-0.1.0"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


@pytest.mark.parametrize("kind", ["baseline", "cnn"])
def test_release_0_1_0_bundle_scores_as_it_did(kind):
    bundle = Bundle.load(LEGACY / kind)
    want = EXPECTED[kind]
    assert bundle.kind == kind and bundle.model_id == want["model_id"]
    scorer = BatchScorer(bundle, n_jobs=1, timeout=None)
    results = sorted(scorer.iter_results(discover(LEGACY / "images")), key=lambda r: r.path)
    raw = scorer.predictor.predict_raw(np.stack([r.x for r in results]))
    names = [Path(r.path).name for r in results]
    assert names == sorted(want["raw"])
    np.testing.assert_allclose(raw, [want["raw"][n] for n in names], rtol=0, atol=1e-6)
    rows = {Path(r["path"]).name: r for r in scorer.rows(results)}
    assert {n: rows[n]["p_pneumonia"] for n in names} == want["p_pneumonia"]
    assert {n: rows[n]["predicted_label"] for n in names} == want["predicted_label"]
