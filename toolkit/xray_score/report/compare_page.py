"""The comparison report: several models scored on the same images, tested in pairs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..evaluation.metrics import has_both_classes
from ..evaluation.paired import compare_models
from ..evaluation.results import label_mask
from ..labels import to_binary
from ..model.decision import label_for
from . import figures as fg
from .pages import MAX_TABLE_ROWS, METRIC_INFO, _flatten_meta
from .render import render


def _disagreement_rows(dis: pd.DataFrame, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pcols = [f"p_{m['model_id']}" for m in models]
    spread = dis[pcols].max(axis=1) - dis[pcols].min(axis=1)
    rows = []
    for _, r in (
        dis.assign(_spread=spread)
        .sort_values("_spread", ascending=False)
        .head(MAX_TABLE_ROWS)
        .iterrows()
    ):
        rows.append(
            {
                "path": r["path"],
                "true_label": r.get("true_label"),
                "scores": [
                    (
                        r[f"p_{m['model_id']}"],
                        label_for(r[f"p_{m['model_id']}"], float(m["threshold"])),
                    )
                    for m in models
                ],
            }
        )
    return rows


def write_compare_report(
    df_wide: pd.DataFrame,
    out_html: str | os.PathLike[str],
    *,
    models: list[dict[str, Any]],
    run_meta: Mapping[str, Any],
    title: str | None = None,
    n_boot: int = 1000,
) -> Path:
    """Side-by-side comparison of >= 2 models scored on the same images."""
    res = compare_models(df_wide, models, n_boot=n_boot)
    names = {m["model_id"]: m.get("name") or m["model_id"] for m in models}
    pcols = [f"p_{m['model_id']}" for m in models]
    complete = df_wide[df_wide[pcols].notna().all(axis=1)]
    figures = []
    if res["labeled"]:
        lab = complete[label_mask(complete)]
        y = to_binary(lab["true_label"].astype(str).str.strip())
        if has_both_classes(y):
            figures.append(
                fg.roc_figure(
                    [
                        {
                            "label": names[m["model_id"]],
                            "y": y,
                            "p": lab[f"p_{m['model_id']}"].to_numpy(),
                            "points": [
                                (float(m["threshold"]), f"{names[m['model_id']]} threshold")
                            ],
                        }
                        for m in models
                    ]
                )
            )
    by_id = {m["model_id"]: m for m in models}
    for pair in res["pairs"][:3]:
        a, b = by_id[pair["model1"]], by_id[pair["model2"]]
        if len(complete):
            figures.append(
                fg.scatter_figure(
                    complete[f"p_{a['model_id']}"].to_numpy(float),
                    complete[f"p_{b['model_id']}"].to_numpy(float),
                    names[a["model_id"]],
                    names[b["model_id"]],
                    float(a["threshold"]),
                    float(b["threshold"]),
                )
            )
    ctx = {
        "title": title or "Model comparison",
        "res": res,
        "models": models,
        "names": names,
        "metric_keys": [
            "roc_auc",
            "sensitivity",
            "specificity",
            "precision",
            "npv",
            "accuracy",
            "brier",
        ],
        "metric_info": METRIC_INFO,
        "figures": figures,
        "disagreements": _disagreement_rows(res["disagreements"], models),
        "run_rows": _flatten_meta(run_meta),
    }
    return render("compare.html", out_html, **ctx)
