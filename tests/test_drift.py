"""Drift in nightly runs: a run whose scores leave the site's usual band is reported."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from scipy.special import expit

from conftest import make_xray, save_gray, summary
from xray_score.batch.drift import (
    ScoredSummary,
    drift_check,
    fisher_exact,
    pooled,
    reference_from_scores,
)
from xray_score.cli import main
from xray_score.errors import ExitCode


def rows_from(p: np.ndarray, threshold: float = 0.5, ood: float = 0.01, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [{"status": "ok", "p_pneumonia": f"{v:.6f}",
             "predicted_label": "PNEUMONIA" if v >= threshold else "NORMAL",
             "in_domain": "false" if rng.random() < ood else "true"} for v in p]


def summary_of(p, **kw):
    s = ScoredSummary()
    s.add(rows_from(p, **kw))
    return s.as_dict()


def test_drift_fires_for_shifted_scores_and_not_for_the_usual_ones():
    rng = np.random.default_rng(1)
    usual = lambda n: expit(np.where(rng.random(n) < 0.6, rng.normal(3, 1.5, n),  # noqa: E731
                                     rng.normal(-3, 1.5, n)))
    history = [summary_of(usual(300), seed=i) for i in range(5)]
    reference = pooled(history)
    assert reference["runs"] == 5 and reference["n"] == 1500
    same = [drift_check(summary_of(usual(300), seed=10 + i), reference, "history")
            for i in range(20)]
    assert sum(d is not None for d in same) <= 1  # p < 0.01 per test: rare false alarms
    moved = usual(300)
    shifted = drift_check(summary_of(expit(np.log(moved / (1 - moved)) + 1.5)), reference,
                          "history")  # every logit 1.5 higher: another machine, say
    assert shifted is not None and "mean_logit" in shifted  # the flagged share barely moves
    odd = drift_check(summary_of(usual(300), ood=0.2), reference, "history")
    assert odd is not None and "out_of_domain_share" in odd
    assert drift_check({"n": 0}, reference, "history") is None


def bimodal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scores like a model's: normal films at low logits, pneumonia films at high ones."""
    return expit(np.where(rng.random(n) < 0.68, rng.normal(7.6, 2, n), rng.normal(-5.9, 2, n)))


def test_small_runs_drawn_like_the_reference_do_not_cry_drift():
    rng = np.random.default_rng(4)
    reference = reference_from_scores(bimodal(rng, 212), 0.5, 0.01)  # as a bundle ships it
    for n in (1, 2, 3, 5, 10, 20):  # a morning's few films; 1 % of them out of domain
        alarms = sum(drift_check(summary_of(bimodal(rng, n), seed=int(rng.integers(1 << 30))),
                                 reference, "bundle") is not None for _ in range(300))
        assert alarms <= 9, (n, alarms)  # three tests at p < 0.01: ~3 % at most
    one_odd_film = summary_of(bimodal(rng, 1), ood=1.0)
    assert drift_check(one_odd_film, reference, "bundle") is None  # p 0.02 for 1 of 1
    all_odd = drift_check(summary_of(bimodal(rng, 10), ood=1.0), reference, "bundle")
    assert all_odd is not None and all_odd["out_of_domain_share"]["test"] == "fisher"
    all_flagged = drift_check(summary_of(expit(rng.normal(6, 1, 25))), reference, "bundle")
    assert all_flagged is not None and "flagged_rate" in all_flagged


def test_fisher_exact_matches_scipy():
    from scipy.stats import fisher_exact as scipy_fisher

    for k1, n1, k0, n0 in ((1, 1, 2, 212), (0, 3, 144, 212), (10, 10, 2, 212), (5, 100, 2, 212),
                           (30, 40, 70, 160), (0, 1, 0, 50)):
        ours = fisher_exact(k1, n1, k0, n0)
        theirs = scipy_fisher([[k1, n1 - k1], [k0, n0 - k0]]).pvalue
        assert abs(ours - theirs) < 1e-9 * max(1.0, theirs), (k1, n1, k0, n0, ours, theirs)


def test_first_runs_fall_back_to_the_bundles_validation_figures():
    rng = np.random.default_rng(2)
    p = expit(rng.normal(0, 3, 400))
    ref = reference_from_scores(p, 0.5, 0.01)
    assert ref["n"] == 400 and 0.3 < ref["flagged_rate"] < 0.7
    assert drift_check(summary_of(expit(rng.normal(0, 3, 200))), ref, "bundle") is None


def test_nightly_runs_report_drift_and_an_unchanged_run_adds_no_point(baseline_bundle,
                                                                    tmp_path):
    rng = np.random.default_rng(3)
    ledger, out = tmp_path / "l.sqlite", tmp_path / "r.csv"

    def night(name: str, pneumonia_share: float, n: int = 40) -> dict:
        folder = tmp_path / "in" / name
        folder.mkdir(parents=True)
        for i in range(n):
            label = int(rng.random() < pneumonia_share)
            save_gray(folder / f"{name}-{i}.png", make_xray(label, rng, size=96))
        result = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--model",
                                           str(baseline_bundle.path), "--ledger", str(ledger),
                                           "--out", str(out)], catch_exceptions=False)
        assert result.exit_code == ExitCode.OK, result.output
        return summary(result)

    nights = [night(f"n{i}", 0.5) for i in range(3)]
    assert all(s["scored_summary"]["n"] == 40 for s in nights)
    assert nights[2]["drift"] is None  # drawn like the history
    shifted = night("all-pneumonia", 1.0)
    assert shifted["drift"] is not None and "flagged_rate" in shifted["drift"]
    assert "last 3 run(s)" in shifted["drift"]["reference"]
    unchanged = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--model",
                                          str(baseline_bundle.path), "--ledger", str(ledger),
                                          "--out", str(out)], catch_exceptions=False)
    s = summary(unchanged)
    assert s["scored"] == 0 and s["drift"] is None and "scored_summary" not in s
    assert "Recent runs" in (tmp_path / "r.html").read_text()
