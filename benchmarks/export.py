"""Exported models against the PyTorch models they come from: parity, speed, memory and size, on real data.

For every dataset folder and method: fit with ``lineguard fit`` (calibrated on held-out good images; few-shot
methods on 4 shots), export to ONNX and to OpenVINO IR, then score the same test images — a spread of good and
defective ones, decoded once without torch — in one child process per runtime (its own peak RSS, 2 threads):

* ``pytorch``: the model folder as ``lineguard.load`` gives it, its bank search made exact (``search=faiss``)
  where the default would turn approximate (IVF from 16,384 rows): the reference the exports must match;
* ``pytorch-auto``: the same model with the search it was saved with, ``auto`` (IVF from 16,384 bank rows:
  approximate, faster), for methods that have one;
* ``onnxruntime`` on the ONNX export, ``openvino`` on the IR export: these never import torch.

Columns: export seconds and size on disk; images/s at batch 1 and batch 16; latency p50 / p99 at batch 1;
peak RSS; parity with ``pytorch`` (max |difference| / the reference's range, for scores and maps), how many
images get the same decision and the same regions at the model's thresholds, and the pixels that fall in one
defect mask only, with the largest distance of their normalised reference value from the threshold 1.0 (a
pixel within rounding of the threshold can land on either side of it in any two float implementations).

    python benchmarks/export.py --data path/to/mvtec_ad/bottle --data path/to/mtd/magnetic_tile \\
        --work /tmp/lineguard-export-bench --out benchmarks/results/export.md --runtime-python /tmp/rt/bin/python
    python benchmarks/export.py --data path/to/bottle --method patchcore --work /tmp/bench    # one method
    python benchmarks/export.py --large-bank 1000000 --work /tmp/bench     # a 1,000,000 x 152 bank, 8 GB budget

Rows are kept in WORK/rows.jsonl (a rerun skips finished ones, and reuses fitted models and exports); ``--out``
writes them as a markdown table and as JSON beside it (``.json``), with the large-bank run (WORK/large_bank.json)
and the installs' sizes on disk: this interpreter's lineguard, and lineguard-runtime in ``--runtime-python``
(``benchmarks/install_size.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from export_report import write_results

EXPORTABLE = ["patchcore", "fewshot", "knn", "padim", "spade", "fastrecon", "dfr", "cse", "autoencoder"]
FEW_SHOT = {"fewshot": 4, "fastrecon": 4}  # shots; the others fit on all good training images
TRAINING_PARAMS = {("autoencoder", "magnetic_tile"): ["epochs=10"]}  # as benchmarks/trained.py
TORCH_FREE = ("onnxruntime", "openvino")
BATCH = 16


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- child processes -------------------------------------------------------------------------------------------
def load_model(runtime: str, target: Path, threads: int, exact: bool):
    """A predict(numpy) -> (scores, maps) function on ``runtime``; torch only for the PyTorch runtimes."""
    import lineguard

    if runtime in TORCH_FREE:
        model = lineguard.load(target, runtime=runtime, threads=threads)  # runs the graph RUNTIME_BATCH at a time
        return lambda images: (lambda p: (p.scores, p.maps))(model.predict(images))
    import torch

    torch.set_num_threads(threads)
    detector = lineguard.load(target)
    if exact and getattr(detector, "search", None) == "auto":
        detector.search = "faiss"  # exact flat search: the reference the graph's exact search must match

    def predict(images: np.ndarray):
        prediction = detector.predict(torch.from_numpy(images))
        return prediction.scores.numpy(), prediction.maps.numpy()

    return predict


def measure(runtime: str, target: Path, images_file: Path, out: Path, threads: int, exact: bool) -> None:
    """Child: latency at batch 1, images/s at batch 1 and 16, the predictions (saved for parity), peak RSS."""
    images = np.load(images_file)
    predict = load_model(runtime, target, threads, exact)
    predict(images[:1])  # warm-up: first-call allocations and shape compilation
    predict(images[:BATCH])
    latencies = []
    for image in images[:BATCH]:
        start = time.perf_counter()
        predict(image[None])
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    scores, maps = predict(images)
    batch_seconds = time.perf_counter() - start
    np.save(out.with_suffix(".scores.npy"), scores)
    np.save(out.with_suffix(".maps.npy"), maps)
    out.write_text(json.dumps({
        "images_per_s_b1": len(latencies) / sum(latencies), "images_per_s_b16": len(images) / batch_seconds,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)), "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "peak_rss_mb": peak_rss_mb(), "torch_imported": "torch" in sys.modules}))


def export(model: Path, folder: Path, fmt: str, out: Path) -> None:
    """Child: export seconds (the model already loaded) and peak RSS of the exporting process."""
    import lineguard
    from lineguard.export import export_detector

    detector = lineguard.load(model)
    start = time.perf_counter()
    export_detector(detector, folder, format=fmt)
    out.write_text(json.dumps({"export_s": time.perf_counter() - start, "export_peak_rss_mb": peak_rss_mb(),
                               "size_mb": sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20}))


def child(*args: str) -> None:
    subprocess.run([sys.executable, __file__, *args], check=True)


# -- the grid -------------------------------------------------------------------------------------------------
def test_images(data: Path, count: int, size: int, work: Path) -> tuple[Path, list[Path]]:
    """``count`` test images spread evenly over the sorted test split (good and defective), decoded once."""
    from lineguard.io.batches import ImageBatches
    from lineguard.io.datasets import load_dataset

    samples = load_dataset(data).test
    chosen = [samples[round(i * (len(samples) - 1) / max(count - 1, 1))].path for i in range(count)]
    file = work / f"{data.name}_{size}.npy"
    if not file.exists():
        batches = ImageBatches(chosen, size=size, batch_size=len(chosen), arrays=True)  # read without torch
        images = np.concatenate(list(batches))
        if batches.failed:
            raise SystemExit(f"unreadable test images: {batches.failed}")
        np.save(file, images)
    return file, chosen


def fit(method: str, data: Path, model: Path) -> None:
    if (model / "config.json").exists():
        return
    extra = ["--shots", str(FEW_SHOT[method])] if method in FEW_SHOT else []
    for param in TRAINING_PARAMS.get((method, data.name), []):
        extra += ["--param", param]
    subprocess.run([sys.executable, "-m", "lineguard", "fit", "--method", method, "--data", str(data),
                    "--out", str(model), *extra], check=True)


def parity(folder: Path, runtime: str, reference: str, thresholds: dict) -> dict:
    """Max |difference| / range of scores and maps, and images with the same decision and regions."""
    from lineguard.inspect import decide
    from lineguard.scoring.threshold import Thresholds

    got = [np.load(folder / f"{runtime}.{kind}.npy") for kind in ("scores", "maps")]
    ref = [np.load(folder / f"{reference}.{kind}.npy") for kind in ("scores", "maps")]
    rows = {f"{kind}_rel_diff": float(np.abs(g.astype(float) - r).max() / (r.max() - r.min()))
            for kind, g, r in zip(("scores", "maps"), got, ref, strict=True)}
    t = Thresholds(**thresholds)
    a, b = decide(got[0], got[1], t), decide(ref[0], ref[1], t)
    boxes = [[(r.x0, r.y0, r.x1, r.y1, r.area) for r in f.regions] for f in (*a, *b)]
    rows["same_decisions"] = sum(x.decision == y.decision for x, y in zip(a, b, strict=True))
    rows["same_regions"] = sum(boxes[i] == boxes[i + len(a)] for i in range(len(a)))
    rows["defect_decisions"] = sum(f.decision == "defect" for f in b)
    reference_map = t.normalize_maps(ref[1])
    flipped = (t.normalize_maps(got[1]) >= 1) != (reference_map >= 1)  # pixels in one defect mask only
    rows["flipped_pixels"] = int(flipped.sum())
    rows["flipped_max_gap"] = float(np.abs(reference_map[flipped] - 1).max()) if flipped.any() else 0.0
    return rows


def model_thresholds(model: Path, file: Path) -> dict:
    """The saved model's thresholds (its calibration on held-out good images), as Thresholds fields."""
    if not file.exists():
        code = ("import dataclasses, json, sys, lineguard; "
                "print(json.dumps(dataclasses.asdict(lineguard.load(sys.argv[1]).thresholds)))")
        done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, check=True)
        file.write_text(done.stdout)
    return json.loads(file.read_text())


def run_method(data: Path, method: str, args: argparse.Namespace, done: set, rows_file: Path) -> None:
    work = args.work / data.name / method
    model = work / "model"
    fit(method, data, model)
    config = json.loads((model / "config.json").read_text())
    size = config["params"].get("image_size", 256)
    images, _ = test_images(data, args.images, size, args.work)
    exports = {"onnxruntime": ("onnx", work / "onnx"), "openvino": ("openvino", work / "openvino")}
    runtimes = ["pytorch"] + (["pytorch-auto"] if config["params"].get("search") == "auto" else []) + list(exports)
    thresholds = model_thresholds(model, work / "thresholds.json")
    for runtime in runtimes:
        if (data.name, method, runtime) in done:
            continue
        row = {"data": data.name, "method": method, "runtime": runtime, "images": args.images,
               "threads": args.threads}
        target = model
        if runtime in exports:
            fmt, target = exports[runtime]
            if not (work / f"export-{fmt}.json").exists():
                child("--export", str(model), str(target), fmt, str(work / f"export-{fmt}.json"))
            row |= json.loads((work / f"export-{fmt}.json").read_text())
        child("--measure", runtime.removesuffix("-auto"), str(target), str(images), str(work / f"{runtime}.json"),
              str(args.threads), "exact" if runtime == "pytorch" else "saved")
        row |= json.loads((work / f"{runtime}.json").read_text())
        if runtime != "pytorch":
            row |= parity(work, runtime, "pytorch", thresholds)
        with rows_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def large_bank(rows: int, work: Path, threads: int, count: int) -> None:
    """A PatchCore with a random rows × 152 bank: export it and run it, each in a child, under 8 GB."""
    folder = work / f"bank_{rows}"
    if not (folder / "model" / "config.json").exists():
        child("--make-bank", str(rows), str(folder / "model"))
    images = work / "bank_images.npy"
    np.save(images, np.random.default_rng(0).random((count, 3, 256, 256), dtype=np.float32))
    child("--export", str(folder / "model"), str(folder / "onnx"), "onnx", str(folder / "export.json"))
    for runtime, target in (("onnxruntime", folder / "onnx"), ("pytorch", folder / "model")):
        child("--measure", runtime, str(target), str(images), str(folder / f"{runtime}.json"), str(threads), "exact")
    result = {"bank_rows": rows, "images": count, **json.loads((folder / "export.json").read_text()),
              **{rt: json.loads((folder / f"{rt}.json").read_text()) for rt in ("onnxruntime", "pytorch")}}
    (work / "large_bank.json").write_text(json.dumps(result))
    print(json.dumps(result))


def make_bank(rows: int, model: Path) -> None:
    """Child: a PatchCore fitted on two images, its bank then replaced by ``rows`` random rows (152 columns)."""
    import torch

    import lineguard

    generator = torch.Generator().manual_seed(0)
    detector = lineguard.create("patchcore").fit(torch.rand(2, 3, 256, 256, generator=generator))
    detector.memory_bank_ = torch.randn(rows, detector.memory_bank_.shape[1], generator=generator)
    detector.save(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", default=[], help="dataset folder (repeatable)")
    parser.add_argument("--method", action="append", help=f"default: {', '.join(EXPORTABLE)}")
    parser.add_argument("--work", type=Path, help="models, exports, predictions, rows.jsonl (required)")
    parser.add_argument("--out", type=Path, help="markdown table of WORK/rows.jsonl (and .json beside it)")
    parser.add_argument("--runtime-python", help="python of an environment with lineguard-runtime, to size it")
    parser.add_argument("--note", action="append", default=[], help="a line for the table's notes (repeatable)")
    parser.add_argument("--images", type=int, default=32, help="test images scored (the first 16 at batch 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--large-bank", type=int, help="rows of a random PatchCore bank to export and run")
    parser.add_argument("--measure", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--export", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--make-bank", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        runtime, target, images, out, threads, search = args.measure
        return measure(runtime, Path(target), Path(images), Path(out), int(threads), search == "exact")
    if args.export:
        model, folder, fmt, out = args.export
        return export(Path(model), Path(folder), fmt, Path(out))
    if args.make_bank:
        return make_bank(int(args.make_bank[0]), Path(args.make_bank[1]))
    if args.work is None:
        parser.error("--work is required")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.large_bank:
        return large_bank(args.large_bank, args.work, args.threads, args.images)
    rows_file = args.work / "rows.jsonl"
    done = set()
    if rows_file.exists():
        done = {(r["data"], r["method"], r["runtime"]) for r in map(json.loads, rows_file.read_text().splitlines())}
    for method in args.method or EXPORTABLE:
        for data in args.data:
            run_method(data, method, args, done, rows_file)
    if args.out:
        write_results(args, [json.loads(line) for line in rows_file.read_text().splitlines()])


if __name__ == "__main__":
    os.environ.setdefault("LINEGUARD_PROGRESS", "0")
    main()
