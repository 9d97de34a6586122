"""Open every report kind in headless Chromium: no console errors, images load, numbers shown."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_report import make_results, write_all_kinds
from xray_score.evaluation import results
from xray_score.report import render

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing on CI")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _expected_texts(kind: str) -> list[str]:
    """Numbers the page must show, recomputed from the same data."""
    if kind == "evaluation":
        res = results.evaluate_results(make_results(), 0.4, n_boot=1)
        return [
            render.fmt_num(res["at_threshold"]["roc_auc"]),
            render.fmt_pct(res["at_threshold"]["sensitivity"]),
        ]
    if kind == "run_summary":
        scores = results.evaluate_results(make_results(labeled=False))["scores"]
        return [render.fmt_pct(scores["frac_above"]), "carry no true labels"]
    return ["DeLong p", "statistically significant at 0.05"]


@pytest.mark.parametrize("kind", ["evaluation", "run_summary", "compare"])
def test_report_renders_in_chromium(browser: object, tmp_path: Path, kind: str) -> None:
    path = write_all_kinds(tmp_path, n_boot=50)[kind]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "request",
        lambda req: (
            None
            if req.url.startswith(("file:", "data:"))
            else errors.append(f"network request: {req.url}")
        ),
    )
    page.goto(path.resolve().as_uri(), wait_until="load")
    assert errors == []
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert widths and all(w > 0 for w in widths), widths
    text = page.inner_text("body")
    for expected in _expected_texts(kind):
        assert expected in text, expected
    assert "<script>alert(1)</script>" in text  # shown as text, not executed
    shot = tmp_path / f"{kind}.png"
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    if target := os.environ.get("XRAY_SCORE_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)
