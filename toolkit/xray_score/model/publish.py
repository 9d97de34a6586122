"""Writing a bundle into place without touching anything the user owns.

``--out`` rules (checked by :func:`check_out_target` before any training starts): a missing or
empty folder is used; an existing bundle (``bundle.json`` plus the files it lists, and its doc
files) is replaced; anything else is refused with a :class:`UsageError` naming the path: a
plain file, a folder holding other files, the training or validation folder, or a folder
inside or above one of them. The new bundle is built in a staging folder beside ``--out`` and
swapped in by renames; the old bundle's own files are then deleted, nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UsageError
from ..hashing import sha256_file
from .bundle import BUNDLE_FORMAT, DOC_FILES, FORMAT_VERSION, Bundle

log = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    names = ["numpy", "scikit-learn", "scikit-image", "opencv-python-headless", "lightgbm",
             "tensorflow-cpu", "tensorflow", "keras", "pandas", "joblib"]
    found = {"python": sys.version.split()[0], "xray-score": __version__}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def check_out_target(out: str | os.PathLike, protected: Iterable[str | os.PathLike]) -> None:
    """Refuse an ``--out`` that is not missing, empty or an existing bundle (see the module)."""
    target = Path(out).absolute()
    resolved = target.resolve()
    for other in protected:
        folder = Path(other).resolve()
        if resolved == folder or folder in resolved.parents or resolved in folder.parents:
            raise UsageError(f"--out {target} is, or is inside or above, the data folder "
                             f"{folder}; choose a folder of its own for the bundle")
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise UsageError(f"--out {target} is a file, not a bundle folder; nothing was written")
    if not any(target.iterdir()):
        return
    foreign = _not_bundle_files(target)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise UsageError(f"--out {target} is not a model bundle (it holds {shown}); "
                         "refusing to replace it: give a new or empty folder")


def _not_bundle_files(folder: Path) -> list[str]:
    """Entries of ``folder`` that are not part of the bundle in it (all, if it is none)."""
    own = _bundle_files(folder)
    everything = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                        if not p.is_dir() or p.is_symlink())
    return [name for name in everything if own is None or name not in own]


def _bundle_files(folder: Path) -> set[str] | None:
    """bundle.json, the files it lists and doc files; None when ``folder`` holds no bundle."""
    try:
        meta = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        return None
    return {"bundle.json", *DOC_FILES, *map(str, meta.get("files") or {})}


def new_staging(out_dir: str | os.PathLike) -> Path:
    """A temporary folder beside ``out_dir`` to build a bundle in."""
    parent = Path(out_dir).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{Path(out_dir).name}-staging-", dir=parent))
    staging.chmod(0o755)  # a bundle is meant to be shared: not mkdtemp's private 0700
    return staging


def write_bundle(out_dir: str | os.PathLike, meta: dict[str, Any], files: list[str],
                 staging: Path) -> Bundle:
    """Finish a bundle staged in ``staging`` (which holds ``files``) and move it to ``out_dir``.

    Fills in format fields, library versions, creation time and checksums, then renames the
    staging folder into place, so a half-written bundle never appears at ``out_dir``. An old
    bundle there is renamed aside first and only its own files are deleted afterwards.
    """
    out_dir = Path(out_dir)
    check_out_target(out_dir, [])
    full = {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        **meta,
        "library_versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {name: sha256_file(staging / name) for name in sorted(files)},
    }
    (staging / "bundle.json").write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if out_dir.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-old-", dir=out_dir.parent))
        out_dir.rename(old / "bundle")
    os.replace(staging, out_dir)
    if old is not None:
        _remove_old_bundle(old)
    return Bundle.load(out_dir)


def _remove_old_bundle(holder: Path) -> None:
    """Delete the replaced bundle's own files; keep (and say so) anything else in it."""
    folder = holder / "bundle"
    own = _bundle_files(folder) or set()
    for name in sorted(own, key=len, reverse=True):
        path = folder / name
        if path.is_file() or path.is_symlink():
            path.unlink()
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    try:
        folder.rmdir()
        holder.rmdir()
    except OSError:
        log.warning("the replaced bundle's folder %s still holds files that appeared while "
                    "training; they were kept", folder)


def discard_staging(staging: Path) -> None:
    """Remove a staging folder this process created (after a failed training run)."""
    shutil.rmtree(staging, ignore_errors=True)
