"""Find X-ray files in a folder: recursive, sorted, junk skipped, formats sniffed by content."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import MissingPathError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)
JUNK_NAMES = frozenset(
    {"thumbs.db", "desktop.ini", "__macosx", ".ds_store", ".ipynb_checkpoints", "$recycle.bin"}
)
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def sniff_format(head: bytes) -> str | None:
    """Name the image format from a file's first bytes (content, not extension).

    DICOM is tested first: its 128-byte preamble may itself hold a TIFF header.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def _is_junk(name: str) -> bool:
    return name.startswith((".", "~$")) or name.lower() in JUNK_NAMES


def _looks_like_image(path: str) -> bool:
    if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            return sniff_format(fh.read(132)) is not None
    except OSError:
        return False


def discover(root: str | os.PathLike) -> list[Path]:
    """All candidate image files under ``root``, recursively, in a deterministic order.

    Skips hidden and junk entries, follows directory symlinks but never a loop (each real
    directory is visited once), and keeps a file when its extension or its content says image.
    A single file may be given instead of a folder.
    """
    return [Path(p) for p in discover_files(root)]


def discover_files(root: str | os.PathLike) -> list[str]:
    """:func:`discover` as strings (``str`` of each path it gives), for folders of many files."""
    top = Path(root)
    if top.is_file():
        return [str(top)]
    if not top.is_dir():
        raise MissingPathError(f"no such folder: {top}")
    found: list[str] = []
    _walk(str(top), set(), found)
    kept = [p for p in found if _looks_like_image(p)]
    if len(kept) < len(found):
        log.info("ignored %d file(s) that are images neither by extension nor by content",
                 len(found) - len(kept))
    return kept


def _walk(folder: str, seen: set[tuple[int, int]], found: list[str]) -> None:
    """Append the files under ``folder`` to ``found``, depth first, by name."""
    try:
        st = os.stat(folder)
    except OSError as exc:
        log.warning("cannot enter %s: %s", folder, exc)
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        log.warning("skipping %s: directory already visited (symlink loop?)", folder)
        return
    seen.add(key)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        log.warning("cannot list %s: %s", folder, exc)
        return
    for entry in entries:
        if _is_junk(entry.name):
            continue
        path = entry.name if folder == "." else entry.path  # as str(Path(entry.path))
        try:
            if entry.is_dir(follow_symlinks=True):
                _walk(path, seen, found)
            elif entry.is_file(follow_symlinks=True):
                found.append(path)
            elif entry.is_symlink():
                log.warning("skipping broken symlink %s", path)
            else:
                log.warning("skipping %s: not a regular file (FIFO, socket or device)", path)
        except OSError as exc:  # e.g. ELOOP on a self-referencing symlink
            log.warning("skipping %s: %s", path, exc)


_PLAIN_SUFFIXES = IMAGE_EXTENSIONS - {".dcm", ".dicom"}


def has_dicom(paths: Iterable[str | os.PathLike]) -> bool:
    """Whether any file is DICOM by content (files with image-format suffixes are not read)."""
    for path in paths:
        if os.path.splitext(path)[1].lower() in _PLAIN_SUFFIXES:
            continue
        try:
            with open(path, "rb") as fh:
                if sniff_format(fh.read(132)) == "dicom":
                    return True
        except OSError:
            continue
    return False
