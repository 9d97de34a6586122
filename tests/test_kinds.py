"""The model-kind registry: a new kind lives in one module and every command scores with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from conftest import read_rows, summary
from xray_score.cli import main
from xray_score.errors import BundleError, ExitCode
from xray_score.io.preprocess import Preprocessor
from xray_score.model.kinds import KindBase, get_kind, kind_names, register_kind
from xray_score.model.training import train_bundle

# --------------------------------------------------------------------------- the dummy kind
# Everything a kind needs, in this one block: spec check, preprocessing, fit, save, load.


class BrightLungs:
    """P(pneumonia) rises with the mean brightness of the central region (opacities are
    bright): a real, if crude, model with one learned number."""

    runtime = "numpy"

    def __init__(self, centre: float, history: dict | None = None) -> None:
        self.centre, self.history = centre, history or {}

    def predict_raw(self, batch: np.ndarray) -> np.ndarray:
        inner = batch[:, 4:12, 4:12].reshape(len(batch), -1).mean(axis=1)
        return 1 / (1 + np.exp(-(inner - self.centre) / 8.0))

    def save(self, folder: Path) -> tuple[dict[str, Any], list[str]]:
        (folder / "dummy.json").write_text(json.dumps({"centre": self.centre}))
        return {"history": self.history}, ["dummy.json"]


class DummyKind(KindBase):
    name = "dummy"

    def preprocessor(self, spec: dict[str, Any]) -> Preprocessor:
        return Preprocessor(size=int(spec["input_size"]))

    def fit(self, x_train, y_train, x_val, y_val, spec, **options) -> BrightLungs:
        inner = x_train[:, 4:12, 4:12].reshape(len(x_train), -1).mean(axis=1)
        return BrightLungs((inner[y_train == 0].mean() + inner[y_train == 1].mean()) / 2)

    def load(self, bundle, weights=None, engine="auto") -> BrightLungs:
        return BrightLungs(json.loads(bundle.file("dummy.json").read_text())["centre"])


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def dummy_bundle(labeled_dir, tmp_path_factory):
    from xray_score.model.spec import load_pipeline

    register_kind(DummyKind())
    folder = tmp_path_factory.mktemp("dummy")
    pipeline = folder / "dummy.yaml"
    pipeline.write_text(yaml.safe_dump({"kind": "dummy", "name": "bright-lungs",
                                        "input_size": 16}))
    return train_bundle("dummy", labeled_dir, folder / "bundle", load_pipeline(str(pipeline)))


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_batch_evaluate_and_compare_score_with_a_new_kind(dummy_bundle, baseline_bundle,
                                                          labeled_test_dir, tmp_path):
    assert "dummy" in kind_names() and dummy_bundle.kind == "dummy"
    out = tmp_path / "batch.csv"
    result = cli("batch", labeled_test_dir, "--model", dummy_bundle.path, "--out", out)
    assert result.exit_code == ExitCode.OK, result.output
    rows = read_rows(out)
    assert {r["model_id"] for r in rows} == {dummy_bundle.model_id}
    model = get_kind("dummy").load(dummy_bundle)
    for row in rows[:3]:  # each score is this kind's model behind the bundle's calibration
        x = Preprocessor(size=16)(row["path"]).x[None]
        p = dummy_bundle.operating_point.probability(model.predict_raw(x))[0]
        assert float(row["p_pneumonia"]) == pytest.approx(p, abs=1e-6)
    assert summary(result)["report"].endswith(".html")

    report = tmp_path / "eval.html"
    result = cli("evaluate", labeled_test_dir, "--model", dummy_bundle.path, "--out", report)
    assert result.exit_code == ExitCode.OK, result.output
    assert "ROC AUC" in report.read_text()

    csv = tmp_path / "cmp.csv"
    result = cli("compare", labeled_test_dir, "--baseline", baseline_bundle.path,
                 "--cnn", baseline_bundle.path, "-m", dummy_bundle.path, "--csv", csv,
                 "--out", tmp_path / "cmp.html")
    assert result.exit_code == ExitCode.USAGE  # the same bundle twice is refused
    legacy = Path(__file__).parent / "fixtures" / "legacy-0.1.0" / "cnn"
    result = cli("compare", labeled_test_dir, "--baseline", baseline_bundle.path,
                 "--cnn", legacy, "-m", dummy_bundle.path, "--csv", csv,
                 "--out", tmp_path / "cmp.html")
    assert result.exit_code == ExitCode.OK, result.output
    wide = pd.read_csv(csv).set_index("path")
    batch_p = pd.read_csv(out).set_index("path")["p_pneumonia"]
    np.testing.assert_allclose(wide.loc[batch_p.index, f"p_{dummy_bundle.model_id}"], batch_p,
                               atol=1e-6)


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(BundleError, match="unknown model kind"):
        get_kind("no-such-kind")
