"""Scores and map fingerprints of every method on the contract test's synthetic parts, saved from one version
of lineguard so that a refactoring can show it changed no number (``test_contract``).

    python -m tests.methods.saved_values        # rewrite saved_values.json from the code as it is now

Only for a change that is meant to move scores: the file then records the new values. The test-batch methods
are left out while their algorithms change.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

PATH = Path(__file__).with_name("saved_values.json")
UNSAVED = ("mutual", "testbatch")  # zero-data methods, being reworked


def fingerprint(scores: torch.Tensor, maps: torch.Tensor) -> dict:
    """Exact scores (float32 values as JSON numbers round-trip), the maps' SHA-256 and two statistics that say
    how far apart two versions are when the hashes differ."""
    maps = maps.contiguous().float()
    return {"scores": scores.float().tolist(), "maps_sha256": hashlib.sha256(maps.numpy().tobytes()).hexdigest(),
            "maps_max": float(maps.max()), "maps_mean": float(maps.double().mean())}


def main() -> None:
    from lineguard.methods import available_methods
    from tests.conftest import make_parts
    from tests.methods.test_contract import build

    torch.set_num_threads(2)  # the test suite's thread count: blocked matrix products may round differently
    support, test, _, _ = make_parts()
    saved = {}
    for name in available_methods():
        if name in UNSAVED:
            continue
        detector = build(name)
        detector.fit(support)
        saved[name] = fingerprint(*vars(detector.predict(test)).values())
        print(name, saved[name]["scores"][:3])
    PATH.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
