"""Aspect ratio kept: a non-square working size (H, W) and the letterbox give maps in the image's own pixels,
find a planted defect in a wide image, put no hot border where the padding was, save and load to the same
scores, and bad sizes are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import lineguard
from lineguard.cli import app
from lineguard.errors import ParameterError
from lineguard.export.exporter import export_detector
from lineguard.export.graphs import NotExportableError
from lineguard.letterbox import LetterboxDetector, content_box, letterbox, letterboxed, unbox
from lineguard.metrics import aupro, pixel_auroc
from lineguard.synthetic import make_batch
from lineguard.tiling import TilingError, tiled

WIDE = slice(32, 96)  # rows of a 128 px square kept: 64 x 128 strips, the defects (centre 0.3-0.7) inside


def strips(n_good: int, n_defective: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 64, 128) wide woven strips, good then defective, and their (N, 64, 128) masks."""
    items = make_batch(n_good, n_defective, kind="texture", size=128, seed=seed)
    images = torch.stack([torch.from_numpy(i.image[WIDE]).permute(2, 0, 1).float() / 255 for i in items])
    return images, torch.stack([torch.from_numpy(i.mask[WIDE]) for i in items])


@pytest.fixture(scope="module")
def wide():
    good, _ = strips(6, 0, seed=0)
    test, masks = strips(4, 6, seed=1)
    return good, test, masks


@pytest.fixture(scope="module")
def boxed(wide):
    good, _, _ = wide
    return letterboxed(lineguard.create("patchcore", image_size=128), True).fit(good)


@pytest.mark.parametrize("shape", [(64, 128), (130, 40), (50, 50)])
def test_the_map_of_a_letterboxed_image_is_the_image_with_the_padding_cropped(shape):
    rows, columns = torch.meshgrid(torch.linspace(0, 1, shape[0]), torch.linspace(0, 1, shape[1]), indexing="ij")
    image = torch.stack([0.1 + 0.4 * rows + 0.4 * columns, rows, columns])  # smooth: resizing keeps it
    padded = letterbox(image, (96, 96))
    rows, columns = content_box(*shape, (96, 96))
    assert padded.shape == (3, 96, 96) and padded[:, :rows.start].eq(0).all() and padded[:, rows.stop:].eq(0).all()
    assert padded[:, :, :columns.start].eq(0).all() and padded[:, :, columns.stop:].eq(0).all()
    assert abs((rows.stop - rows.start) / (columns.stop - columns.start) - shape[0] / shape[1]) < 0.05
    back = unbox(padded[0], shape)  # the first channel as a "map": back at the image's size, no padding in it
    assert back.shape == shape and (back - image[0]).abs().max() < 0.03


def test_a_non_square_working_size_gives_maps_of_that_shape_and_letterbox_of_the_image(wide):
    good, test, _ = wide
    flat = lineguard.create("knn", image_size=(32, 64)).fit(good)
    assert flat.predict(test).maps.shape == (10, 32, 64)
    framed = letterboxed(lineguard.create("knn", image_size=(48, 80)), True).fit(good)
    assert framed.predict(test).maps.shape == (10, 64, 128)
    mixed = framed.predict([test[:1], torch.rand(1, 3, 30, 90)])  # images of two sizes: one map each
    assert [tuple(m.shape) for m in mixed.maps] == [(64, 128), (30, 90)]


@pytest.mark.parametrize("image_size", [(64, 128), "letterbox"])
def test_a_planted_defect_in_a_wide_image_scores_above_the_clean_ones(wide, boxed, image_size):
    good, test, masks = wide
    detector = boxed if image_size == "letterbox" else lineguard.create("patchcore", image_size=image_size).fit(good)
    prediction = detector.predict(test)
    assert prediction.scores[4:].min() > prediction.scores[:4].max()
    assert pixel_auroc(masks, prediction.maps) > 0.9


def test_the_padding_leaves_no_hot_border(wide, boxed):
    _, test, masks = wide
    maps = boxed.predict(test).maps  # (10, 64, 128): padding above and below the strip, cropped
    border = torch.cat([maps[:, :4].flatten(1), maps[:, -4:].flatten(1)], dim=1)  # rows next to the padding
    peaks = torch.stack([m[k].max() for m, k in zip(maps[4:], masks[4:], strict=True)])
    assert border[:4].max() < peaks.min()  # clean strips' edges stay below every defect
    for m, k in zip(maps[4:], masks[4:], strict=True):  # each defective strip is hottest on its defect
        peak = divmod(int(m.argmax()), m.shape[1])
        assert k[max(0, peak[0] - 4):peak[0] + 5, max(0, peak[1] - 4):peak[1] + 5].any()


@pytest.mark.parametrize("image_size", [(48, 96), "letterbox"])
def test_save_and_load_give_identical_scores(wide, boxed, tmp_path, image_size):
    good, test, _ = wide
    detector = boxed if image_size == "letterbox" else lineguard.create("padim", image_size=image_size).fit(good)
    before = detector.predict(test)
    detector.save(tmp_path)
    loaded = lineguard.load(tmp_path)
    after = loaded.predict(test)
    assert torch.equal(before.scores, after.scores) and torch.equal(before.maps, after.maps)
    saved = json.loads((tmp_path / "config.json").read_text())["params"]["image_size"]
    assert isinstance(loaded, LetterboxDetector) == (image_size == "letterbox")
    assert saved == (128 if image_size == "letterbox" else [48, 96])


@pytest.mark.parametrize(("size", "named"), [((0, 10), "image_size must be at least 1"),
                                             ((64, -3), "image_size must be at least 1"),
                                             ((1, 2, 3), r"image_size must be int \| tuple\[int, int\]"),
                                             (-5, "image_size must be at least 1")])
def test_bad_sizes_are_refused_by_name(size, named):
    with pytest.raises(ParameterError, match=named):
        lineguard.create("patchcore", image_size=size).fit(torch.rand(1, 3, 32, 32))


def test_methods_without_a_non_square_size_tiles_and_wrappers_refuse_it():
    with pytest.raises(ParameterError, match=r"autoencoder parameter image_size must be int"):
        lineguard.create("autoencoder", image_size=(64, 128)).fit(torch.rand(2, 3, 64, 128))
    with pytest.raises(TilingError, match="tiles are square"):
        tiled(lineguard.create("knn", image_size=(64, 128)), 64)


@pytest.mark.parametrize(("value", "named"), [("0x10", "'0x10'"), ("-5", "'-5'"), ("1x2x3", "'1x2x3'"),
                                              ("64xa", "'64xa'")])
def test_the_cli_refuses_bad_sizes_by_name(value, named, tmp_path):
    result = CliRunner().invoke(app, ["fit", "--data", str(tmp_path), "--image-size", value, "--out",
                                      str(tmp_path / "m")])
    assert result.exit_code != 0 and "--image-size must be S or HxW" in result.output and named in result.output
    both = CliRunner().invoke(app, ["fit", "--data", str(tmp_path), "--tile", "64", "--keep-aspect", "--out",
                                    str(tmp_path / "m")])
    assert both.exit_code != 0 and "--keep-aspect does not go with --tile" in both.output


def test_cli_fits_letterboxed_on_frames_of_several_shapes_and_evaluates_in_their_pixels(tmp_path):
    root = tmp_path / "frames"
    shapes = [(64, 128), (100, 60), (80, 80)]
    items = make_batch(6, 3, kind="texture", size=128, seed=2)
    for i, item in enumerate(items):
        split, name = ("train", "good") if i < 3 else ("test", item.defect)
        h, w = shapes[i % 3]
        top, left = (128 - h) // 2, (128 - w) // 2
        (root / split / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(item.image[top:top + h, left:left + w]).save(root / split / name / f"{i}.png")
        if item.defect != "good":
            (root / "ground_truth" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(item.mask[top:top + h, left:left + w].astype(np.uint8) * 255).save(
                root / "ground_truth" / name / f"{i}_mask.png")
    runner = CliRunner()
    evaluated = runner.invoke(app, ["evaluate", "--method", "knn", "--data", str(root), "--image-size", "64",
                                    "--keep-aspect", "--json", str(tmp_path / "m.json")])
    assert evaluated.exit_code == 0, evaluated.output
    assert 0 <= json.loads((tmp_path / "m.json").read_text())["aupro"] <= 1
    fitted = runner.invoke(app, ["fit", "--method", "knn", "--data", str(root), "--image-size", "48x64",
                                 "--calibrate", "none", "--out", str(tmp_path / "model")])
    assert fitted.exit_code == 0, fitted.output
    assert lineguard.load(tmp_path / "model").image_size == [48, 64]


def test_metrics_pool_the_pixels_of_maps_of_different_sizes():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 20, 30)).astype(np.float32)
    masks = np.zeros((3, 20, 30), dtype=bool)
    masks[1, 5:9, 5:12] = masks[2, 10:14, 20:25] = True
    maps[masks] += 0.5
    pieces = [maps[0, :12], maps[1], maps[2, :, :26]]  # the same pixels, cut to three sizes
    cut = [masks[0, :12], masks[1], masks[2, :, :26]]
    pooled_masks = np.concatenate([m.ravel() for m in cut])
    pooled_maps = np.concatenate([m.ravel() for m in pieces])
    assert pixel_auroc(cut, pieces) == pytest.approx(pixel_auroc(pooled_masks[None, None], pooled_maps[None, None]))
    whole = aupro(masks, maps)
    assert aupro(list(masks), list(maps)) == pytest.approx(whole)


def test_export_takes_the_non_square_size_and_refuses_the_letterbox(wide, boxed, tmp_path):
    pytest.importorskip("onnxruntime")
    good, test, _ = wide
    detector = lineguard.create("patchcore", image_size=(32, 64)).fit(good)
    export_detector(detector, tmp_path / "export")
    exported = lineguard.load(tmp_path / "export")
    ran, exact = exported.predict(test.numpy()), detector.predict(test)
    assert ran.maps.shape == (10, 32, 64) and exported.image_size == [32, 64]
    assert np.allclose(ran.scores, exact.scores.numpy(), atol=1e-3)
    with pytest.raises(NotExportableError, match=r"letterboxed \(--keep-aspect\)"):
        export_detector(boxed, tmp_path / "refused")
