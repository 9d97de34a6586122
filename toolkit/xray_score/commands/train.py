"""``xray-score train baseline|cnn``: one implementation, one command per trainable kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..errors import ExitCode
from .common import echo_summary, handle_errors


@click.group()
def train() -> None:
    """Train a model bundle from a labeled folder (NORMAL/ and PNEUMONIA/ sub-folders)."""


def run_training(kind: str, data: str, val: str | None, out: str, overrides: tuple[str, ...],
                 jobs: int, pipeline: str, **fit_options: Any) -> int:
    """Load the pipeline (with ``--set`` overrides), train, write the bundle, print a summary."""
    from ..model.spec import load_pipeline, parse_override
    from ..model.training import train_bundle

    spec = load_pipeline(pipeline, dict(parse_override(p) for p in overrides))
    bundle = train_bundle(kind, data, out, spec, val=val, n_jobs=jobs, **fit_options)
    echo_summary({"bundle": str(out), "model_id": bundle.model_id,
                  "validation": bundle.meta["validation_metrics"]})
    return ExitCode.OK


def _train_options(default_pipeline: str) -> Callable[[Any], Any]:
    options = [
        click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
                     help="Labeled training folder."),
        click.option("--val", type=click.Path(exists=True, file_okay=False),
                     help="Explicit labeled validation folder; its patients leave training."),
        click.option("--out", required=True, type=click.Path(), help="Bundle directory."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a pipeline value, e.g. --set training.epochs=2."),
        click.option("--jobs", "-j", default=2, show_default=True, help="Worker processes."),
        click.option("--pipeline", default=default_pipeline, show_default=True,
                     help="Pipeline YAML (path or shipped name)."),
    ]

    def apply(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


@train.command("baseline")
@_train_options("baseline")
@handle_errors
def train_baseline(**options: Any) -> int:
    """HOG/LBP features + LightGBM."""
    return run_training("baseline", **options)


@train.command("cnn")
@_train_options("cnn")
@click.option("--weights", help="Backbone weights: a file, a folder, 'imagenet' or 'none' "
              "(default: the pipeline's, or $XRAY_SCORE_WEIGHTS).")
@handle_errors
def train_cnn(**options: Any) -> int:
    """A Keras CNN (embedding backbone + head, optionally fine-tuned)."""
    return run_training("cnn", **options)


@train.command("ensemble")
@click.option("--member", "members", multiple=True,
              help="A member bundle (repeat; default: the pipeline's members).")
@click.option("--val", required=True, type=click.Path(exists=True, file_okay=False),
              help="Labeled validation folder the ensemble's calibration is fitted on (keep "
              "it the members' --val: the same patients stay out of every fit).")
@click.option("--out", required=True, type=click.Path(), help="Bundle directory.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a pipeline value, e.g. --set weights=[2,1].")
@click.option("--jobs", "-j", default=2, show_default=True, help="Worker processes.")
@click.option("--pipeline", default="ensemble", show_default=True,
              help="Pipeline YAML (path or shipped name).")
@handle_errors
def train_ensemble(members: tuple[str, ...], overrides: tuple[str, ...], **options: Any) -> int:
    """The mean logit of trained bundles, with its own calibration and threshold."""
    if members:
        overrides += (f"members={list(members)}",)
    return run_training("ensemble", data=None, overrides=overrides, **options)
