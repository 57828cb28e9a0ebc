"""Run an export as a line PC would, and say whether PyTorch was imported: a script, for a child process.

    python tests/export/run_export.py EXPORT_DIR IMAGES_DIR RUNTIME   # prints one JSON line

Images are read from PNG files (Pillow + numpy), scored on RUNTIME, normalised, and turned into decisions and
regions; the line printed holds the scores, decisions, region counts and whether ``torch`` is in sys.modules.
"""

import json
import sys

from lineguard.export import load_export
from lineguard.io.images import list_images, load_array_batch
from lineguard.scoring.regions import find

folder, images_dir, runtime = sys.argv[1:4]
model = load_export(folder, runtime=runtime)
images, paths, failed = load_array_batch(list_images(images_dir), size=model.image_size)
prediction = model.predict(images)
normalized = model.normalize(prediction)
findings = find(prediction.scores, normalized.scores, normalized.maps)
print(json.dumps({"torch": "torch" in sys.modules, "scores": prediction.scores.tolist(), "failed": len(failed),
                  "decisions": [f.decision for f in findings], "regions": [len(f.regions) for f in findings]}))
