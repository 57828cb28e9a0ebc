"""Every image kind and every failure case, generated with Pillow in tmp_path."""

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image, ImageFile

from lineguard.io.guard import MAX_SIDE, ImageTooLargeError
from lineguard.io.images import (
    ImageError,
    ImageWarning,
    image_size,
    list_images,
    load_batch,
    read_image,
    read_mask,
    resize,
)


def _save(tmp_path, name, img, **params):
    path = tmp_path / name
    img.save(path, **params)
    return path


def _gray16(values):
    return Image.fromarray(np.array(values, dtype=np.uint16))


def test_rgb_png_values_and_shape(tmp_path):
    pixels = np.array([[[255, 0, 0], [0, 128, 255]]], dtype=np.uint8)  # (H=1, W=2, 3)
    out = read_image(_save(tmp_path, "a.png", Image.fromarray(pixels)))
    assert out.dtype == torch.float32 and out.shape == (3, 1, 2)
    assert torch.allclose(out[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(out[:, 0, 1], torch.tensor([0.0, 128 / 255, 1.0]))


@pytest.mark.parametrize("suffix", ["png", "bmp", "tif"])
def test_gray_lossless_formats_repeat_gray_on_three_channels(tmp_path, suffix):
    pixels = np.array([[0, 51], [204, 255]], dtype=np.uint8)
    out = read_image(_save(tmp_path, f"g.{suffix}", Image.fromarray(pixels, mode="L")))
    assert out.shape == (3, 2, 2)
    for channel in out:
        assert torch.allclose(channel, torch.tensor([[0.0, 0.2], [0.8, 1.0]]))


def test_bilevel_image(tmp_path):
    img = Image.new("1", (2, 1))
    img.putpixel((1, 0), 1)
    out = read_image(_save(tmp_path, "b.png", img))
    assert out[:, 0, 0].tolist() == [0.0, 0.0, 0.0] and out[:, 0, 1].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16bit_scaled_by_65535_not_clipped_to_255(tmp_path, suffix):
    out = read_image(_save(tmp_path, f"d.{suffix}", _gray16([[0, 300, 32768, 65535]])))
    expected = torch.tensor([0.0, 300 / 65535, 32768 / 65535, 1.0])
    for channel in out:
        assert torch.allclose(channel[0], expected)
    assert abs(out[0, 0, 2].item() - 0.5) < 1e-4


def test_16bit_big_endian_tiff(tmp_path):
    img = Image.new("I;16B", (2, 1))
    img.putpixel((0, 0), 40000)
    path = _save(tmp_path, "be.tif", img)
    assert Image.open(path).mode == "I;16B"
    out = read_image(path)
    assert torch.allclose(out[:, 0, 0], torch.full((3,), 40000 / 65535))


def test_32bit_integer_image_clipped_to_unit_range(tmp_path):
    img = Image.fromarray(np.array([[-5, 65535, 70000]], dtype=np.int32))
    assert img.mode == "I"
    out = read_image(_save(tmp_path, "i.tif", img))
    assert out[0, 0].tolist() == [0.0, 1.0, 1.0]


def test_float_tiff_in_unit_range_kept(tmp_path):
    img = Image.fromarray(np.array([[0.25, 0.75]], dtype=np.float32))
    out = read_image(_save(tmp_path, "f.tif", img))
    assert out[0, 0].tolist() == [0.25, 0.75]


def test_float_tiff_outside_unit_range_min_max_scaled(tmp_path):
    img = Image.fromarray(np.array([[-10.0, 0.0, 30.0]], dtype=np.float32))
    out = read_image(_save(tmp_path, "f.tif", img))
    assert torch.allclose(out[1, 0], torch.tensor([0.0, 0.25, 1.0]))


def test_float_tiff_with_nan_is_an_error(tmp_path):
    img = Image.fromarray(np.array([[0.5, np.nan]], dtype=np.float32))
    path = _save(tmp_path, "nan.tif", img)
    with pytest.raises(ImageError, match="NaN"):
        read_image(path)


def test_rgba_composited_over_black(tmp_path):
    img = Image.new("RGBA", (2, 1))
    img.putpixel((0, 0), (200, 100, 50, 255))
    img.putpixel((1, 0), (200, 100, 50, 51))  # alpha 0.2
    out = read_image(_save(tmp_path, "rgba.png", img))
    assert torch.allclose(out[:, 0, 0], torch.tensor([200, 100, 50]) / 255)
    assert torch.allclose(out[:, 0, 1], torch.tensor([200, 100, 50]) / 255 * 0.2)


def test_gray_alpha_composited_over_black(tmp_path):
    img = Image.new("LA", (1, 1), (255, 0))
    out = read_image(_save(tmp_path, "la.png", img))
    assert out.flatten().tolist() == [0.0, 0.0, 0.0]


def test_palette_with_transparent_index(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 255, 255, 255, 10, 20, 30])
    img.putpixel((0, 0), 1)
    img.putpixel((1, 0), 2)
    path = _save(tmp_path, "p.png", img, transparency=1)
    out = read_image(path)
    assert out[:, 0, 0].tolist() == [0.0, 0.0, 0.0]  # white but transparent -> black
    assert torch.allclose(out[:, 0, 1], torch.tensor([10, 20, 30]) / 255)


def test_palette_without_transparency(tmp_path):
    img = Image.new("P", (1, 1))
    img.putpalette([40, 80, 120])
    out = read_image(_save(tmp_path, "p.bmp", img))
    assert torch.allclose(out[:, 0, 0], torch.tensor([40, 80, 120]) / 255)


def test_jpeg_close_to_source(tmp_path):
    img = Image.new("RGB", (16, 16), (200, 40, 90))
    out = read_image(_save(tmp_path, "c.jpg", img, quality=95))
    assert torch.allclose(out.mean(dim=(1, 2)), torch.tensor([200, 40, 90]) / 255, atol=0.02)


def test_cmyk_jpeg(tmp_path):
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    path = _save(tmp_path, "cmyk.jpg", img, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = read_image(path)
    assert torch.allclose(out.mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.03)


def _rotated_jpeg(tmp_path):
    """A 4 wide x 2 high JPEG, left half white, with EXIF orientation 6 (display rotated 90 deg clockwise)."""
    img = Image.new("L", (40, 20), 0)
    img.paste(255, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    return _save(tmp_path, "rot.jpg", img, exif=exif, quality=95)


def test_exif_orientation_applied(tmp_path):
    path = _rotated_jpeg(tmp_path)
    out = read_image(path)
    assert out.shape == (3, 40, 20)
    # Rotating clockwise brings the stored left (white) half to the top.
    assert out[0, :20].mean() > 0.95 and out[0, 20:].mean() < 0.05
    assert image_size(path) == (40, 20)


def test_exif_orientation_of_png_read_from_header(tmp_path):
    img = Image.new("L", (3, 2))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 8
    path = _save(tmp_path, "rot.png", img, exif=exif)
    assert image_size(path) == (3, 2)
    assert read_image(path).shape == (3, 3, 2)


def test_tiny_image_allowed(tmp_path):
    out = read_image(_save(tmp_path, "one.png", Image.new("RGB", (1, 1), (255, 255, 255))))
    assert out.shape == (3, 1, 1) and out.min() == 1.0


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file") as info:
        read_image(tmp_path / "nope.png")
    assert info.value.path == tmp_path / "nope.png"


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="not a file"):
        read_image(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_image(path)


def test_text_renamed_png(tmp_path):
    path = tmp_path / "text.png"
    path.write_text("not an image at all\n" * 10)
    with pytest.raises(ImageError, match="text.png: not a recognised image format"):
        read_image(path)
    with pytest.raises(ImageError, match="text.png"):
        image_size(path)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated_file(tmp_path, fmt):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format=fmt)
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert image_size(path) == (64, 64)  # the header survives, the pixels do not
    with pytest.raises(ImageError, match=f"cut.{fmt}: cannot decode"):
        read_image(path)


def test_over_max_pixels_checked_from_header(tmp_path):
    path = _save(tmp_path, "big.png", Image.new("L", (10, 10)))
    with pytest.raises(ImageTooLargeError, match="10x10 = 100 pixels exceeds the limit of 99 pixels"):
        read_image(path, max_pixels=99)
    assert read_image(path, max_pixels=100).shape == (3, 10, 10)


def test_pillow_bomb_guard(tmp_path, monkeypatch):
    """Above Pillow's soft limit our max_pixels decides (a larger one takes effect); above its hard limit
    (twice that) no max_pixels reaches, and the refusal says so."""
    path = _save(tmp_path, "bomb.png", Image.new("L", (10, 10)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60)
    assert read_image(path, max_pixels=100).shape == (3, 10, 10)
    with pytest.raises(ImageTooLargeError, match="exceeds the limit of 99"):
        read_image(path, max_pixels=99)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)
    with pytest.raises(ImageTooLargeError, match="bomb.png: exceeds Pillow's limit of 80 pixels"):
        read_image(path, max_pixels=1000)


def test_read_mask_threshold(tmp_path):
    path = _save(tmp_path, "m.png", Image.fromarray(np.array([[0, 127, 128, 255]], dtype=np.uint8)))
    assert read_mask(path).tolist() == [[False, False, True, True]]
    assert read_mask(path, threshold=0).tolist() == [[False, True, True, True]]
    assert read_mask(path).dtype == torch.bool


def test_read_mask_kinds(tmp_path):
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    assert read_mask(_save(tmp_path, "b.png", bilevel)).tolist() == [[False, True]]
    assert read_mask(_save(tmp_path, "w.png", _gray16([[0, 65535]]))).tolist() == [[False, True]]
    red = Image.new("RGB", (2, 1))
    red.putpixel((0, 0), (255, 0, 0))
    assert read_mask(_save(tmp_path, "r.png", red)).tolist() == [[True, False]]


def test_read_mask_size_mismatch_names_mask_and_sizes(tmp_path):
    path = _save(tmp_path, "m.png", Image.new("L", (4, 3)))
    assert read_mask(path, expected_size=(3, 4)).shape == (3, 4)
    with pytest.raises(ImageError, match=r"m.png: mask size \(H, W\) = \(3, 4\) differs .* \(4, 3\)"):
        read_mask(path, expected_size=(4, 3))


def test_image_size_is_height_width(tmp_path):
    assert image_size(_save(tmp_path, "s.png", Image.new("RGB", (5, 2)))) == (2, 5)


def test_resize_single_and_batch():
    image = torch.rand(3, 8, 6)
    assert resize(image, 4).shape == (3, 4, 4)
    assert resize(image[None].repeat(2, 1, 1, 1), (5, 3)).shape == (2, 3, 5, 3)
    constant = torch.full((3, 9, 7), 0.3)
    assert torch.allclose(resize(constant, 4), torch.full((3, 4, 4), 0.3))
    # 4 -> 2 with antialias: a triangle filter twice as wide; output centres sit at input 0.5 and 2.5,
    # so the weights over inputs 0..3 are (0.75, 0.75, 0.25, 0) and (0, 0.25, 0.75, 0.75), normalised.
    weights = torch.tensor([[3.0, 3.0, 1.0, 0.0], [0.0, 1.0, 3.0, 3.0]]) / 7
    grid = torch.arange(16.0).reshape(4, 4)
    assert torch.allclose(resize(grid.expand(3, 4, 4), 2)[1], weights @ grid @ weights.T, atol=1e-5)
    with pytest.raises(ValueError, match="got shape"):
        resize(torch.rand(8, 6), 4)


def test_list_images(tmp_path):
    for name in ["b/2.PNG", "b/1.jpg", "a.tif", "notes.txt", "b/._1.png", ".hidden/x.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert list_images(tmp_path) == [tmp_path / "a.tif", tmp_path / "b/1.jpg", tmp_path / "b/2.PNG"]
    # Files are taken as given, in order, without duplicates.
    assert list_images(tmp_path / "notes.txt", tmp_path / "b", tmp_path / "b/1.jpg") == [
        tmp_path / "notes.txt", tmp_path / "b/1.jpg", tmp_path / "b/2.PNG"
    ]


def test_list_images_errors(tmp_path):
    with pytest.raises(ImageError, match="missing: no such file or folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ImageError, match="empty: folder holds no images"):
        list_images(tmp_path / "empty")


def test_load_batch_keeps_good_and_reports_failures(tmp_path):
    good = [_save(tmp_path, f"{i}.png", Image.new("RGB", (6 + i, 4), (255, 0, 0))) for i in range(2)]
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    batch, ok, failed = load_batch([good[0], bad, tmp_path / "gone.png", good[1]], size=5)
    assert batch.shape == (2, 3, 5, 5) and ok == good
    assert torch.allclose(batch[:, 0], torch.ones(2, 5, 5)) and batch[:, 1:].abs().max() < 1e-6
    assert [path for path, _ in failed] == [bad, tmp_path / "gone.png"]
    assert "not a recognised image format" in failed[0][1] and "no such file" in failed[1][1]


def test_load_batch_all_failed(tmp_path):
    batch, ok, failed = load_batch([tmp_path / "gone.png"], size=(4, 6))
    assert batch.shape == (0, 3, 4, 6) and ok == [] and len(failed) == 1


def test_image_error_pickles(tmp_path):
    error = pickle.loads(pickle.dumps(ImageError(tmp_path / "x.png", "broken")))
    assert (error.path, error.reason) == (tmp_path / "x.png", "broken")
    assert str(error) == f"{tmp_path / 'x.png'}: broken"


def test_thin_images_are_refused_from_the_header(tmp_path):
    """A 1 × N image passes any pixel limit while its decoding and resizing cost grows with N: every side is
    bounded too, before any pixel is decoded."""
    path = _save(tmp_path, "thin.png", Image.new("1", (1, 100_000)))
    assert path.stat().st_size < 1_000
    with pytest.raises(ImageTooLargeError, match=f"thin.png: 1x100000: a side is longer than {MAX_SIDE}"):
        read_image(path, max_pixels=40_000_000)
    with pytest.raises(ImageTooLargeError):
        image_size(path)
    batch, ok, failed = load_batch([path], size=8)
    assert ok == [] and "longer than" in failed[0][1]


def test_resizing_a_tall_image_costs_no_more_than_its_input():
    """PyTorch's one-pass resize of a (H, 1) image to (S, S) first builds (H, S): 3 kB per row. Height first,
    the result is the same and no step exceeds the input or the output."""
    import resource

    tall = torch.rand(3, 400_000, 1)  # 4.8 MB; one pass would build 400,000 × 256 × 3 floats (1.2 GB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    small = resize(tall, 256)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert small.shape == (3, 256, 256) and grown_mb < 200, grown_mb
    column = torch.nn.functional.interpolate(tall[None], size=(256, 1), mode="bilinear", antialias=True)
    assert torch.allclose(small, column[0].expand(3, 256, 256), atol=1e-6)


def test_broken_links_are_listed_and_named_when_read(tmp_path):
    good = _save(tmp_path, "a.png", Image.new("RGB", (4, 4)))
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    listed = list_images(tmp_path)
    assert listed == [good, tmp_path / "dangling.png", tmp_path / "loop.png"]
    _, ok, failed = load_batch(listed, size=4)
    assert ok == [good]
    assert failed == [(tmp_path / "dangling.png", f"dangling symbolic link to {tmp_path / 'gone.png'}"),
                      (tmp_path / "loop.png", "symbolic link loop")]


def test_multi_page_tiff_warns_that_only_the_first_page_is_read(tmp_path):
    path = tmp_path / "pages.tif"
    Image.new("L", (4, 4), 10).save(path, save_all=True, append_images=[Image.new("L", (4, 4), 200)])
    with pytest.warns(ImageWarning, match="pages.tif: 2 pages or frames, only the first is scored"):
        image = read_image(path)
    assert torch.allclose(image, torch.full((3, 4, 4), 10 / 255))


def test_open_files_are_read_like_paths(tmp_path):
    path = _save(tmp_path, "a.png", Image.new("RGB", (6, 4), (0, 255, 0)))
    with open(path, "rb") as f:
        f.seek(3)  # wherever the file stands
        assert torch.equal(read_image(f), read_image(path))
        assert image_size(f) == (4, 6)
    with pytest.raises(ImageError, match="empty file"):
        read_image(io.BytesIO())


def test_bytes_decode_as_the_file_they_came_from(tmp_path):
    path = tmp_path / "part.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(path)
    assert torch.equal(read_image(path.read_bytes()), read_image(path))
    with pytest.raises(ImageError, match="<upload>: not a recognised image format"):
        read_image(b"not an image")
