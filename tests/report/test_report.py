"""The HTML report: rows, decisions, filters, charts and metrics for labelled data, PNGs beside the page."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from lineguard.metrics import image_auroc
from lineguard.report.charts import histogram_svg, roc_svg
from lineguard.report.html import ReportItem, write_report
from lineguard.inspect import decide
from lineguard.scoring.threshold import Thresholds

CHROMIUM = Path("/usr/bin/chromium")


def items(n: int, *, labelled: bool = True, calibrated: bool = True, size: int = 32) -> list[ReportItem]:
    """n images; every third is defective, with a hot square; normalised scores = raw / 10."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        defective = i % 3 == 0
        values = rng.uniform(0, 0.5, (size, size))
        if defective:
            values[8:16, 8:16] = 1.5 + i / n
        score = float(values.max() * 10)
        finding = decide(np.array([score]), values[None], Thresholds(image_threshold=10.0, pixel_threshold=1.0)
                         )[0] if calibrated else None
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        label = ("spot" if defective else "good") if labelled else None
        truth = values >= 1.5 if defective else None
        out.append(ReportItem(f"img{i:03d}.png", image, values, score, label=label, mask=truth,
                              finding=finding))
    return out


def test_rows_decisions_filters_and_pngs(tmp_path):
    report = items(12)
    page = write_report(tmp_path / "r", report, title="run <1>", calibration="mu3sigma: test")
    text = page.read_text()
    assert text.count("<tr data-label=") == 12
    assert text.count('data-decision="defect"') == 4 and text.count('data-decision="ok"') == 8
    assert '<select id="decision"' in text and '<option value="defect">' in text
    assert '<option value="spot">' in text and '<option value="good">' in text
    assert "run &lt;1&gt;" in text and "mu3sigma: test" in text  # escaped title, calibration shown
    assert text.count('loading="lazy"') == 24
    assert len(list((tmp_path / "r" / "images").glob("*.png"))) == 24
    assert not re.search(r"(src|href)=\"https?:", text), "the page must not load anything from the network"
    # rows are sorted by score, worst first
    scores = [float(s) for s in re.findall(r'<td class="num" data-v="([^"]+)">', text)[::3]]
    assert scores == sorted(scores, reverse=True)


def test_labelled_data_gets_charts_and_metrics(tmp_path):
    report = items(12)
    text = write_report(tmp_path / "r", report, title="t").read_text()
    assert text.count("<svg") == 2 and "ROC curve" in text and "score histograms" in text
    labels = [it.label != "good" for it in report]
    auroc = image_auroc(labels, [it.score for it in report])
    assert f"<tr><td>image_auroc</td><td class=\"num\">{auroc:.4f}</td></tr>" in text
    assert "defective caught (TP)</td><td class=\"num\">4<" in text
    assert "good rejected (FP)</td><td class=\"num\">0<" in text


def test_unlabelled_and_uncalibrated(tmp_path):
    text = write_report(tmp_path / "a", items(6, labelled=False), title="t").read_text()
    assert "<svg" not in text and "image_auroc" not in text
    text = write_report(tmp_path / "b", items(6, calibrated=False), title="t").read_text()
    assert 'data-decision=""' in text and "uncalibrated" in text and '<th onclick="sortBy(2)">label' in text


def test_several_hundred_images_stay_light(tmp_path):
    page = write_report(tmp_path / "r", items(300, size=16), title="t")
    assert page.stat().st_size < 300 * 1200  # a few hundred bytes of HTML per image; pictures load lazily


def test_charts_are_well_formed_svg():
    good, bad = np.array([0.1, 0.2, 0.3]), np.array([0.25, 0.9])
    for svg in (histogram_svg(good, bad, 0.5, x_label="s"), roc_svg(np.array([0, 0, 0, 1, 1]),
                                                                      np.concatenate([good, bad]), 0.5)):
        assert ET.fromstring(svg).tag.endswith("svg")
    roc = ET.fromstring(roc_svg(np.array([0, 0, 0, 1, 1]), np.concatenate([good, bad]), 0.5))
    ns = {"s": "http://www.w3.org/2000/svg"}
    point = roc.find("s:circle", ns)
    # at 0.5: no good part rejected, one of two defects caught -> (0, 0.5) in axis coordinates
    assert float(point.get("cx")) == pytest.approx(48.0)
    assert "detection rate 0.500" in ET.tostring(roc, "unicode")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_filter_and_sort_in_a_browser(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    page_path = write_report(tmp_path / "r", items(12), title="t")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page()
        page.goto(page_path.as_uri())
        page.select_option("#decision", "defect")
        assert page.inner_text("#shown") == "4"
        assert page.locator("#items tbody tr:visible").count() == 4
        page.select_option("#decision", "")
        header = page.locator("#items th", has_text="score")
        header.click()  # the first click sorts descending, the second ascending
        header.click()
        first = page.locator("#items tbody tr").first.locator("td").nth(1).get_attribute("data-v")
        assert float(first) == pytest.approx(min(it.score for it in items(12)), rel=1e-5)
        browser.close()


def test_large_maps_are_drawn_at_report_size_with_their_regions(tmp_path):
    """A results folder of a large tiled frame: pictures come out at most THUMBNAIL px, aspect kept, and a
    defect region of a few pixels of the full map is still outlined."""
    from PIL import Image

    from lineguard.io.store import ResultStore, save_thresholds
    from lineguard.report.html import THUMBNAIL
    from lineguard.report.runs import store_report

    height, width = 600, 2400
    frame = tmp_path / "frame.png"
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(frame)
    values = np.zeros((height, width), dtype=np.float32)
    values[300:303, 1200:1203] = 5.0  # a 3 × 3 px hot spot: 1/10 of a report pixel across
    results = tmp_path / "results"
    with ResultStore(results) as store:
        save_thresholds(results, Thresholds(image_threshold=1.0, pixel_threshold=1.0))
        store.append({"path": str(frame), "score": 5.0}, values)
        page = store_report(store, title="frame")
    overlay = Image.open(next((page.parent / "images").glob("*_overlay.png")))
    assert overlay.size == (THUMBNAIL, THUMBNAIL // 4)  # (w, h): 2400 × 600 scaled to 256 wide
    assert 'data-decision="defect"' in page.read_text()
    pixels = np.asarray(overlay.convert("RGB"))
    assert (pixels == (255, 255, 255)).all(axis=-1).any(), "the region's white outline must survive the shrink"
