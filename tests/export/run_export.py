"""Run an export as a line PC would, and say whether PyTorch was imported: a script, for a child process.

    python tests/export/run_export.py EXPORT_DIR IMAGES_DIR RUNTIME RESULTS_DIR   # prints one JSON line

``lineguard predict EXPORT_DIR IMAGES_DIR --out RESULTS_DIR --runtime RUNTIME`` (the CLI, in this process, with its
HTML report), then
the service over ``lineguard.load(EXPORT_DIR)`` answering an upload of every image; the line printed holds
predict's rows, the service's answers and whether ``torch`` is in sys.modules after both.
"""

import json
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

import lineguard
from lineguard.cli import app
from lineguard.io.images import list_images
from lineguard.serve import create_app

export, images, runtime, results = sys.argv[1:5]
done = CliRunner().invoke(app, ["predict", export, images, "--out", results, "--runtime", runtime])
if done.exit_code:
    sys.exit(f"predict failed ({done.exit_code}): {done.output}")
rows = [json.loads(line) for line in (Path(results) / "results.jsonl").read_text().splitlines()]
client = TestClient(create_app(lineguard.load(export, runtime=runtime)))
served = {}
for path in list_images(images):
    answer = client.post("/v1/inspect", files={"file": (path.name, path.read_bytes(), "image/png")},
                         params={"images": "false"})
    served[path.name] = answer.json() if answer.status_code == 200 else answer.status_code
report = (Path(results) / "report" / "index.html").is_file()
print(json.dumps({"torch": "torch" in sys.modules, "rows": rows, "served": served, "report": report}))
