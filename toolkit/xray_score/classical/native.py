"""LightGBM prediction through LightGBM's own C library, without its Python package.

Importing the ``lightgbm`` package imports scikit-learn, pandas, SciPy and Dask when they are
installed (~1.7 s per process here); a scoring worker pays that for two C calls. This module
finds ``lib_lightgbm`` inside the installed package without importing the package and calls
``LGBM_BoosterLoadModelFromString`` and ``LGBM_BoosterPredictForMat`` (the calls the package
makes for ``Booster.predict``): the same library, so the same numbers
(``tests/test_bundle.py`` compares them). Training still uses the package. When the library
cannot be found (an unusual install), :func:`load_booster` falls back to the package.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_DTYPE_FLOAT32 = 0
_ROW_MAJOR = 1
_PREDICT_NORMAL = 0
_LIB_NAMES = {"win32": "lib_lightgbm.dll", "darwin": "lib_lightgbm.dylib"}


def package_folders() -> list[Path]:
    """Where the installed ``lightgbm`` package lives, found without importing it."""
    spec = importlib.util.find_spec("lightgbm")
    return [Path(f) for f in (spec.submodule_search_locations or [])] if spec else []


def lightgbm_version() -> str:
    """The installed LightGBM's version, from the package's ``VERSION.txt`` (cheap: no
    ``importlib.metadata`` scan in every scoring worker), else from its metadata."""
    for folder in package_folders():
        try:
            return (folder / "VERSION.txt").read_text(encoding="utf-8").strip()
        except OSError:
            continue
    from importlib.metadata import version

    return version("lightgbm")


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    name = _LIB_NAMES.get(sys.platform, "lib_lightgbm.so")
    for folder in package_folders():
        for candidate in (folder / "lib" / name, folder / name):
            if candidate.is_file():
                lib = ctypes.cdll.LoadLibrary(str(candidate))
                lib.LGBM_GetLastError.restype = ctypes.c_char_p
                return lib
    return None


def _check(lib: ctypes.CDLL, code: int) -> None:
    if code != 0:
        raise RuntimeError(f"LightGBM: {lib.LGBM_GetLastError().decode(errors='replace')}")


class NativeBooster:
    """A LightGBM model loaded from its text form; ``predict`` as ``Booster.predict`` (all the
    model's trees, normal output: probabilities for a binary objective)."""

    def __init__(self, model_text: str | bytes, threads: int = 1) -> None:
        lib = _library()
        if lib is None:
            raise RuntimeError("lib_lightgbm not found beside the lightgbm package")
        self._lib = lib
        self._handle = ctypes.c_void_p()
        iterations = ctypes.c_int(0)
        text = model_text.encode() if isinstance(model_text, str) else bytes(model_text)
        _check(lib, lib.LGBM_BoosterLoadModelFromString(
            ctypes.c_char_p(text), ctypes.byref(iterations),
            ctypes.byref(self._handle)))
        n = ctypes.c_int(0)
        _check(lib, lib.LGBM_BoosterGetNumFeature(self._handle, ctypes.byref(n)))
        self.n_features = int(n.value)
        self._parameters = ctypes.c_char_p(f"num_threads={int(threads)}".encode())

    def num_feature(self) -> int:
        return self.n_features

    def predict(self, x: Any, num_threads: int | None = None) -> np.ndarray:
        data = np.ascontiguousarray(x, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != self.n_features:
            raise ValueError(f"expected (N, {self.n_features}) features, got {data.shape}")
        out = np.empty(len(data), np.float64)
        written = ctypes.c_int64(0)
        params = (self._parameters if num_threads is None
                  else ctypes.c_char_p(f"num_threads={int(num_threads)}".encode()))
        _check(self._lib, self._lib.LGBM_BoosterPredictForMat(
            self._handle, data.ctypes.data_as(ctypes.c_void_p), ctypes.c_int(_DTYPE_FLOAT32),
            ctypes.c_int32(data.shape[0]), ctypes.c_int32(data.shape[1]),
            ctypes.c_int(_ROW_MAJOR), ctypes.c_int(_PREDICT_NORMAL), ctypes.c_int(0),
            ctypes.c_int(-1), params, ctypes.byref(written),
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
        if written.value != len(data):
            raise RuntimeError(f"LightGBM wrote {written.value} predictions for {len(data)} rows")
        return out

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.LGBM_BoosterFree(handle)
            self._handle = None


def load_booster(source: str | Path | bytes) -> Any:
    """A booster for prediction from a LightGBM text model: a file, or its bytes (a bundle's,
    verified as read). Native when possible; the bytes go to LightGBM as they are, no 2 MB
    decode and re-encode in every worker."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        return NativeBooster(data)
    except RuntimeError as exc:
        if "not found" not in str(exc):
            raise
        log.debug("%s; loading through the lightgbm package", exc)
        import lightgbm as lgb

        return lgb.Booster(model_str=data.decode("utf-8"))
