"""Size on disk of an installed distribution and of everything it depends on, in the running interpreter.

Walks the requirements (with the extras asked for) from the installed metadata and adds up the files each
distribution's RECORD lists; pip and setuptools count only if something requires them. Run it with the
interpreter of the environment to measure:

    python benchmarks/install_size.py lineguard                                  # the full install
    /tmp/rt/bin/python benchmarks/install_size.py lineguard-runtime --extra openvino   # the torch-free one

Prints one JSON line: distribution, extras, total bytes, and the largest distributions.
"""

from __future__ import annotations

import argparse
import json
import re
from importlib import metadata

from packaging.requirements import Requirement


def closure(name: str, extras: set[str]) -> dict[str, metadata.Distribution]:
    """The installed distribution ``name`` and everything it requires (markers evaluated, extras followed)."""
    found: dict[str, metadata.Distribution] = {}
    pending = [(name, extras)]
    while pending:
        current, wanted = pending.pop()
        key = re.sub(r"[-_.]+", "-", current).lower()
        if key in found:
            continue
        try:
            dist = metadata.distribution(current)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            markers = [{"extra": extra} for extra in wanted or {""}]
            if requirement.marker is None or any(requirement.marker.evaluate(m) for m in markers):
                pending.append((requirement.name, set(requirement.extras)))
    return found


def size_of(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or []:
        path = file.locate()
        if path.is_file():
            total += path.stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("distribution")
    parser.add_argument("--extra", action="append", default=[])
    args = parser.parse_args()
    sizes = {key: size_of(dist) for key, dist in closure(args.distribution, set(args.extra)).items()}
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:8]
    print(json.dumps({"distribution": args.distribution, "extras": args.extra, "distributions": len(sizes),
                      "bytes": sum(sizes.values()), "largest_mb": {k: round(v / 1e6, 1) for k, v in largest}}))


if __name__ == "__main__":
    main()
