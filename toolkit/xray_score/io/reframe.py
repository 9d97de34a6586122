"""Re-framed copies of a film: the same lungs, other borders (the framing-shift check).

Normal training films show neck, shoulders and arms; pneumonia films are framed tightly on the
thorax. A model that learned the framing flags a normal film once it is cropped to the thorax.
A re-framing removes fractions of the full-size image's height and width (top, bottom, left,
right) and saves the rest as a JPEG (quality 95), as a user's differently framed file would
be; it then goes through the canonical decode like any file. TensorFlow-free (workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2

from ..errors import ErrorKind, ImageError
from .decode import Decoded, decode_gray
from .preprocess import FileResult, run_guarded

# name -> fractions removed (top, bottom, left, right)
REFRAMINGS: dict[str, tuple[float, float, float, float]] = {
    "reencoded": (0.0, 0.0, 0.0, 0.0),  # control: JPEG q95 re-encoding alone
    "thorax": (0.22, 0.05, 0.10, 0.10),  # the crop: no neck, no shoulders
    "tight": (0.28, 0.10, 0.15, 0.15),
    "loose": (0.10, 0.02, 0.05, 0.05),
    "off_centre_left": (0.22, 0.05, 0.00, 0.20),
    "off_centre_right": (0.22, 0.05, 0.20, 0.00),
}
JPEG_QUALITY = 95


def reframe(gray: Any, box: tuple[float, float, float, float]) -> Any:
    """The part of a gray image left after removing ``box`` fractions from its edges."""
    top, bottom, left, right = box
    h, w = gray.shape
    y0, y1 = round(h * top), h - round(h * bottom)
    x0, x1 = round(w * left), w - round(w * right)
    if y1 - y0 < 8 or x1 - x0 < 8:
        raise ImageError(ErrorKind.UNSUPPORTED, f"{w}x{h} is too small to re-frame by {box}")
    return gray[y0:y1, x0:x1]


def reframed_jpeg(gray: Any, box: tuple[float, float, float, float],
                  quality: int = JPEG_QUALITY) -> bytes:
    """A re-framed copy of a full-size gray image, as JPEG file bytes."""
    ok, buf = cv2.imencode(".jpg", reframe(gray, box), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError(ErrorKind.UNSUPPORTED, "could not encode the re-framed copy")
    return buf.tobytes()


@dataclass(frozen=True)
class ReframedPreprocessor:
    """One file -> the model inputs of the file itself and of each re-framed copy.

    ``inner`` is a bundle's preprocessor (anything with ``from_bytes`` and ``stack``);
    ``FileResult.x`` is a tuple: the file as it is, then one entry per box in ``boxes``.
    """

    inner: Any
    boxes: tuple[tuple[float, float, float, float], ...]
    max_pixels: int

    def __call__(self, path: str) -> FileResult:
        def work(data: bytes) -> tuple[Decoded, tuple[Any, ...]]:
            decoded, as_is = self.inner.from_bytes(data, {})
            full = decode_gray(data, max_pixels=self.max_pixels)  # full size, never drafted
            copies = [self.inner.from_bytes(reframed_jpeg(full.gray, box), {})[1]
                      for box in self.boxes]
            return decoded, (as_is, *copies)

        return run_guarded(path, work)

    def stack(self, xs: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        return tuple(self.inner.stack([x[i] for x in xs]) for i in range(len(self.boxes) + 1))
