"""Images arriving in a folder, each handed on once, only when it is completely written.

A camera or a copy job writes a file over some time; reading it half-way gives a truncated image. A file is
*ready* when its size and modification time were the same at two polls in a row (and it is not empty); if
it still cannot be decoded, the reader can ``forget`` it and it is offered again when it changes.
Hidden names (``.part`` files, editor temporaries) and non-image suffixes are ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from lineguard.io.images import IMAGE_SUFFIXES


class FolderWatcher:
    """Poll ``folder`` (recursively) for new, complete images, oldest first."""

    def __init__(self, folder: str | Path, *, poll_seconds: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder} is not a folder to watch")
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.sleep = sleep
        self._seen: set[Path] = set()  # handed on already
        self._pending: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime_ns) at the last poll

    def poll(self) -> list[Path]:
        """One look at the folder: the files that became ready since the last poll, oldest first."""
        ready = []
        for path in self.folder.rglob("*"):
            if (path in self._seen or path.suffix.lower() not in IMAGE_SUFFIXES
                    or any(part.startswith(".") for part in path.relative_to(self.folder).parts)):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed between listing and stat
                continue
            signature = (stat.st_size, stat.st_mtime_ns)
            if stat.st_size > 0 and self._pending.get(path) == signature:
                ready.append((stat.st_mtime_ns, path))
            self._pending[path] = signature
        for _, path in sorted(ready):
            self._seen.add(path)
            del self._pending[path]
        return [path for _, path in sorted(ready)]

    def forget(self, path: Path) -> None:
        """Offer ``path`` again once it is stable (e.g. it was complete in size but not yet decodable)."""
        self._seen.discard(path)

    def follow(self, *, idle_timeout: float | None = None) -> Iterator[Path]:
        """Yield ready files as they come; stop after ``idle_timeout`` seconds without a new one."""
        last_new = self.clock()
        while True:
            ready = self.poll()
            yield from ready
            if ready:
                last_new = self.clock()
            elif idle_timeout is not None and self.clock() - last_new >= idle_timeout:
                return
            self.sleep(self.poll_seconds)
