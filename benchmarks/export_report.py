"""The export benchmark's report (``export.py --out``): the markdown table of its rows, with ratios against
PyTorch, and the notes beside it — install sizes on disk, the large-bank run, what was not measured."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def install_size(python: str, *spec: str) -> dict:
    script = Path(__file__).with_name("install_size.py")
    done = subprocess.run([python, str(script), *spec], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def write_results(args: argparse.Namespace, rows: list[dict]) -> None:
    """The table (markdown) and everything measured (JSON): rows, the large bank, install sizes."""
    large = args.work / "large_bank.json"
    results = {"command": " ".join(sys.argv), "notes": args.note, "rows": rows,
               "large_bank": json.loads(large.read_text()) if large.exists() else None,
               "installs": [install_size(sys.executable, "lineguard")]}
    if args.runtime_python:
        results["installs"] += [install_size(args.runtime_python, "lineguard-runtime"),
                                install_size(args.runtime_python, "lineguard-runtime", "--extra", "openvino",
                                             "--extra", "serve")]
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    args.out.write_text(table(rows) + "\n" + notes(results))


def notes(results: dict) -> str:
    """Install sizes, the large bank, and what was not measured."""
    lines = ["Installs on disk (`benchmarks/install_size.py`: the distribution and everything it requires):", ""]
    for entry in results["installs"]:
        extras = f"[{','.join(entry['extras'])}]" if entry["extras"] else ""
        lines.append(f"- {entry['distribution']}{extras}: {entry['bytes'] / 1e9:.2f} GB "
                     f"({entry['distributions']} distributions; largest: "
                     + ", ".join(f"{k} {v:.0f} MB" for k, v in list(entry["largest_mb"].items())[:4]) + ")")
    bank = results["large_bank"]
    if bank:
        lines += ["", f"Large bank: PatchCore with a random {bank['bank_rows']:,} × 152 bank, {bank['images']} "
                      f"random images: export {bank['export_s']:.0f} s, {bank['size_mb']:.0f} MB, exporter peak RSS "
                      f"{bank['export_peak_rss_mb']:.0f} MB; onnxruntime {bank['onnxruntime']['images_per_s_b16']:.2f} "
                      f"images/s, peak RSS {bank['onnxruntime']['peak_rss_mb']:.0f} MB; PyTorch (exact search) "
                      f"{bank['pytorch']['images_per_s_b16']:.2f} images/s, peak RSS "
                      f"{bank['pytorch']['peak_rss_mb']:.0f} MB."]
    lines += ["", "GPU / onnxruntime's CUDA provider: not measured (no GPU was lent to this run).",
              *results["notes"], f"Command: `{results['command']}`", ""]
    return "\n".join(lines)


COLUMNS = ["data", "method", "runtime", "export s", "size MB", "img/s b1", "img/s b16", "× PyTorch b1 / b16",
           "p50 ms", "p99 ms", "peak RSS MB", "RSS × PyTorch", "scores diff", "maps diff", "same decisions",
           "same regions", "flipped pixels (max gap)"]


def table(rows: list[dict]) -> str:
    """Markdown, one line per row; ratios against the same data and method's ``pytorch`` row."""
    reference = {(r["data"], r["method"]): r for r in rows if r["runtime"] == "pytorch"}
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        ref = reference.get((r["data"], r["method"]), r)
        cells = [r["data"], r["method"], r["runtime"], fmt(r.get("export_s"), 1), fmt(r.get("size_mb"), 1),
                 fmt(r["images_per_s_b1"], 2), fmt(r["images_per_s_b16"], 2),
                 f"{r['images_per_s_b1'] / ref['images_per_s_b1']:.2f} / "
                 f"{r['images_per_s_b16'] / ref['images_per_s_b16']:.2f}",
                 fmt(r["p50_ms"], 0), fmt(r["p99_ms"], 0), fmt(r["peak_rss_mb"], 0),
                 f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}", fmt(r.get("scores_rel_diff"), "e"),
                 fmt(r.get("maps_rel_diff"), "e"),
                 f"{r['same_decisions']}/{r['images']}" if "same_decisions" in r else "",
                 f"{r['same_regions']}/{r['images']}" if "same_regions" in r else "",
                 f"{r['flipped_pixels']} ({r['flipped_max_gap']:.0e})" if "flipped_pixels" in r else ""]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def fmt(value: float | None, digits: int | str) -> str:
    if value is None:
        return "–"
    return f"{value:.1e}" if digits == "e" else f"{value:.{digits}f}"
