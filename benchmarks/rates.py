"""Shared helpers of the throughput benchmarks: the 2,496-file set, whole commands timed with
the CPU of their whole process tree, and the decode-only and network-only limits.

The set: every one of the 416 shared full-resolution originals re-encoded at six JPEG qualities
(60, 70, 80, 85, 90, 95), so 2,496 distinct files (distinct sha256, nothing reused from a ledger)
of the kind users score, labeled as their source (``NORMAL/``, ``PNEUMONIA/``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
QUALITIES = (60, 70, 80, 85, 90, 95)


def build_set(dest: Path, originals: Path = SHARED / "originals") -> Path:
    """The 2,496-file set in ``dest`` (kept when it is already complete)."""
    from PIL import Image

    sources = sorted(p for p in originals.rglob("*.jpeg"))
    if not sources:
        raise SystemExit(f"no originals under {originals}")
    want = len(sources) * len(QUALITIES)
    if dest.is_dir() and sum(1 for _ in dest.rglob("*.jpeg")) == want:
        return dest
    for quality in QUALITIES:
        for src in sources:
            folder = dest / src.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            with Image.open(src) as img:
                img.load()
                img.save(folder / f"q{quality}-{src.name}", quality=quality)
    return dest


def with_copies(folder: Path, copies: int, dest: Path) -> Path:
    """``folder``'s files ``copies`` times over, each copy with its own JPEG comment: distinct
    sha256s, the same pixels and decode cost (kept when already complete)."""
    sources = sorted(folder.rglob("*.jpeg"))
    if dest.is_dir() and sum(1 for _ in dest.rglob("*.jpeg")) == len(sources) * copies:
        return dest
    for src in sources:
        data = src.read_bytes()
        target = dest / src.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for i in range(copies):
            tag = f"copy {i}".encode()
            (target / f"c{i}-{src.name}").write_bytes(
                data[:2] + b"\xff\xfe" + (len(tag) + 2).to_bytes(2, "big") + tag + data[2:])
    return dest


@dataclass
class Timed:
    """A whole command: wall seconds, CPU seconds of its process tree (main and the rest),
    peak RSS of the tree, and its last stdout line as JSON when there is one."""

    wall: float
    cpu_main: float
    cpu_children: float
    peak_rss_mb: float
    summary: dict

    @property
    def cpu(self) -> float:
        return self.cpu_main + self.cpu_children


def run_command(cmd: list[str], poll: float = 0.05, env: dict | None = None) -> Timed:
    """Run ``cmd`` to the end (xray-score from bytecode, as installed: see
    :func:`installed_bytecode`); its process tree's CPU is sampled every ``poll`` seconds."""
    import psutil

    installed_bytecode()

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    root = psutil.Process(proc.pid)
    cpu: dict[int, tuple[bool, float]] = {}
    peak = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        rss = 0
        for p in tree:
            try:
                times = p.cpu_times()
                cpu[p.pid] = (p.pid == proc.pid, times.user + times.system)
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, rss)
        time.sleep(poll)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 10):
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {err[-3000:]}")
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
    return Timed(wall, sum(v for main, v in cpu.values() if main),
                 sum(v for main, v in cpu.values() if not main), peak / 2**20,
                 json.loads(lines[-1]) if lines else {})


# The limits run with OpenBLAS single-threaded, as ``batch`` does: its threads starting at
# NumPy's import cost ~0.2 s of CPU per process, which a limit should not carry.
LEAN_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}

_DECODE = """
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

def work(args):
    paths, size, draft = args
    from xray_score.batch.memory import reuse_freed_memory
    from xray_score.io.decode import decode_gray, read_bytes, resize_square
    reuse_freed_memory()  # as batch's workers do
    for p in paths:
        resize_square(decode_gray(read_bytes(p), draft_size=size if draft else None).gray, size)
    return len(paths)

if __name__ == "__main__":
    root, size, draft, jobs = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
    files = sorted(str(p) for p in Path(root).rglob("*.jpeg"))
    chunks = [(files[i:i + 32], size, draft) for i in range(0, len(files), 32)]
    with ProcessPoolExecutor(jobs) as pool:
        print(sum(pool.map(work, chunks)))
"""


def decode_limit(folder: Path, size: int, draft: bool, jobs: int = 2) -> tuple[float, Timed]:
    """Files per second of the decode-only route: read, (DCT-scaled) decode and resize to the
    bundle's input size in ``jobs`` processes, nothing else; a whole command."""
    timed = run_command([sys.executable, "-c", _DECODE, str(folder), str(size),
                         "1" if draft else "0", str(jobs)], env=LEAN_ENV)
    n = sum(1 for _ in folder.rglob("*.jpeg"))
    return n / timed.wall, timed


_NETWORK = """
import sys, time
import numpy as np
from concurrent.futures import ProcessPoolExecutor

def work(args):
    tflite, pixels, lo, hi, threads = args
    from xray_score.batch.memory import reuse_freed_memory
    from xray_score.deep.lite import LiteNetwork
    reuse_freed_memory()  # as batch's workers do
    net = LiteNetwork(open(tflite, "rb").read(), threads)
    x = np.load(pixels, mmap_mode="r")
    for i in range(lo, hi, 32):
        batch = np.asarray(x[i:min(i + 32, hi)], np.float32)[..., None]
        if len(batch) < 32:
            batch = np.concatenate([batch, np.zeros((32 - len(batch), *batch.shape[1:]),
                                                    np.float32)])
        net.run(batch)
    return hi - lo

if __name__ == "__main__":
    tflite, pixels, procs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    n = len(np.load(pixels, mmap_mode="r"))
    cuts = np.linspace(0, n, procs + 1).astype(int)
    with ProcessPoolExecutor(procs) as pool:
        print(sum(pool.map(work, [(tflite, pixels, int(a), int(b), threads)
                                  for a, b in zip(cuts[:-1], cuts[1:])])))
"""


def network_limit(bundle_path: Path, folder: Path, work: Path, cores: int = 2
                  ) -> tuple[float, str]:
    """Files per second of the CNN bundle's TFLite network alone on canonical pixels decoded
    beforehand: the better of ``cores`` processes x 1 thread and 1 process x ``cores``
    threads; a whole command each."""
    import numpy as np

    from xray_score.model.bundle import Bundle

    bundle = Bundle.load(bundle_path)
    stored = (bundle.meta.get("cnn") or {}).get("tflite")
    if not stored:
        raise SystemExit(f"{bundle_path} has no TFLite network")
    pixels = work / f"pixels-{bundle.input_size}.npy"
    if not pixels.exists():
        pre = bundle.preprocessor()
        files = sorted(str(p) for p in folder.rglob("*.jpeg"))
        np.save(pixels, np.stack([pre.decode(p).x for p in files]))
    n = len(np.load(pixels, mmap_mode="r"))
    best, how = 0.0, ""
    for procs, threads in ((cores, 1), (1, cores)):
        timed = run_command([sys.executable, "-c", _NETWORK, str(bundle.file(stored["file"])),
                             str(pixels), str(procs), str(threads)], env=LEAN_ENV)
        if n / timed.wall > best:
            best, how = n / timed.wall, f"{procs} process(es) x {threads} thread(s)"
    return best, how


@lru_cache(maxsize=1)
def installed_bytecode() -> Path:
    """Compile xray-score's modules to bytecode where Python looks for it, as ``pip install``
    does: an installed ``xray-score`` starts from bytecode. From a checkout whose environment
    sets ``PYTHONDONTWRITEBYTECODE`` (this machine's does), every command would otherwise
    compile its ~80 modules again (~30 ms in the caller and ~15 ms in each worker of a
    2,500-file run), which no installed copy pays. Files already compiled are left as they are.
    """
    import compileall

    import xray_score

    folder = Path(xray_score.__file__).parent
    compileall.compile_dir(folder, quiet=1)
    return folder


def batch_command(folder: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "xray_score.cli", "-q", "batch", str(folder), "--model",
            str(model), "--out", str(out), *extra]
