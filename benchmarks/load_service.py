"""Bounded load on the inspection service over loopback: requests/s, latency percentiles, errors, memory.

Fits and calibrates a model (or takes ``--model``), starts ``lineguard serve`` on 127.0.0.1 in a child
process, lets ``--concurrency`` client threads post one-image ``/v1/inspect`` requests for ``--duration``
seconds after a warm-up, and samples the server's resident memory every second. Writes a JSON record and a
Markdown summary to ``benchmarks/results/``.

    python benchmarks/load_service.py                                  # synthetic parts, 60 s, 4 clients
    python benchmarks/load_service.py --data ../shared/datasets/mvtec_ad/bottle --shots 16 --duration 120
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

RESULTS = Path(__file__).parent / "results"
HOST = "127.0.0.1"  # loopback only: this is a load check, never aimed at another machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def run_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lineguard", *args], check=True)


def prepare_model(args: argparse.Namespace, work: Path) -> tuple[Path, list[Path]]:
    """A fitted, calibrated model folder and the test images to send."""
    from lineguard.io.datasets import load_dataset
    from lineguard.synthetic import write_mvtec_layout

    data = args.data or write_mvtec_layout(work / "data", size=args.image_size, n_train=40, n_test_good=8,
                                           n_test_defective=8, seed=0)
    if args.model:
        model = args.model
    else:
        model = work / "model"
        run_cli("fit", "--method", args.method, "--data", str(data), "--out", str(model), "--image-size",
                  str(args.image_size), *(["--shots", str(args.shots)] if args.shots else []))
    return model, [s.path for s in load_dataset(data).test][: args.images]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def run_load(url: str, images: list[bytes], *, concurrency: int, seconds: float, with_images: bool
             ) -> tuple[list[float], list[str]]:
    """Each thread posts images round-robin until the time is up; returns latencies (s) and error texts."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            i = offset
            while time.monotonic() < stop:
                data = images[i % len(images)]
                i += 1
                start = time.perf_counter()
                try:
                    response = http.post("/v1/inspect", params={"images": with_images},
                                         files={"file": ("part.png", data, "image/png")})
                    ok = response.status_code == 200
                    problem = None if ok else f"{response.status_code}: {response.text}"
                except httpx.HTTPError as exc:
                    problem = repr(exc)
                elapsed = time.perf_counter() - start
                with lock:
                    if problem:
                        errors.append(problem)
                    else:
                        latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def sample_memory(pid: int, samples: list[tuple[float, float]], done: threading.Event, start: float) -> None:
    while not done.wait(1.0):
        samples.append((round(time.monotonic() - start, 1), round(rss_mb(pid), 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="Dataset folder (default: synthetic parts).")
    parser.add_argument("--model", type=Path, help="A calibrated model folder (default: fit one on --data).")
    parser.add_argument("--method", default="knn")
    parser.add_argument("--shots", type=int, default=None, help="Good images to fit on (default all).")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=16, help="Distinct test images to cycle through.")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of load measured (<= 600).")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--no-images", action="store_true", help="Ask for decisions only, no PNGs.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600]")

    with tempfile.TemporaryDirectory(prefix="lineguard-load-") as tmp:
        model, paths = prepare_model(args, Path(tmp))
        images = [p.read_bytes() for p in paths]
        port = free_port()
        url = f"http://{HOST}:{port}"
        env = {**os.environ, "LINEGUARD_PROGRESS": "0"}
        env.pop("LINEGUARD_API_KEY", None)
        log = open(Path(tmp) / "serve.log", "w")  # noqa: SIM115 (closed in finally)
        process = subprocess.Popen([sys.executable, "-m", "lineguard", "serve", str(model), "--host", HOST,
                                    "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(url, process)
            run_load(url, images, concurrency=args.concurrency, seconds=args.warmup,
                     with_images=not args.no_images)
            memory: list[tuple[float, float]] = []
            done = threading.Event()
            start = time.monotonic()
            memory.append((0.0, round(rss_mb(process.pid), 1)))
            sampler = threading.Thread(target=sample_memory, args=(process.pid, memory, done, start))
            sampler.start()
            load_before = os.getloadavg()
            latencies, errors = run_load(url, images, concurrency=args.concurrency, seconds=args.duration,
                                         with_images=not args.no_images)
            wall = time.monotonic() - start
            done.set()
            sampler.join()
            memory.append((round(wall, 1), round(rss_mb(process.pid), 1)))
            model_info = httpx.get(f"{url}/v1/model").json()
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()

    record = summarize(args, latencies, errors, memory, wall, model_info, load_before)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load_service.json").write_text(json.dumps(record, indent=2))
    (args.out / "load_service.md").write_text(markdown(record))
    print(markdown(record))


def summarize(args, latencies, errors, memory, wall, model_info, load_before) -> dict:
    ms = np.array(latencies) * 1000
    rss = np.array([m for _, m in memory])
    half = len(memory) // 2
    times, values = np.array([t for t, _ in memory[half:]]), rss[half:]
    slope = float(np.polyfit(times, values, 1)[0] * 60) if len(times) >= 3 else float("nan")
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "method": model_info["method"], "image_size": model_info["image_size"],
        "calibration": model_info["calibration"], "concurrency": args.concurrency, "seconds": round(wall, 1),
        "with_images": not args.no_images, "requests": len(latencies), "errors": len(errors),
        "first_errors": errors[:5], "requests_per_second": round(len(latencies) / wall, 2),
        "latency_ms": {q: round(float(np.percentile(ms, p)), 1) for q, p in
                       (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))} if len(ms) else {},
        "rss_mb": {"start": float(rss[0]), "end": float(rss[-1]), "max": float(rss.max()),
                   "slope_second_half_mb_per_min": round(slope, 2)},
        "rss_samples": memory,
    }


def markdown(r: dict) -> str:
    lat, rss = r["latency_ms"], r["rss_mb"]
    columns = {"requests": r["requests"], "errors": r["errors"], "requests/s": r["requests_per_second"],
               "p50 ms": lat.get("p50"), "p90 ms": lat.get("p90"), "p99 ms": lat.get("p99"),
               "max ms": lat.get("max"), "RSS start MB": rss["start"], "RSS end MB": rss["end"],
               "RSS max MB": rss["max"], "RSS slope, 2nd half, MB/min": rss["slope_second_half_mb_per_min"]}
    table = (f"| {' | '.join(columns)} |\n|{'---|' * len(columns)}\n"
             f"| {' | '.join(map(str, columns.values()))} |\n")
    kind = "with" if r["with_images"] else "without"
    return (f"# Service load check ({r['when']})\n\n"
            f"`python benchmarks/load_service.py` — {r['method']} at {r['image_size']} px, thresholds: "
            f"{r['calibration']}.\n{r['concurrency']} concurrent clients on loopback for {r['seconds']} s, "
            f"one image per `POST /v1/inspect` ({kind} overlay/map/mask PNGs). Machine: {r['machine']}; "
            f"load average before/after: {r['load_average_before']} / {r['load_average_after']} (other work "
            f"on the machine distorts timings).\n\n{table}")


if __name__ == "__main__":
    main()
