"""The web page end to end in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Upload a good and a defective part, see the decisions and the overlay, move the threshold past the defect's
score and see its decision flip, and check on a screenshot that the overlay is drawn (not blank).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                 "(apt-get install chromium); Playwright's browsers are never downloaded")]


@pytest.fixture(scope="module")
def page(live_url):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(live_url)
        yield page
        browser.close()
        assert not errors, errors


def test_upload_overlay_threshold_and_recent(page, uploads, tmp_path):
    paths = []
    for name, data in (("good.png", uploads[0]), ("defective.png", uploads[3])):
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    page.wait_for_function("document.getElementById('model').textContent.includes('knn')")
    page.set_input_files("#file-input", paths)
    page.wait_for_function("document.getElementById('message').textContent.includes('2 image(s) inspected')",
                           timeout=60_000)

    rows = page.locator("#results tr")
    assert rows.count() >= 2
    decisions = {rows.nth(i).locator("td").nth(1).inner_text(): rows.nth(i).get_attribute("data-decision")
                 for i in range(2)}
    assert decisions == {"good.png": "ok", "defective.png": "defect"}
    # the last upload (the defective part) is shown, with its region outlined
    assert page.inner_text("#filename") == "defective.png" and page.inner_text("#decision") == "defect"
    assert int(page.inner_text("#regions")) >= 1

    shot = np.asarray(Image.open(io.BytesIO(page.locator("#view").screenshot())).convert("RGB")).astype(int)
    assert shot.std() > 10, "the overlay canvas is blank"
    assert (shot.min(axis=2) >= 250).sum() > 20, "no white region outline drawn"
    assert (shot[..., 0] - shot[..., 2] > 60).sum() > 100, "no hot (red) area in the overlay"

    # the decision flips just above the image's normalised score; the outline shrinks with the threshold
    # (regions are drawn on the map's own normalisation, calibrated on map maxima, so some may remain)
    score = float(page.inner_text("#normalized-score"))
    set_threshold(page, score + 0.01)
    assert page.inner_text("#decision") == "ok"
    for name in ("good.png", "defective.png"):
        assert page.locator("#results tr", has_text=name).first.get_attribute("data-decision") == "ok"
    after = np.asarray(Image.open(io.BytesIO(page.locator("#view").screenshot())).convert("RGB")).astype(int)
    assert (after.min(axis=2) >= 250).sum() < (shot.min(axis=2) >= 250).sum()  # outline gone with the region

    page.click("#threshold-reset")
    assert page.inner_text("#decision") == "defect"
    page.locator("#results tr", has_text="good.png").first.click()
    page.wait_for_function("document.getElementById('filename').textContent == 'good.png'")
    assert page.inner_text("#decision") == "ok"


def set_threshold(page, value: float) -> None:
    """Move the slider as a user does: set the value and fire its input event."""
    page.eval_on_selector("#threshold", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                          value)
