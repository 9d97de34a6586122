"""Labeled folder layouts, Kermany patient ids, and patient-level splits."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from ..errors import UsageError
from ..hashing import sha256_bytes
from ..labels import CLASS_NAMES
from .discover import discover, sniff_format

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),  # person1000_bacteria_2931.jpeg
    re.compile(r"^(NORMAL2-IM-\d+)-", re.IGNORECASE),  # NORMAL2-IM-1427-0001.jpeg
    re.compile(r"^(IM-\d+)-", re.IGNORECASE),  # IM-0115-0001.jpeg
)


class DatasetError(UsageError, ValueError):
    """A folder or split request that cannot give a labeled set (CLI exit code 2)."""


def patient_id(filename: str) -> str | None:
    """The patient id in a Kermany file name, or None when the name has none."""
    name = Path(filename).name
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(name)
        if match:
            return match.group(1).lower()
    return None


def _class_dirs(root: Path) -> list[tuple[str, Path, str | None]]:
    """(class name, folder, split) for ROOT/{CLASS} and ROOT/{split}/{CLASS} layouts."""
    def by_name(folder: Path) -> dict[str, Path]:
        return {p.name.upper(): p for p in sorted(folder.iterdir()) if p.is_dir()}

    top = by_name(root)
    if any(c in top for c in CLASS_NAMES):
        return [(c, top[c], None) for c in CLASS_NAMES if c in top]
    found = []
    for split in SPLIT_NAMES:
        sub = top.get(split.upper())
        if sub is not None:
            inner = by_name(sub)
            found += [(c, inner[c], split) for c in CLASS_NAMES if c in inner]
    return found


def is_labeled(root: str | Path) -> bool:
    root = Path(root)
    return root.is_dir() and bool(_class_dirs(root))


def read_labeled(root: str | Path, splits: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Images of a labeled folder: columns ``path, label, label_name, patient_id, split``.

    Layouts: ``ROOT/{NORMAL,PNEUMONIA}/...`` or ``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/...``
    (``splits`` keeps only some of the latter). Patient ids come from Kermany file names, else
    from a DICOM file's PatientID. Files with neither get a per-image id (``img:<name>``),
    with a warning, so splits fall back to image level.
    """
    root = Path(root)
    dirs = _class_dirs(root)
    if not dirs:
        raise DatasetError(f"{root} is not a labeled folder: expected NORMAL/ and PNEUMONIA/ "
                           "sub-folders, or train|val|test/ with them")
    rows = []
    for class_name, folder, split in dirs:
        if splits and split not in splits:
            continue
        for path in discover(folder):
            rows.append((str(path), CLASS_NAMES.index(class_name), class_name,
                         patient_id(path.name) or dicom_patient_id(path), split or ""))
    import pandas as pd

    df = pd.DataFrame(rows, columns=["path", "label", "label_name", "patient_id", "split"])
    missing = df["patient_id"].isna()
    if missing.any():
        log.warning("%d of %d file names carry no patient id (personNNN_, IM-NNNN-, "
                    "NORMAL2-IM-NNNN-): those images are split one by one, so images of one "
                    "patient may land on both sides", int(missing.sum()), len(df))
        df.loc[missing, "patient_id"] = "img:" + df.loc[missing, "path"].map(
            lambda p: Path(p).name)
    return df


def dicom_patient_id(path: str | Path) -> str | None:
    """PatientID of a DICOM file (header only), or None for other files or an empty id."""
    try:
        with open(path, "rb") as fh:
            if sniff_format(fh.read(132)) != "dicom":
                return None
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:  # noqa: BLE001 - unreadable or broken: no id, the scorer reports why
        return None
    value = str(ds.get("PatientID", "") or "").strip()
    return f"dicom:{value}" if value else None


def folder_labels(root: str | Path, paths: list[str]) -> dict[str, str] | None:
    """True labels from NORMAL/PNEUMONIA parent folders, when the folder is labeled."""
    root = Path(root)
    if not is_labeled(root):
        return None
    top = str(root)
    prefix = "" if top == "." else os.path.join(top, "")  # paths from discover() start so
    labels = {}
    for p in paths:
        if p.startswith(prefix):  # the common case, without building Path objects
            labels[p] = _class_of_folders(p[len(prefix):].split(os.sep)[:-1]) or ""
        else:
            labels[p] = label_of_path(p, root) or ""
    return labels


def label_of_path(path: str | Path, root: str | Path) -> str | None:
    """The class name of a file inside a labeled folder, from its parent folder names."""
    try:  # paths from discover() start with root, even through symlinked sub-folders
        rel = Path(path).relative_to(root)
    except ValueError:
        try:
            rel = Path(path).resolve().relative_to(Path(root).resolve())
        except ValueError:
            return None
    return _class_of_folders(rel.parts[:-1])


def _class_of_folders(names: Iterable[str]) -> str | None:
    """The first folder name that is a class name (any case), upper-cased."""
    return next((n.upper() for n in names if n.upper() in CLASS_NAMES), None)


def patient_split(
    df: pd.DataFrame, val_fraction: float = 0.15, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split by patient, stratified by class: no patient is on both sides.

    Patients are ordered by a seeded hash of their id, so the split is stable when files are
    added (an existing patient keeps its side).
    """
    if not 0 < val_fraction < 1:
        raise DatasetError("val_fraction (validation.fraction) must be between 0 and 1")
    patients = df.groupby("patient_id")["label"].max()  # a patient with any pneumonia image
    val_ids: list[str] = []
    for _, ids in patients.groupby(patients):
        order = sorted(ids.index, key=lambda pid: _stable_hash(pid, seed))
        val_ids += order[: max(1, round(len(order) * val_fraction))]
    in_val = df["patient_id"].isin(set(val_ids))
    return df[~in_val].reset_index(drop=True), df[in_val].reset_index(drop=True)


def exclude_patients(df: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``df`` whose patient does not appear in ``other`` (validation leak guard)."""
    keep = ~df["patient_id"].isin(set(other["patient_id"]))
    dropped = int((~keep).sum())
    if dropped:
        log.info("removed %d training image(s) of %d validation patient(s)", dropped,
                 other["patient_id"].nunique())
    return df[keep].reset_index(drop=True)


def _stable_hash(text: str, seed: int) -> int:
    return int(sha256_bytes(f"{seed}:{text}".encode())[:16], 16)


def fingerprint(df: pd.DataFrame, digests: list[str] | None = None) -> dict:
    """A compact, reproducible description of a training set."""
    h = hashlib.sha256()
    for item in sorted(digests if digests is not None else df["path"].map(
            lambda p: Path(p).name)):
        h.update(item.encode())
    counts = df["label_name"].value_counts().to_dict()
    return {
        "n_images": int(len(df)),
        "n_patients": int(df["patient_id"].nunique()),
        "class_counts": {k: int(v) for k, v in counts.items()},
        "sha256_of_contents": h.hexdigest() if digests is not None else None,
        "sha256_of_names": None if digests is not None else h.hexdigest(),
    }


def labels_array(df: pd.DataFrame) -> np.ndarray:
    return df["label"].to_numpy(dtype=np.int64)
