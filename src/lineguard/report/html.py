"""A self-contained HTML page of a run: per image the input, the heatmap overlay with the detected region
outlined, the score and the decision; for labelled data also score histograms, the ROC curve and metrics.

PNG files are written beside the page (relative links, so the folder can be zipped and mailed); the page
itself needs no server and no network. Thumbnails load lazily and the table is plain HTML sorted and filtered
by a few lines of script, so a run of several hundred images opens at once.
"""

from __future__ import annotations

import html
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lineguard.metrics import evaluate as image_metrics
from lineguard.report.charts import histogram_svg, roc_svg
from lineguard.report.overlay import NORMALIZED_RANGE, annotate, display_range
from lineguard.inspect import Finding
from lineguard.scoring.threshold import NORMALIZED_THRESHOLD

THUMBNAIL = 256
GOOD = "good"


@dataclass
class ReportItem:
    name: str
    image: np.ndarray  # (H, W, 3) uint8, at the map's resolution
    anomaly_map: np.ndarray  # (H, W) float; normalised (1.0 = pixel threshold) when finding is set
    score: float  # raw, in the detector's units
    label: str | None = None  # "good", a defect type, or None / "unknown" when unknown
    mask: np.ndarray | None = None  # (H, W) bool ground truth, drawn as a magenta contour
    finding: Finding | None = None  # decision and detected region, when the detector is calibrated

    @property
    def is_labelled(self) -> bool:
        return self.label not in (None, "", "unknown")


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse}td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left}
#items th{cursor:pointer;background:#f4f4f4}img{width:160px;height:160px}
.num{font-variant-numeric:tabular-nums;text-align:right}.charts{display:flex;flex-wrap:wrap;gap:1rem}
.defect{color:#b3261e;font-weight:600}.ok{color:#1e7b34}
"""

_SCRIPT = """
function sortBy(col){const t=document.getElementById('items'),rows=[...t.tBodies[0].rows];
const dir=t.dataset.col==col&&t.dataset.dir=='desc'?1:-1;t.dataset.col=col;t.dataset.dir=dir<0?'desc':'asc';
rows.sort((a,b)=>{const x=a.cells[col].dataset.v,y=b.cells[col].dataset.v;
return (isNaN(x)||isNaN(y)?x.localeCompare(y):x-y)*dir});rows.forEach(r=>t.tBodies[0].appendChild(r))}
function applyFilters(){const d=document.getElementById('decision').value;
const l=document.getElementById('label').value;let shown=0;
for(const r of document.getElementById('items').tBodies[0].rows){
const keep=(!d||r.dataset.decision==d)&&(!l||r.dataset.label==l);r.style.display=keep?'':'none';shown+=keep}
document.getElementById('shown').textContent=shown}
"""


def _options(values: list[str]) -> str:
    return "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)


def _cell(value: str, sort_key: str | float, css: str = "") -> str:
    css = f' class="{css}"' if css else ""
    return f'<td{css} data-v="{html.escape(str(sort_key))}">{html.escape(value)}</td>'


def _labelled_section(items: list[ReportItem], metrics: dict[str, float] | None, calibrated: bool) -> str:
    """Charts and metrics when every image has a label and both classes occur; else only given metrics."""
    labelled = [it for it in items if it.is_labelled]
    rows = dict(metrics or {})
    charts = ""
    if labelled and len(labelled) == len(items) and len({it.label == GOOD for it in items}) == 2:
        labels = np.array([it.label != GOOD for it in items])
        raw = np.array([it.score for it in items])
        if not metrics:
            rows.update(image_metrics(labels, raw))
        shown = np.array([it.finding.normalized_score for it in items]) if calibrated else raw
        threshold = NORMALIZED_THRESHOLD if calibrated else None
        axis = "normalised score (threshold 1.0)" if calibrated else "score"
        charts = (histogram_svg(shown[~labels], shown[labels], threshold, x_label=axis)
                  + roc_svg(labels, shown, threshold))
        if calibrated:
            rejected = shown >= NORMALIZED_THRESHOLD
            tp, fp = int((rejected & labels).sum()), int((rejected & ~labels).sum())
            fn, tn = int((~rejected & labels).sum()), int((~rejected & ~labels).sum())
            rows.update({"defective caught (TP)": tp, "good rejected (FP)": fp, "defective passed (FN)": fn,
                         "good passed (TN)": tn, "detection rate": tp / max(tp + fn, 1),
                         "false-alarm rate": fp / max(fp + tn, 1), "precision": tp / max(tp + fp, 1)})
    table = "".join(f'<tr><td>{html.escape(k)}</td><td class="num">{v:.4f}</td></tr>' if isinstance(v, float)
                    else f'<tr><td>{html.escape(k)}</td><td class="num">{v}</td></tr>'
                    for k, v in rows.items())
    table = f'<table class="metrics">{table}</table>' if table else ""
    return f'<div class="charts">{charts}{table}</div>'


def write_report(folder: str | Path, items: list[ReportItem], *, title: str,
                 metrics: dict[str, float] | None = None, calibration: str | None = None) -> Path:
    """Write ``index.html`` and ``images/*.png`` into ``folder``; return the page's path.

    ``calibration`` says how the thresholds were obtained (shown on the page); decisions and contours appear
    when every item has a ``finding``.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    calibrated = bool(items) and all(item.finding is not None for item in items)
    if calibrated:
        low, high = NORMALIZED_RANGE
    else:
        low, high = display_range([item.anomaly_map for item in items]) if items else (0.0, 1.0)
    ordered = sorted(items, key=lambda it: -it.score)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # PNG encoding in parallel
        list(pool.map(lambda i: _write_pictures(folder / "images" / f"{i:05d}", ordered[i], low, high),
                      range(len(ordered))))
    rows = []
    for i, item in enumerate(ordered):
        stem = f"{i:05d}"
        finding = item.finding
        label = item.label if item.is_labelled else ""
        decision = finding.decision if finding else ""
        rows.append(
            f'<tr data-label="{html.escape(label)}" data-decision="{decision}">'
            + _cell(item.name, item.name) + _cell(f"{item.score:.4g}", f"{item.score:.6g}", "num")
            + (_cell(f"{finding.normalized_score:.3f}", f"{finding.normalized_score:.6g}", "num")
               + _cell(decision, decision, decision)
               + _cell(str(len(finding.regions)), len(finding.regions), "num") if finding else "")
            + _cell(label or "–", label)
            + f'<td><img src="images/{stem}_input.png" alt="input" loading="lazy"></td>'
            f'<td><img src="images/{stem}_overlay.png" alt="anomaly map" loading="lazy"></td></tr>')
    headers = ["image", "score"] + (["normalised", "decision", "regions"] if calibrated else []) + ["label"]
    header_cells = "".join(f'<th onclick="sortBy({i})">{h}</th>' for i, h in enumerate(headers))
    decisions = [item.finding.decision for item in items] if calibrated else []
    labels = sorted({item.label for item in items if item.is_labelled})
    summary = (f"{decisions.count('defect')} defect, {decisions.count('ok')} ok; thresholds: "
               f"{html.escape(calibration or 'unknown')}. " if calibrated
               else "no thresholds (uncalibrated). ")
    scale = ("normalised map from 0 (blue) to 2 (red), pixel threshold 1.0; white outline: detected region"
             if calibrated else f"colour scale from {low:.4g} (blue) to {high:.4g} (red)")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(items)} images: {summary}{scale}; magenta outline: ground truth.</p>
{_labelled_section(items, metrics, calibrated)}
<p>Decision: <select id="decision" onchange="applyFilters()"><option value="">all</option>
{_options(["defect", "ok"] if calibrated else [])}</select>
Label: <select id="label" onchange="applyFilters()"><option value="">all</option>{_options(labels)}</select>
showing <span id="shown">{len(items)}</span> of {len(items)}; click a column header to sort.</p>
<table id="items"><thead><tr>{header_cells}<th>input</th><th>anomaly map</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></body></html>"""
    path = folder / "index.html"
    path.write_text(_printable(page), encoding="utf-8")
    return path


def _printable(text: str) -> str:
    """File names whose bytes are not UTF-8 (kept by Python as lone surrogates) shown with ``\\xNN`` escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _write_pictures(stem: Path, item: ReportItem, low: float, high: float) -> None:
    """``<stem>_input.png`` and ``<stem>_overlay.png`` (the heatmap, the detected region, the ground truth)."""
    finding = item.finding
    heat = annotate(item.image, item.anomaly_map, low, high, region=finding.mask if finding else None,
                    truth=item.mask)
    _thumbnail(item.image).save(stem.with_name(f"{stem.name}_input.png"))
    _thumbnail(heat).save(stem.with_name(f"{stem.name}_overlay.png"))


def _thumbnail(array: np.ndarray) -> Image.Image:
    image = Image.fromarray(array)
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return image
