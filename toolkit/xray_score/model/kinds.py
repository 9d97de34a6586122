"""Model kinds: what every kind of model provides (in code, as protocols) and the one registry.

A kind turns a pipeline spec into worker-side preprocessing, trains on the arrays that
preprocessing gives, and loads a trained model back from a bundle. Everything else (batch,
evaluate, compare, train, the ledger, reports) is written against these protocols, so a new
kind is one module that calls :func:`register_kind`; built-in kinds are imported on first use.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..errors import BundleError

if TYPE_CHECKING:
    from ..io.preprocess import FileResult
    from .bundle import Bundle

# kind name -> module that registers it when imported (kept lazy: TensorFlow stays unloaded)
BUILTIN_KINDS = {"baseline": "xray_score.classical.kind", "cnn": "xray_score.deep.kind",
                 "ensemble": "xray_score.ensemble.kind"}
_REGISTRY: dict[str, ModelKind] = {}


class Preprocessor(Protocol):
    """Picklable, TensorFlow-free: one file path -> a :class:`FileResult` (runs in workers).

    ``__call__`` gives a file's model input; ``decode`` stops at its canonical pixels and
    ``transform_batch`` turns several files' pixels into model inputs at once (a worker
    scoring a chunk of files uses these two)."""

    def __call__(self, path: str) -> FileResult: ...

    def decode(self, path: str, into: FileResult | None = None) -> FileResult: ...

    def transform_batch(self, pixels: list[Any]) -> list[Any]: ...

    def stack(self, xs: list[Any]) -> Any:
        """The batch input ``predict_raw`` takes, from several files' ``FileResult.x``."""


class Predictor(Protocol):
    """A loaded model (main process): uncalibrated probability of PNEUMONIA per input.

    Calibration and the operating threshold belong to the bundle, not the predictor
    (:class:`xray_score.model.decision.OperatingPoint`). An input's score must not depend on
    the other inputs of its batch.
    """

    @property
    def runtime(self) -> str:
        """What runs the model, for logs and summaries (library, threads)."""

    def predict_raw(self, batch: Any) -> np.ndarray:
        """(N,) float probabilities in 0..1 for a batch from ``Preprocessor.stack``."""


class TrainedModel(Predictor, Protocol):
    """A freshly fitted model: it can write its files into a bundle folder."""

    history: dict[str, Any]

    def save(self, folder: Path) -> tuple[dict[str, Any], list[str]]:
        """Write model files into ``folder``; return (extra bundle.json keys, file names)."""


@runtime_checkable
class Embedder(Protocol):
    """Predictors that expose a feature vector per input (``xray-score embed``)."""

    def embed(self, batch: Any) -> np.ndarray: ...


@runtime_checkable
class DomainAware(Protocol):
    """Predictors that also say how far each input is from their training films
    (:mod:`xray_score.model.domain`; scores <= 1 are in domain, None when unknown)."""

    def predict_with_domain(self, batch: Any) -> tuple[np.ndarray, np.ndarray | None]: ...


@runtime_checkable
class Explainer(Protocol):
    """Predictors that can draw a heatmap of evidence over a canonical image (reports)."""

    def heatmap(self, pixels: np.ndarray) -> np.ndarray | None: ...


class ModelKind(Protocol):
    """One kind of model (``baseline``, ``cnn``, ...)."""

    name: str

    def check_spec(self, spec: dict[str, Any]) -> None:
        """Raise UsageError for keys of the kind's own pipeline sections it does not know."""

    def preprocessor(self, spec: dict[str, Any]) -> Preprocessor:
        """The worker-side preprocessing a pipeline spec describes."""

    def bundle_preprocessor(self, bundle: Bundle) -> Preprocessor:
        """The preprocessing a trained bundle's model was fitted on."""

    def training_preprocessor(self, spec: dict[str, Any]) -> Preprocessor:
        """What the training films go through (e.g. pixels, when the kind augments them
        before its own features); validation films always get ``preprocessor``."""

    def fit(self, x_train: Any, y_train: np.ndarray, x_val: Any, y_val: np.ndarray,
            spec: dict[str, Any], **options: Any) -> TrainedModel:
        """Train on preprocessed arrays (``options``: e.g. the CNN's ``weights``)."""

    def load(self, bundle: Bundle, weights: str | None = None, engine: str = "auto",
             threads: int | None = None) -> Predictor:
        """The model of a verified bundle (kinds ignore options that do not apply to them);
        ``threads``: what the model may use (None: the process's default)."""


class KindBase:
    """Defaults shared by the built-in kinds (a kind may override any of them)."""

    name = ""
    needs_training_data = True  # False: ``train`` fits only on validation films (ensembles)
    takes_input_size = True  # the pipeline names the canonical input size

    def check_spec(self, spec: dict[str, Any]) -> None:
        return None

    def bundle_preprocessor(self, bundle: Bundle) -> Preprocessor:
        return self.preprocessor(bundle.meta["pipeline"])  # type: ignore[attr-defined]

    def training_preprocessor(self, spec: dict[str, Any]) -> Preprocessor:
        return self.preprocessor(spec)  # type: ignore[attr-defined]

    def domain_features(self, model: Any, x: Any, spec: dict[str, Any]) -> np.ndarray | None:
        """The representation the domain check measures distances in (None: no check)."""
        return None

    def domain_blocks(self, spec: dict[str, Any], dim: int) -> list[tuple[str, int, int]]:
        """Parts of the representation checked separately (default: one block)."""
        return [("all", 0, dim)]

    def copy_files(self, bundle: Bundle, staging: Path, final: Path) -> list[str]:
        """Copy a verified bundle's model files into ``staging`` (a derived bundle that will
        live at ``final``), checking each copy's sha256; returns their names."""
        import shutil

        from ..hashing import sha256_file

        names = sorted(bundle.meta["files"])
        for name in names:
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bundle.file(name), target)
            if sha256_file(target) != bundle.meta["files"][name]:
                raise BundleError(f"{bundle.path}: {name} changed while it was copied")
        return names


def register_kind(kind: ModelKind) -> ModelKind:
    """Make ``kind`` usable in pipelines and bundles (``kind: <name>``)."""
    _REGISTRY[kind.name] = kind
    return kind


def registered_elsewhere() -> tuple[ModelKind, ...]:
    """Kinds registered in this process that are not built in: a worker process registers
    them too before it loads a bundle (they travel with its task, pickled by reference)."""
    return tuple(kind for name, kind in _REGISTRY.items() if name not in BUILTIN_KINDS)


def kind_names() -> tuple[str, ...]:
    return tuple(dict.fromkeys([*BUILTIN_KINDS, *_REGISTRY]))


def get_kind(name: str) -> ModelKind:
    """The registered kind called ``name`` (BundleError when there is none)."""
    if name not in _REGISTRY and name in BUILTIN_KINDS:
        importlib.import_module(BUILTIN_KINDS[name])
    if name not in _REGISTRY:
        raise BundleError(f"unknown model kind {name!r} (known: {', '.join(kind_names())})")
    return _REGISTRY[name]
