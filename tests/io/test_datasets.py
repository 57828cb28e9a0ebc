"""Tiny fake trees of every layout, plus the real benchmark folders when they are present."""

import os
from pathlib import Path

import pytest
from PIL import Image

from lineguard.io.datasets import DatasetError, Sample, load_dataset

DATASETS = Path(
    os.environ.get("LINEGUARD_DATASETS", Path(__file__).resolve().parents[2].parent / "shared" / "datasets")
)


def _image(path: Path, size=(4, 3)) -> Path:
    """Write a small gray image of ``size`` = (W, H); the suffix picks the format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 128).save(path)
    return path


def _mvtec(root: Path) -> Path:
    for name in ["000.png", "001.png", "002.png"]:
        _image(root / "train/good" / name)
    _image(root / "test/good/000.png")
    for defect, names in {"crack": ["000.png", "001.jpg"], "hole": ["000.png"]}.items():
        for name in names:
            _image(root / "test" / defect / name)
            _image(root / "ground_truth" / defect / (Path(name).stem + "_mask.png"))
    return root


def test_mvtec_layout(tmp_path):
    data = load_dataset(_mvtec(tmp_path / "widget"))
    assert (data.name, data.layout, data.mask_threshold) == ("widget", "mvtec", 127)
    assert data.summary() == {"train": {"good": 3}, "test": {"crack": 2, "good": 1, "hole": 1}}
    assert data.good_train == [tmp_path / "widget/train/good" / f"00{i}.png" for i in range(3)]
    assert Sample(tmp_path / "widget/test/good/000.png", 0, "good", None) in data.test
    crack = [s for s in data.test if s.defect == "crack"]
    assert [(s.path.name, s.label, s.mask_path.name) for s in crack] == [
        ("000.png", 1, "000_mask.png"), ("001.jpg", 1, "001_mask.png")
    ]
    assert all(s.mask_path.parent.name == s.defect for s in data.test if s.label == 1)


def test_masks_paired_by_stem_not_by_sorted_order(tmp_path):
    # Sorted images: x_79, x_797; sorted masks: x_797_mask, x_79_mask ('7' < '_'). Sizes tell them apart.
    root = tmp_path / "tile"
    _image(root / "train/good/a.jpg")
    _image(root / "test/fray/x_79.jpg", size=(5, 2))
    _image(root / "test/fray/x_797.jpg", size=(7, 3))
    _image(root / "ground_truth/fray/x_79_mask.png", size=(5, 2))
    _image(root / "ground_truth/fray/x_797_mask.png", size=(7, 3))
    data = load_dataset(root)  # check_masks would fail on a wrong pairing
    assert {s.path.stem: s.mask_path.name for s in data.test} == {
        "x_79": "x_79_mask.png", "x_797": "x_797_mask.png"
    }


def test_mask_size_mismatch_names_both_files(tmp_path):
    root = _mvtec(tmp_path / "widget")
    _image(root / "ground_truth/hole/000_mask.png", size=(5, 3))
    expected = r"hole/000_mask.png is \(H, W\) = \(3, 5\) but image .*hole/000.png is \(3, 4\)"
    with pytest.raises(DatasetError, match=expected):
        load_dataset(root)
    assert len(load_dataset(root, check_masks=False).test) == 4


def test_missing_mask_names_the_image(tmp_path):
    root = _mvtec(tmp_path / "widget")
    (root / "ground_truth/crack/001_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"crack/001.jpg: no mask named 001_mask"):
        load_dataset(root)


def test_btad_layout(tmp_path):
    root = tmp_path / "01"
    _image(root / "train/ok/0000.bmp")
    _image(root / "train/ok/0001.bmp")
    _image(root / "test/ok/0002.bmp")
    for stem, suffix in [("0003", ".png"), ("0004", ".bmp")]:
        _image(root / "test/ko" / f"{stem}.bmp")
        _image(root / "ground_truth/ko" / f"{stem}{suffix}")
    data = load_dataset(root)
    assert data.layout == "btad"
    assert data.summary() == {"train": {"good": 2}, "test": {"good": 1, "ko": 2}}
    assert {s.path.stem: s.mask_path.name for s in data.test if s.label == 1} == {
        "0003": "0003.png", "0004": "0004.bmp"
    }


def _visa(root: Path) -> Path:
    rows = ["object,split,label,image,mask"]
    for category in ["candle", "pcb1"]:
        for split, label, name in [("train", "normal", "0"), ("train", "normal", "1"),
                                   ("test", "normal", "2"), ("test", "anomaly", "3")]:
            image = f"{category}/Data/Images/{label.title()}/{name}.JPG"
            mask = f"{category}/Data/Masks/Anomaly/{name}.png" if label == "anomaly" else ""
            _image(root / image)
            if mask:
                _image(root / mask)
            rows.append(f"{category},{split},{label},{image},{mask}")
    (root / "split_csv").mkdir()
    (root / "split_csv/1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def test_visa_layout_from_root_with_category_or_from_category_folder(tmp_path):
    root = _visa(tmp_path / "VisA")
    for data in [load_dataset(root, category="candle"), load_dataset(root / "candle")]:
        assert (data.name, data.layout, data.root) == ("candle", "visa", root / "candle")
        assert data.mask_threshold == 0
        assert data.summary() == {"train": {"good": 2}, "test": {"anomaly": 1, "good": 1}}
        anomaly = [s for s in data.test if s.label == 1]
        assert anomaly == [Sample(root / "candle/Data/Images/Anomaly/3.JPG", 1, "anomaly",
                                  root / "candle/Data/Masks/Anomaly/3.png")]


def test_visa_errors(tmp_path):
    root = _visa(tmp_path / "VisA")
    with pytest.raises(DatasetError, match="without a category"):
        load_dataset(root)
    with pytest.raises(DatasetError, match="no rows for category 'cashew'"):
        load_dataset(root, category="cashew")
    (root / "pcb1/Data/Masks/Anomaly/3.png").unlink()
    with pytest.raises(DatasetError, match=r"1cls.csv:9: anomalous image .*3.JPG has no mask"):
        load_dataset(root, category="pcb1")


def test_folder_layout(tmp_path):
    _image(tmp_path / "line/a/1.png")
    _image(tmp_path / "line/b/2.jpg")
    data = load_dataset(tmp_path / "line")
    assert data.layout == "folder" and data.train == [] and data.good_train == []
    assert [(s.path.name, s.label, s.defect, s.mask_path) for s in data.test] == [
        ("1.png", -1, "unknown", None), ("2.jpg", -1, "unknown", None)
    ]


def test_root_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: folder is empty"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="notes: folder holds no images"):
        load_dataset(tmp_path / "notes")
    with pytest.raises(DatasetError, match="unknown layout 'coco'"):
        load_dataset(tmp_path / "notes", layout="coco")


def test_folder_of_categories_is_refused(tmp_path):
    _mvtec(tmp_path / "mvtec/bottle")
    _mvtec(tmp_path / "mvtec/cable")
    with pytest.raises(DatasetError, match=r"several categories \(bottle, cable\)"):
        load_dataset(tmp_path / "mvtec")


def _real(relative: str) -> Path:
    path = DATASETS / relative
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


def test_real_mvtec_bottle():
    data = load_dataset(_real("mvtec_ad/bottle"))
    assert data.summary() == {
        "train": {"good": 209},
        "test": {"broken_large": 20, "broken_small": 22, "contamination": 21, "good": 20},
    }
    defective = [s for s in data.test if s.label == 1]
    assert len(defective) == 63
    assert all(s.mask_path.name == f"{s.path.stem}_mask.png" for s in defective)


def test_real_magnetic_tile():
    data = load_dataset(_real("mtd/magnetic_tile"))
    assert data.summary() == {
        "train": {"good": 762},
        "test": {"blowhole": 115, "break": 85, "crack": 57, "fray": 32, "good": 190, "uneven": 103},
    }
    defective = [s for s in data.test if s.label == 1]
    assert len(defective) == 392
    assert all(s.mask_path.name == f"{s.path.stem}_mask.png" for s in defective)
    assert all(s.mask_path.parent.name == s.defect for s in defective)
