"""How a CNN bundle's scores move between the 224 px training copies and the originals.

For every original in ``../shared/data/originals/train`` whose 224 px copy is in
``../shared/data/chest_xray_224/train`` (same file name), score both with the bundle's own
runtime and print:

- ROC AUC on copies, originals, and originals re-compressed like the copies (JPEG 75);
- the median paired logit difference (original - copy) per class;
- the sensitivity/specificity on originals at the threshold that gives sensitivity 0.95 on the
  copies (what a bundle trained without ``--val`` does: it sets its threshold on copies).

Use a bundle whose training left these patients out (the shipped ones do: ``--val originals``).

    python benchmarks/copy_shift.py [--model models/cnn]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from PIL import Image
from sklearn.metrics import roc_auc_score

from xray_score.io.preprocess import Preprocessor
from xray_score.model.bundle import Bundle
from xray_score.resources import default_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def like_copy(x: np.ndarray, quality: int = 75) -> np.ndarray:
    """Re-compress a canonical image the way the copies were stored (RGB JPEG)."""
    buf = io.BytesIO()
    Image.fromarray(x).convert("RGB").save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="CNN bundle (default: shipped)")
    parser.add_argument("--shared", default=str(SHARED), help="../shared/data")
    args = parser.parse_args()
    shared = Path(args.shared)
    pairs = [(o, shared / "chest_xray_224" / o.relative_to(shared / "originals"))
             for o in sorted((shared / "originals" / "train").rglob("*.jpeg"))]
    pairs = [(o, c) for o, c in pairs if c.is_file()]
    y = np.array([int(o.parent.name == "PNEUMONIA") for o, _ in pairs])
    bundle = Bundle.load(args.model or default_model("cnn"))
    size, draft = bundle.input_size, bool(bundle.meta["pipeline"].get("decode", {})
                                          .get("jpeg_draft", False))
    scoring, plain = Preprocessor(size, jpeg_draft=draft), Preprocessor(size)
    originals = np.stack([r.x for r in Parallel(n_jobs=2)(
        delayed(scoring)(str(o)) for o, _ in pairs)])
    copies = np.stack([plain(str(c)).x for _, c in pairs])
    predictor = bundle.predictor()
    raw = {"copies": predictor.predict_raw(copies),
           "originals": predictor.predict_raw(originals),
           "originals as JPEG 75": predictor.predict_raw(np.stack([like_copy(x)
                                                                   for x in originals]))}
    pos = np.sort(raw["copies"][y == 1])
    threshold = pos[int(np.floor(0.05 * len(pos)))]  # sensitivity 0.95 on the copies
    print(f"{bundle.name} ({bundle.model_id}), {len(pairs)} originals with their copies, "
          f"runtime {predictor.runtime}")
    for name, p in raw.items():
        hit = p >= threshold
        shift = logit(p) - logit(raw["copies"])
        print(f"{name:22s} AUC {roc_auc_score(y, p):.4f}  median logit shift vs copies: "
              f"PNEUMONIA {np.median(shift[y == 1]):+.2f}, NORMAL {np.median(shift[y == 0]):+.2f}"
              f"  at the copies' sens-0.95 threshold: sensitivity {hit[y == 1].mean():.3f}, "
              f"specificity {1 - hit[y == 0].mean():.3f}")


if __name__ == "__main__":
    main()
