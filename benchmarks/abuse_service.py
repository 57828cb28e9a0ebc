"""The inspection service under abuse, on loopback, in bounded rounds: does every bad request get its 4xx, every
normal one its 200, and does the server's memory stay put?

Fits a small model on synthetic parts (or takes ``--model``), starts ``lineguard serve`` with an API key in a
child process, warms it up, notes its idle resident memory, then runs ``--rounds`` rounds of ``--concurrency``
requests sent at once to ``POST /v1/inspect``, mixing (per round of 50):

* 10 normal uploads (a 128 px part) — expected 200;
* 8 bodies declaring 600 MB (``Content-Length``), streamed until the server answers — 413;
* 8 bodies of 600 MB sent chunked (no length), streamed until the server answers — 413;
* 8 PNGs of 1 × 39,000,000 pixels (a 76 kB file) and 8 of 20000 × 20000 (each side and the pixel count over
  the limits) — 413;
* 4 uploads that stall after their first 10 kB — 408 after ``--upload-timeout``;
* 4 bodies declaring 600 MB without the API key — 401.

The server's RSS is sampled every 0.1 s; at the end ``/healthz`` must still answer. Writes
``benchmarks/results/abuse_service.json`` and ``.md``.

    python benchmarks/abuse_service.py                       # 3 rounds of 50, about a minute
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from load_service import HOST, free_port, prepare_model, rss_mb, wait_ready
from PIL import Image

RESULTS = Path(__file__).parent / "results"
KEY = "abuse-check"
BOUNDARY = "lineguardabuse"
MB = 2**20
MIX = {"normal": (10, 200), "declared 600 MB": (8, 413), "chunked 600 MB": (8, 413), "1 × 39 M px": (8, 413),
       "20000 × 20000 px": (8, 413), "stalled": (4, 408), "600 MB, no key": (4, 401)}


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def head(port: int, *, key: bool, length: int | None) -> bytes:
    """Request line and headers of a multipart POST /v1/inspect; chunked when ``length`` is None."""
    lines = ["POST /v1/inspect?images=false HTTP/1.1", f"Host: {HOST}:{port}",
             f"Content-Type: multipart/form-data; boundary={BOUNDARY}"]
    lines += [f"X-API-Key: {KEY}"] if key else []
    lines += ["Transfer-Encoding: chunked"] if length is None else [f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(sock: socket.socket, timeout: float) -> str:
    """The status code the server answered with, or what happened instead."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return "closed without an answer"
            data += chunk
    except TimeoutError:
        return "no answer"
    except ConnectionResetError:
        return "reset" if not data else data.split(b" ")[1].decode()
    return data.split(b" ")[1].decode()


def stream(port: int, *, key: bool, length: int | None, total: int, stall_after: int | None = None,
           timeout: float) -> str:
    """Send a body of ``total`` bytes in 1 MB pieces (or stop after ``stall_after``) while watching for an
    answer; returns the status."""
    part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    piece = part + b"\0" * (MB - len(part))
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(head(port, key=key, length=length))
        sent = 0
        while sent < min(total, stall_after or total):
            if select.select([sock], [], [], 0)[0]:
                break  # answered already
            data = piece[:stall_after] if stall_after else piece
            try:
                sock.sendall(data if length is not None else b"%x\r\n%s\r\n" % (len(data), data))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(data)
        return status_of(sock, timeout)


def post(url: str, data: bytes, timeout: float) -> str:
    try:
        response = httpx.post(f"{url}/v1/inspect", params={"images": "false"}, headers={"X-API-Key": KEY},
                              files={"file": ("part.png", data, "image/png")}, timeout=timeout)
        return str(response.status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def send(kind: str, port: int, payloads: dict[str, bytes], upload_timeout: float) -> tuple[str, str, float]:
    url, timeout = f"http://{HOST}:{port}", upload_timeout + 60
    start = time.perf_counter()
    if kind == "normal":
        status = post(url, payloads["normal"], timeout)
    elif kind in ("1 × 39 M px", "20000 × 20000 px"):
        status = post(url, payloads[kind], timeout)
    elif kind == "declared 600 MB":
        status = stream(port, key=True, length=600 * MB, total=600 * MB, timeout=timeout)
    elif kind == "chunked 600 MB":
        status = stream(port, key=True, length=None, total=600 * MB, timeout=timeout)
    elif kind == "stalled":
        status = stream(port, key=True, length=MB, total=MB, stall_after=10_000, timeout=timeout)
    else:
        status = stream(port, key=False, length=600 * MB, total=600 * MB, timeout=timeout)
    return kind, status, time.perf_counter() - start


def sample(pid: int, samples: list[float], done: threading.Event) -> None:
    while not done.wait(0.1):
        samples.append(rss_mb(pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A calibrated model folder (default: knn on synthetic parts).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--upload-timeout", type=float, default=10.0, help="The server's --upload-timeout.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    kinds = [kind for kind, (count, _) in MIX.items() for _ in range(count)]
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory(prefix="lineguard-abuse-") as tmp:
        setup = argparse.Namespace(data=None, model=args.model, method="knn", image_size=128, shots=None, images=1)
        model, paths = prepare_model(setup, Path(tmp))
        payloads = {"normal": paths[0].read_bytes(), "1 × 39 M px": png_bytes(Image.new("1", (1, 39_000_000))),
                    "20000 × 20000 px": png_bytes(Image.new("1", (20000, 20000)))}
        port = free_port()
        env = {**os.environ, "LINEGUARD_PROGRESS": "0", "TMPDIR": tmp}
        log = open(Path(tmp) / "serve.log", "w")  # noqa: SIM115 (closed in finally)
        process = subprocess.Popen([sys.executable, "-m", "lineguard", "serve", str(model), "--host", HOST,
                                    "--port", str(port), "--api-key", KEY, "--upload-timeout",
                                    str(args.upload_timeout)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://{HOST}:{port}", process)
            for _ in range(5):
                assert send("normal", port, payloads, args.upload_timeout)[1] == "200"
            time.sleep(1)
            idle = rss_mb(process.pid)
            samples: list[float] = [idle]
            done = threading.Event()
            sampler = threading.Thread(target=sample, args=(process.pid, samples, done))
            sampler.start()
            answers = []
            start = time.monotonic()
            with ThreadPoolExecutor(len(kinds)) as pool:
                for _ in range(args.rounds):
                    order = rng.permutation(kinds)
                    answers += list(pool.map(lambda k: send(k, port, payloads, args.upload_timeout), order))
            wall = time.monotonic() - start
            done.set()
            sampler.join()
            alive = httpx.get(f"http://{HOST}:{port}/healthz", timeout=10).status_code == 200
            final = send("normal", port, payloads, args.upload_timeout)[1]
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()

    record = summarize(args, answers, samples, idle, wall, alive and final == "200", len(kinds))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "abuse_service.json").write_text(json.dumps(record, indent=2))
    (args.out / "abuse_service.md").write_text(markdown(record))
    print(markdown(record))
    if not record["passed"]:
        raise SystemExit("the service did not hold: see the table")


def summarize(args, answers, samples, idle, wall, alive, concurrency) -> dict:
    kinds = {}
    for kind, (_, expected) in MIX.items():
        mine = [(status, seconds) for k, status, seconds in answers if k == kind]
        kinds[kind] = {"requests": len(mine), "expected": expected,
                       "answers": dict(Counter(status for status, _ in mine)),
                       "seconds_max": round(max(s for _, s in mine), 2)}
    peak = max(samples)
    held = all(k["answers"] == {str(k["expected"]): k["requests"]} for k in kinds.values())
    return {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "rounds": args.rounds, "concurrency": concurrency,
            "upload_timeout_s": args.upload_timeout, "seconds": round(wall, 1), "kinds": kinds,
            "rss_mb": {"idle": round(idle, 1), "peak": round(peak, 1), "peak_over_idle": round(peak - idle, 1),
                       "end": round(samples[-1], 1)},
            "alive_at_end": alive, "passed": held and alive and peak - idle <= 300}


def markdown(r: dict) -> str:
    rows = "".join(f"| {kind} | {k['requests']} | {k['expected']} | "
                   f"{', '.join(f'{s} × {n}' for s, n in sorted(k['answers'].items()))} | {k['seconds_max']} |\n"
                   for kind, k in r["kinds"].items())
    rss = r["rss_mb"]
    return (f"# Service under abuse ({r['when']})\n\n"
            f"`python benchmarks/abuse_service.py` — {r['rounds']} rounds of {r['concurrency']} requests at once "
            f"on loopback to `POST /v1/inspect` (knn, 128 px, API key set, `--upload-timeout "
            f"{r['upload_timeout_s']:g}`), {r['seconds']} s in all.\n\n"
            "| request | sent | expected | answers | slowest s |\n|---|---:|---:|---|---:|\n" + rows +
            f"\nServer RSS: idle {rss['idle']} MB, peak {rss['peak']} MB (+{rss['peak_over_idle']} MB), "
            f"end {rss['end']} MB; `/healthz` and a normal request answered at the end: {r['alive_at_end']}. "
            f"Every answer as expected and peak within 300 MB of idle: **{r['passed']}**.\n")


if __name__ == "__main__":
    main()
