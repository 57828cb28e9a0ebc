"""Results written as they are produced: one JSON line per image, its anomaly map in a file beside it.

A run that is interrupted (crash, Ctrl-C, power loss) resumes from what is on disk: every finished row is kept,
none is written twice. The map is written (atomically) before its row, so a row never points at a missing map.

One writer at a time: a store opened for writing holds an OS lock (``flock``) on ``.lock`` in its folder until
it is closed or its process ends, however it ends; a second writer stops at once with
:class:`ResultsLockedError`, naming the holder (pid, host, start time). Readers (the report) take no lock.

An image's defect mask (``masks/NNNNNN.png``, black and white at the image's own size) is written beside its map,
with the same number, and the thresholds the decisions were made with are kept in ``thresholds.json``: a report
draws the same decisions later, without the model, and a folder refuses rows decided with other thresholds.

A damaged line (not a complete JSON object with a ``path``, or a second row for the same image) is moved to
``results.damaged.jsonl`` and its line number kept in ``damaged``, so the caller can say so; every intact row
before and after it is kept. A torn last line left by a crash is such a line. Maps are numbered past every
number already in ``maps/`` or ``masks/``, so removing a line never makes a new map overwrite an old one.

A distributed run (``lineguard.distributed``) encodes a row's map and mask where the image was scored
(:func:`encode_files`) and its one writer, the driver, puts the bytes in place (:meth:`ResultStore.append_files`):
the same files, the same guarantees.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from lineguard.errors import LineguardError
from lineguard.scoring.threshold import Thresholds

RESULTS_FILE = "results.jsonl"
DAMAGED_FILE = "results.damaged.jsonl"
THRESHOLDS_FILE = "thresholds.json"
LOCK_FILE = ".lock"
MAPS_DIR = "maps"
MASKS_DIR = "masks"


class ResultsLockedError(LineguardError, RuntimeError):
    """Another run is writing the results folder."""


class OtherThresholdsError(LineguardError, ValueError):
    """A results folder already holds decisions made with other thresholds (or a damaged thresholds file)."""


def save_thresholds(folder: str | Path, thresholds: Thresholds) -> None:
    """Record the thresholds of a results folder; refuse to mix decisions made with different ones."""
    path = Path(folder) / THRESHOLDS_FILE
    existing = load_thresholds(folder)
    if existing is not None and existing != thresholds:
        raise OtherThresholdsError(f"{folder} holds results decided with other thresholds ({path}): use a new "
                                   "--out folder for a recalibrated model")
    path.write_text(json.dumps(asdict(thresholds), indent=2))


def load_thresholds(folder: str | Path) -> Thresholds | None:
    path = Path(folder) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    try:
        return Thresholds(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:  # bad JSON, keys or values
        raise OtherThresholdsError(f"{path}: not a thresholds file ({exc}): move it away or use another "
                                   "--out folder") from None


def mask_image(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """(h, w) bool -> black/white 8-bit image of (H, W) ``size`` (nearest neighbour: no grey edges)."""
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    return image if image.size == (size[1], size[0]) else image.resize((size[1], size[0]), Image.NEAREST)


@dataclass(frozen=True)
class ResultFiles:
    """A row's files as bytes: the map (``.npy``, float16) and the mask (black/white ``.png`` at the image's size)."""

    map: bytes | None = None
    mask: bytes | None = None


def encode_files(anomaly_map: np.ndarray | None = None, *, mask: np.ndarray | None = None,
                 image_size: tuple[int, int] | None = None) -> ResultFiles:
    """The files :meth:`ResultStore.append` writes for a row, encoded where the image was scored."""
    encoded_map = encoded_mask = None
    if anomaly_map is not None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(anomaly_map, dtype=np.float16), allow_pickle=False)
        encoded_map = buffer.getvalue()
    if mask is not None:
        buffer = io.BytesIO()
        mask_image(mask, image_size or mask.shape).save(buffer, format="PNG")
        encoded_mask = buffer.getvalue()
    return ResultFiles(encoded_map, encoded_mask)


def _write_atomically(path: Path, write: Any) -> None:
    """``write(file)`` into a temporary file beside ``path``, then put it in place in one step."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def _holder(handle: IO[str], attempts: int = 10) -> str:
    """Who holds the lock, from its stamp; the holder writes it just after taking the lock, so an empty file
    is read again for a moment before it is called "another process"."""
    for _ in range(attempts):
        handle.seek(0)
        stamp = handle.read().strip()
        if stamp:
            return stamp
        time.sleep(0.05)
    return "another process"


def _lock(folder: Path) -> IO[str]:
    """The held lock file of ``folder``, stamped with this process; ResultsLockedError if another holds it."""
    handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")  # held open: the lock lives with it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(handle)
        handle.close()
        raise ResultsLockedError(f"{folder} is being written by {holder}: wait for that run to end, or use "
                                 "another --out folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
    handle.flush()
    return handle


def _row(line: bytes) -> dict[str, Any] | None:
    """The row of one complete line, or None when the line is damaged."""
    if not line.endswith(b"\n"):
        return None
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return row if isinstance(row, dict) and isinstance(row.get("path"), str) else None


class ResultStore:
    """Append-only store of per-image results in ``folder``; ``key`` of a row is its image path.

    ``readonly`` opens an existing folder to read it: no lock, nothing repaired or created.
    """

    def __init__(self, folder: str | Path, *, readonly: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / RESULTS_FILE
        self._handle: IO[str] | None = None
        if not readonly:
            (self.folder / MAPS_DIR).mkdir(parents=True, exist_ok=True)
            self._handle = _lock(self.folder)
        self._rows, self.damaged = self._read(repair=not readonly)
        self._keys = {row["path"] for row in self._rows}
        numbers = [int(p.name.split(".")[0]) for kind in (MAPS_DIR, MASKS_DIR) for p in (self.folder / kind).glob("*")
                   if p.name.split(".")[0].isdigit()]
        self.next_index = max(numbers, default=-1) + 1  # the number of the next row's map (and mask)

    def _read(self, *, repair: bool) -> tuple[list[dict[str, Any]], list[int]]:
        """Every intact row, and the line numbers of damaged ones (moved aside when ``repair``)."""
        if not self.path.exists():
            return [], []
        rows, kept, damaged, keys = [], [], [], set()
        for number, line in enumerate(self.path.read_bytes().splitlines(keepends=True), start=1):
            row = _row(line)
            if row is None or row["path"] in keys:
                damaged.append((number, line))
                continue
            keys.add(row["path"])
            rows.append(row)
            kept.append(line)
        if damaged and repair:
            with open(self.folder / DAMAGED_FILE, "ab") as aside:
                aside.writelines(line if line.endswith(b"\n") else line + b"\n" for _, line in damaged)
                aside.flush()
                os.fsync(aside.fileno())
            tmp = self.path.with_name(RESULTS_FILE + ".tmp")
            with open(tmp, "wb") as f:
                f.writelines(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        return rows, [number for number, _ in damaged]

    def close(self) -> None:
        """Release the folder's lock (also released when the process ends)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, path: str | Path) -> bool:
        return str(path) in self._keys

    def append(self, row: dict[str, Any], anomaly_map: np.ndarray | None = None, *,
               mask: np.ndarray | None = None, image_size: tuple[int, int] | None = None) -> dict[str, Any]:
        """Persist one result (``row["path"]`` required) durably before returning it, with its map and its
        defect mask (written at the image's (H, W) ``image_size``)."""
        return self.append_files(row, encode_files(anomaly_map, mask=mask, image_size=image_size))

    def append_files(self, row: dict[str, Any], files: ResultFiles) -> dict[str, Any]:
        """:meth:`append` with the map and mask already encoded (:func:`encode_files`, wherever the image was
        scored): a distributed run's one writer only puts bytes in place."""
        if self._handle is None:
            raise RuntimeError(f"{self.folder}: this store is read-only or closed")
        key = str(row["path"])
        if key in self._keys:
            raise ValueError(f"{key} is already in {self.path}")
        row = {**row, "path": key}
        for kind, data, suffix in ((MASKS_DIR, files.mask, "png"), (MAPS_DIR, files.map, "npy")):
            if data is not None:
                name = f"{kind}/{self.next_index:06d}.{suffix}"
                (self.folder / kind).mkdir(exist_ok=True)
                _write_atomically(self.folder / name, lambda f, data=data: f.write(data))
                row[kind[:-1]] = name  # "mask", "map"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._rows.append(row)
        self._keys.add(key)
        self.next_index += 1
        return row

    def load_map(self, row: dict[str, Any]) -> np.ndarray:
        return np.load(self.folder / row["map"], allow_pickle=False).astype(np.float32)
