"""Drift in nightly runs: does what tonight's run scored look like what this site usually sends?

Every ``batch`` run records, in the ledger's ``runs`` table, a summary of the rows it scored
(count, share flagged, mean and spread of the calibrated logit, share out of domain). A run is
compared with the recent runs of the same ledger and model that scored something (up to
``HISTORY`` of them, pooled), each test two-sided at p < ``ALPHA``, so the band narrows with the
run's size:

- the flagged and the out-of-domain shares: a two-proportion z-test, or Fisher's exact test
  when a cell of the 2x2 table expects fewer than ``MIN_EXPECTED`` films (a small run, or a
  rare event such as 1 % out of domain), where the normal approximation would fire on a single
  film;
- the mean logit: a two-sample z-test whose run term takes the larger of the two spreads (a
  run of one film has no spread of its own) and only from ``MIN_FILMS_FOR_MEAN`` films on: the
  logits are bimodal (normal films low, pneumonia high), so the mean of a few films is far from
  normal.

A site's prevalence is its own, so its own history is the reference; only while it has none
(its first run) is the bundle's validation check half used, and the summary says so. Drift is
reported (JSON ``drift`` field, run summary HTML); it never changes a row's status or the exit
code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model.decision import logit

ALPHA = 0.01
HISTORY = 10
MIN_EXPECTED = 5  # below this expected count in a cell, proportions get Fisher's exact test
MIN_FILMS_FOR_MEAN = 30  # the mean logit is tested from this many films in the run


@dataclass
class ScoredSummary:
    """Running totals over the rows one run scored (errors excluded)."""

    n: int = 0
    flagged: int = 0
    logit_sum: float = 0.0
    logit_sq: float = 0.0
    out_of_domain: int = 0
    domain_n: int = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        scored = [row for row in rows if row.get("status") == "ok" and row.get("p_pneumonia")]
        if not scored:
            return
        for z in logit([float(row["p_pneumonia"]) for row in scored]).tolist():
            self.logit_sum += z
            self.logit_sq += z * z
        self.n += len(scored)
        for row in scored:
            self.flagged += row.get("predicted_label") == "PNEUMONIA"
            if row.get("in_domain") in ("true", "false"):
                self.domain_n += 1
                self.out_of_domain += row["in_domain"] == "false"

    def as_dict(self) -> dict[str, Any]:
        mean = self.logit_sum / self.n if self.n else None
        var = max(self.logit_sq / self.n - mean ** 2, 0.0) if self.n else None
        return {"n": self.n, "flagged_rate": self.flagged / self.n if self.n else None,
                "mean_logit": mean, "sd_logit": math.sqrt(var) if var is not None else None,
                "out_of_domain_share": self.out_of_domain / self.domain_n
                if self.domain_n else None, "domain_n": self.domain_n}


def pooled(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The recent runs' summaries as one sample (sizes added, means weighted)."""
    runs = [h for h in history if h and h.get("n")]
    if not runs:
        return None
    n = sum(h["n"] for h in runs)
    mean = sum(h["mean_logit"] * h["n"] for h in runs) / n
    second = sum((h["sd_logit"] ** 2 + h["mean_logit"] ** 2) * h["n"] for h in runs) / n
    dom = [h for h in runs if h.get("domain_n")]
    dn = sum(h["domain_n"] for h in dom)
    return {"n": n, "runs": len(runs),
            "flagged_rate": sum(h["flagged_rate"] * h["n"] for h in runs) / n,
            "mean_logit": mean, "sd_logit": math.sqrt(max(second - mean ** 2, 0.0)),
            "out_of_domain_share": sum(h["out_of_domain_share"] * h["domain_n"]
                                       for h in dom) / dn if dn else None, "domain_n": dn}


def _two_proportions(k1: int, n1: int, k0: int, n0: int) -> tuple[str, float]:
    """Two-sided p-value that ``k1`` of ``n1`` and ``k0`` of ``n0`` share one proportion."""
    n, k = n1 + n0, k1 + k0
    if min(n1, n0) * min(k, n - k) / n < MIN_EXPECTED:
        return "fisher", fisher_exact(k1, n1, k0, n0)
    p1, p0, p = k1 / n1, k0 / n0, k / n
    se = math.sqrt(max(p * (1 - p) * (1 / n1 + 1 / n0), 1e-12))
    return "z", _normal_p((p1 - p0) / se)


def fisher_exact(k1: int, n1: int, k0: int, n0: int) -> float:
    """Fisher's exact test of a 2x2 table, two-sided: the probability, given the margins, of a
    table no likelier than this one (the sum over the smaller margin's range)."""
    n, k = n1 + n0, k1 + k0

    def log_pmf(x: int) -> float:  # hypergeometric: x of the n1 among the k
        return (_log_choose(k, x) + _log_choose(n - k, n1 - x) - _log_choose(n, n1))

    observed = log_pmf(k1)
    total = sum(math.exp(lp) for lp in map(log_pmf, range(max(0, n1 - (n - k)), min(k, n1) + 1))
                if lp <= observed + 1e-7)
    return min(1.0, total)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _normal_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))  # two-sided normal p-value


def _count(share: float, n: int) -> int:
    return int(round(share * n))


def drift_check(run: dict[str, Any], reference: dict[str, Any] | None, source: str
                ) -> dict[str, Any] | None:
    """The statistics of ``run`` outside the band of ``reference`` (None: no drift)."""
    if not run.get("n") or not reference or not reference.get("n"):
        return None
    n1, n0 = run["n"], reference["n"]
    tests: dict[str, tuple[str, float]] = {}
    if reference.get("flagged_rate") is not None:
        tests["flagged_rate"] = _two_proportions(
            _count(run["flagged_rate"], n1), n1, _count(reference["flagged_rate"], n0), n0)
    if n1 >= MIN_FILMS_FOR_MEAN:
        spread = max(run["sd_logit"], reference["sd_logit"])
        se = math.sqrt(spread ** 2 / n1 + reference["sd_logit"] ** 2 / n0)
        tests["mean_logit"] = "z", _normal_p(
            (run["mean_logit"] - reference["mean_logit"]) / max(se, 1e-12))
    if run.get("domain_n") and reference.get("out_of_domain_share") is not None:
        d1, d0 = run["domain_n"], reference.get("domain_n") or n0
        tests["out_of_domain_share"] = _two_proportions(
            _count(run["out_of_domain_share"], d1), d1,
            _count(reference["out_of_domain_share"], d0), d0)
    fired = {name: {"run": run[name], "reference": reference[name], "test": test, "p": p}
             for name, (test, p) in tests.items() if p < ALPHA}
    if not fired:
        return None
    return {"reference": source, "alpha": ALPHA, **fired}


def check_run(ledger: Any, run_id: int, model_id: str, summary: ScoredSummary,
              bundle_reference: dict[str, Any] | None) -> dict[str, Any] | None:
    """Compare one run with its ledger's history (else the bundle's validation figures)."""
    current = summary.as_dict()
    history = [json.loads(c).get("scored_summary") for c in
               ledger.recent_counts(model_id, before=run_id, limit=HISTORY)]
    reference = pooled(history)
    if reference is not None:
        source = f"the last {reference['runs']} run(s) of this ledger and model"
    else:
        reference, source = bundle_reference, "the bundle's validation check half (no history)"
    return drift_check(current, reference, source)


def reference_from_scores(p: np.ndarray, threshold: float, ood_share: float) -> dict[str, Any]:
    """The bundle's own figures for first runs: its check-half films' score distribution."""
    z = logit(np.asarray(p, dtype=np.float64))
    return {"n": int(len(z)), "flagged_rate": float((np.asarray(p) >= threshold).mean()),
            "mean_logit": float(z.mean()), "sd_logit": float(z.std()),
            "out_of_domain_share": float(ood_share), "domain_n": int(len(z))}
