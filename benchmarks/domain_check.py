"""In-domain and out-of-domain rates of a bundle's domain check, and what it costs.

    python benchmarks/domain_check.py [--model B] [--shared ../shared/data]

Scores, with the bundle, (1) every ``skimage.data`` image available offline, (2) generated
non-X-ray images (noise, a document, a colour scene, a screenshot, blank), (3) the 416 shared
originals inverted, which must come out of domain, and (4) the originals as they are and
re-framed, and 400 of the 224 px training copies, which must stay in domain. Then it times
``batch``'s route (workers score and send rows back) on the originals with the bundle as it is
and with a copy of it without domain statistics, alternating.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from timing import batch_rate  # benchmarks/timing.py, beside this script
from xray_score.batch.scorer import BatchScorer
from xray_score.io.discover import discover
from xray_score.io.reframe import REFRAMINGS, ReframedPreprocessor
from xray_score.model.bundle import Bundle
from xray_score.resources import default_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NOT_IMAGES = {"data_dir", "download_all", "file_hash", "lbp_frontal_face_cascade_filename"}


def skimage_images(folder: Path) -> int:
    import skimage.data as data

    n = 0
    for name in sorted(set(data.__all__) - NOT_IMAGES):
        try:
            img = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - needs a download, or not an image
            continue
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        while img.ndim > 3 or (img.ndim == 3 and img.shape[-1] not in (3, 4)):
            img = img[img.shape[0] // 2]  # a volume or a stack: its middle slice
        img = img.astype(np.float64)
        img = (255 * (img - img.min()) / max(img.max() - img.min(), 1e-9)).astype(np.uint8)
        if img.ndim == 3:
            img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"{name}.png"), img)
        n += 1
    return n


def generated(folder: Path, rng: np.random.Generator) -> None:
    cv2.imwrite(str(folder / "noise.png"), rng.integers(0, 256, (240, 320, 3), np.uint8))
    page = np.full((400, 300), 255, np.uint8)
    for i in range(24):
        cv2.putText(page, f"Invoice line {i}: 3 x item = {i * 21} EUR", (10, 16 + 16 * i),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, 0, 1)
    cv2.imwrite(str(folder / "document.png"), page)
    yy, xx = np.mgrid[0:240, 0:320]
    scene = np.stack([xx * 255 // 320, yy * 255 // 240, np.full_like(xx, 90)], -1)
    scene = scene.astype(np.uint8)
    cv2.circle(scene, (160, 120), 60, (30, 200, 250), -1)
    cv2.imwrite(str(folder / "photo.jpeg"), scene)
    ui = np.full((200, 320, 3), 245, np.uint8)
    ui[:28] = (160, 80, 40)
    cv2.imwrite(str(folder / "screenshot.png"), ui)
    cv2.imwrite(str(folder / "blank.png"), np.full((200, 200), 128, np.uint8))


def out_share(scorer: BatchScorer, paths: list[str]) -> tuple[float, int]:
    flags = []
    for batch in scorer.iter_batches(paths):
        if batch[0].ok:
            flags += [d > 1 for d in scorer.predict_with_domain(batch)[1]]
    return float(np.mean(flags)) if flags else float("nan"), len(flags)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--shared", default=str(SHARED))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bundle = Bundle.load(args.model or default_model())
    scorer = BatchScorer(bundle, n_jobs=2)
    if scorer.predictor.__dict__.get("domain") is None and bundle.kind != "ensemble":
        raise SystemExit(f"{bundle.path} has no domain statistics")
    originals = [str(p) for p in discover(Path(args.shared) / "originals")]
    copies = [str(p) for p in discover(Path(args.shared) / "chest_xray_224" / "train")]
    copies = [copies[i] for i in np.random.default_rng(0).choice(len(copies), 400, False)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "skimage").mkdir()
        (root / "generated").mkdir()
        (root / "inverted").mkdir()
        n_sk = skimage_images(root / "skimage")
        generated(root / "generated", np.random.default_rng(0))
        for path in originals:
            gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(root / "inverted" / (Path(path).stem + ".png")), 255 - gray)
        rows = [(f"skimage.data ({n_sk} images)", "out", discover(root / "skimage")),
                ("generated non-X-ray images", "out", discover(root / "generated")),
                ("shared originals, inverted", "out", discover(root / "inverted")),
                ("shared originals, as they are", "in", originals),
                ("224 px training copies (400)", "in", copies)]
        print(f"{bundle.name} ({bundle.model_id})")
        for label, want, paths in rows:
            share, n = out_share(scorer, [str(p) for p in paths])
            value = share if want == "out" else 1 - share
            print(f"{label:34s}: {100 * value:5.1f} % {want} of domain ({n} scored)")
    crops = tuple(v for k, v in REFRAMINGS.items() if k != "reencoded")
    inside = []
    for batch in scorer.iter_batches(originals, ReframedPreprocessor(scorer.preprocessor,
                                                                     crops, 10**8)):
        if batch[0].ok:
            for i in range(1, 1 + len(crops)):
                view = [replace(r, x=r.x[i]) for r in batch]
                inside += [d <= 1 for d in scorer.predict_with_domain(view)[1]]
    print(f"{'shared originals, re-framed (5 crops)':34s}: {100 * np.mean(inside):5.1f} % in "
          f"domain ({len(inside)} scored)")
    with tempfile.TemporaryDirectory() as tmp:
        plain = without_domain(bundle, Path(tmp) / "no-domain")
        on, off = [], []
        for _ in range(5):  # alternate, so the machine's drift hits both alike
            on.append(batch_rate(bundle, [Path(p) for p in originals])[0])
            off.append(batch_rate(plain, [Path(p) for p in originals])[0])
    extra, per_file = domain_cpu(bundle, originals)
    print(f"domain check: {extra:.3f} CPU ms per file, {100 * extra / per_file:.1f} % of a "
          f"worker's {per_file:.2f} CPU ms per file (in-process, best of 3)")
    print(f"batch's route on {len(originals)} originals, medians of 5 alternating runs: domain "
          f"on {np.median(on):.1f} img/s, off {np.median(off):.1f} img/s; ratio "
          f"{np.median(on) / np.median(off):.3f} (runs: "
          + ", ".join(f"{a / b:.3f}" for a, b in zip(on, off, strict=True)) + ")")


def domain_cpu(bundle: Bundle, paths: list[str], reps: int = 3) -> tuple[float, float]:
    """(CPU ms per file of the domain check, CPU ms per file of a worker's whole chunk task),
    best of ``reps``, measured in this process (CPU time is steadier than wall time here)."""
    from xray_score.batch.chunks import ChunkTask

    task = ChunkTask(str(bundle.path.resolve()), bundle.model_id, timeout=None)
    chunks = [paths[i:i + 64] for i in range(0, len(paths), 64)]
    task(chunks[0])
    pre = bundle.preprocessor()
    results = [pre(p) for p in paths]
    x = pre.stack([r.x for r in results if r.ok])
    predictor = bundle.predictor(threads=1)

    def best(work) -> float:
        times = []
        for _ in range(reps):
            start = time.process_time()
            work()
            times.append(time.process_time() - start)
        return 1000 * min(times) / len(paths)

    with_domain = best(lambda: [predictor.predict_with_domain(x[i:i + 64])
                                for i in range(0, len(x), 64)])
    without = best(lambda: [predictor.predict_raw(x[i:i + 64]) for i in range(0, len(x), 64)])
    return with_domain - without, best(lambda: [task(c) for c in chunks])


def without_domain(bundle: Bundle, dest: Path) -> Bundle:
    """A copy of ``bundle`` without its domain statistics (same model files otherwise)."""
    import json
    import shutil

    shutil.copytree(bundle.path, dest)
    meta = json.loads((dest / "bundle.json").read_text())
    (dest / meta.pop("domain")["file"]).unlink()
    meta["files"] = {k: v for k, v in meta["files"].items() if (dest / k).exists()}
    (dest / "bundle.json").write_text(json.dumps(meta, indent=2))
    return Bundle.load(dest)


if __name__ == "__main__":
    main()
