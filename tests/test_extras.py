"""A line install (``pip install lineguard``, no extras) works: fit, predict, decide and report without faiss,
scikit-learn, open_clip or the service's packages; a feature that needs one names the extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lineguard.extras import MissingExtraError, require

ABSENT = ("faiss", "sklearn", "open_clip", "fastapi", "uvicorn", "multipart")

# Run in a child process in which importing any of ABSENT fails as if it were not installed.
SCRIPT = textwrap.dedent(f"""
    import importlib.util
    import sys
    from importlib.abc import Loader, MetaPathFinder

    class Absent(MetaPathFinder, Loader):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {ABSENT!r}:
                return importlib.util.spec_from_loader(name, self)

        def create_module(self, spec):
            raise ModuleNotFoundError(f"No module named {{spec.name!r}}", name=spec.name)

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Absent())
    import tempfile
    from pathlib import Path

    import lineguard, lineguard.cli
    from lineguard.inspect import inspect
    from lineguard.report.runs import evaluation_report  # noqa: F401  (the report's charts need no scikit-learn)
    from lineguard.synthetic import make_batch
    from tests.conftest import to_tensor

    good, test = to_tensor(make_batch(8, 0, size=128, seed=1)), to_tensor(make_batch(2, 2, size=128, seed=2))
    detector = lineguard.create("patchcore", image_size=128).fit(good[:5])
    detector.calibrate(detector.predict(good[5:]), rule="mu3sigma")
    print([finding.normalized_score for finding in inspect(detector, test)])  # 2 good parts, then 2 defective
    print(type(detector.index).__name__, detector.index.backend)
    try:
        lineguard.create("cse", image_size=64, epochs=1, batch_size=2, clusters=2).fit(good[:2])
    except Exception as exc:
        print(type(exc).__name__, exc)
""")


def test_a_line_install_fits_predicts_and_decides_without_the_extras():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    scores, index, cse = done.stdout.strip().splitlines()[-3:]
    good, defective = eval(scores)[:2], eval(scores)[2:]
    assert min(defective) > max(good)
    assert index == "NearestNeighbours torch"  # exact torch search stands in for faiss
    assert cse.startswith("MissingExtraError") and "pip install 'lineguard[faiss]'" in cse


def test_a_missing_package_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # importing it now fails, as if it were not installed
    with pytest.raises(MissingExtraError, match=r"the CLIP backbones needs .*pip install 'lineguard\[clip\]'"):
        require("open_clip", "the CLIP backbones")
