"""A self-contained HTML page of a run: per image the input, the heatmap overlay and the score.

PNG files are written beside the page (relative links, so the folder can be zipped and mailed); the page
itself needs no server and no network. Rows sort by score, worst first, and a filter narrows by label.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lineguard.report.overlay import display_range, draw_contour, overlay

THUMBNAIL = 256


@dataclass
class ReportItem:
    name: str
    image: np.ndarray  # (H, W, 3) uint8, at the map's resolution
    anomaly_map: np.ndarray  # (H, W) float
    score: float
    label: str | None = None  # "good", a defect type, or None when unknown
    mask: np.ndarray | None = None  # (H, W) bool ground truth, drawn as a contour


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse}td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left}
th{cursor:pointer;background:#f4f4f4}img{width:160px;height:160px;image-rendering:auto}
.metrics td{font-variant-numeric:tabular-nums}
"""

_SCRIPT = """
function sortBy(col){const t=document.getElementById('items'),rows=[...t.tBodies[0].rows];
const dir=t.dataset.col==col&&t.dataset.dir=='desc'?1:-1;t.dataset.col=col;t.dataset.dir=dir<0?'desc':'asc';
rows.sort((a,b)=>{const x=a.cells[col].dataset.v,y=b.cells[col].dataset.v;
return (isNaN(x)?x.localeCompare(y):x-y)*dir});rows.forEach(r=>t.tBodies[0].appendChild(r))}
function filterLabel(v){for(const r of document.getElementById('items').tBodies[0].rows)
r.style.display=(!v||r.dataset.label==v)?'':'none'}
"""


def write_report(folder: str | Path, items: list[ReportItem], *, title: str,
                 metrics: dict[str, float] | None = None) -> Path:
    """Write ``index.html`` and ``images/*.png`` into ``folder``; return the page's path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    low, high = display_range([item.anomaly_map for item in items]) if items else (0.0, 1.0)
    rows = []
    for i, item in enumerate(sorted(items, key=lambda it: -it.score)):
        stem = f"{i:05d}"
        heat = overlay(item.image, item.anomaly_map, low, high)
        if item.mask is not None and item.mask.any():
            heat = draw_contour(heat, item.mask)
        _thumbnail(item.image).save(folder / "images" / f"{stem}_input.png")
        _thumbnail(heat).save(folder / "images" / f"{stem}_overlay.png")
        label = html.escape(item.label or "")
        rows.append(
            f'<tr data-label="{label}"><td data-v="{html.escape(item.name)}">{html.escape(item.name)}</td>'
            f'<td data-v="{item.score:.6g}">{item.score:.4g}</td><td data-v="{label}">{label or "–"}</td>'
            f'<td><img src="images/{stem}_input.png" alt="input" loading="lazy"></td>'
            f'<td><img src="images/{stem}_overlay.png" alt="anomaly map" loading="lazy"></td></tr>')
    labels = sorted({item.label for item in items if item.label})
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in labels)
    metric_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in (metrics or {}).items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>
<h1>{html.escape(title)}</h1>
{f'<table class="metrics">{metric_rows}</table>' if metric_rows else ''}
<p>{len(items)} images; colour scale from {low:.4g} (blue) to {high:.4g} (red); white outline: ground truth.
Filter: <select onchange="filterLabel(this.value)"><option value="">all</option>{options}</select></p>
<table id="items"><thead><tr><th onclick="sortBy(0)">image</th><th onclick="sortBy(1)">score</th>
<th onclick="sortBy(2)">label</th><th>input</th><th>anomaly map</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></body></html>"""
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _thumbnail(array: np.ndarray) -> Image.Image:
    image = Image.fromarray(array)
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return image
