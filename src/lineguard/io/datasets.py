"""Dataset layouts on disk (MVTec / MPDD / Magnetic-Tile, BTAD, VisA, plain folder) -> lists of samples.

Only paths are gathered here; pixels are read later by :mod:`lineguard.io.images`. Defect images are
paired with their masks by file stem, never by zipping two sorted lists (on Magnetic-Tile the sorted
orders of ``exp0_num_79`` / ``exp0_num_797`` and their ``_mask`` files disagree).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lineguard.errors import LineguardError
from lineguard.io.images import IMAGE_SUFFIXES, ImageError, image_size, list_images

LAYOUTS = ("auto", "mvtec", "visa", "btad", "folder")
GOOD, UNKNOWN = "good", "unknown"
# VisA masks hold 0/255 in some releases and 0/1 (or small ids) in others: any non-zero pixel is defect.
VISA_MASK_THRESHOLD = 0
MASK_THRESHOLD = 127  # MVTec / BTAD masks are 0/255; Magnetic-Tile has a few intermediate values.


class DatasetError(LineguardError, ValueError):
    """A dataset folder does not match its layout; the message names the file or folder."""


@dataclass(frozen=True)
class Sample:
    """One image. ``label``: 0 good, 1 defective, -1 unknown; ``defect``: "good", the type, or "unknown"."""

    path: Path
    label: int
    defect: str
    mask_path: Path | None = None


@dataclass
class Dataset:
    """Train and test samples of one category; ``mask_threshold`` is the value masks must exceed."""

    name: str
    root: Path
    layout: str
    train: list[Sample]
    test: list[Sample]
    mask_threshold: int = MASK_THRESHOLD

    @property
    def good_train(self) -> list[Path]:
        """Paths of the defect-free training images (the support set for ``fit``)."""
        return [s.path for s in self.train if s.label == 0]

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per split and defect type, e.g. ``{"train": {"good": 209}, "test": {...}}``."""
        return {
            split: dict(sorted(Counter(s.defect for s in samples).items()))
            for split, samples in (("train", self.train), ("test", self.test))
        }


def _images(folder: Path) -> list[Path]:
    try:
        return list_images(folder)
    except ImageError as exc:
        raise DatasetError(str(exc)) from exc


def _masks_by_stem(folder: Path, suffix: str) -> dict[str, Path]:
    """Mask files of ``folder`` keyed by the stem of the image they belong to (``suffix`` stripped)."""
    if not folder.is_dir():
        return {}
    return {
        p.stem.removesuffix(suffix): p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.endswith(suffix)
    }


def _defect_samples(images: list[Path], defect: str, mask_dir: Path, mask_suffix: str) -> list[Sample]:
    masks = _masks_by_stem(mask_dir, mask_suffix)
    samples = []
    for path in images:
        if path.stem not in masks:
            raise DatasetError(f"{path}: no mask named {path.stem}{mask_suffix}.<png|bmp|...> in {mask_dir}")
        samples.append(Sample(path, 1, defect, masks[path.stem]))
    return samples


def _load_mvtec(root: Path) -> Dataset:
    """MVTec, MPDD, MTD: ``train/good``, ``test/<good|defect>``, ``ground_truth/<defect>/<stem>_mask.*``."""
    train = [Sample(p, 0, GOOD) for p in _images(root / "train" / GOOD)]
    if not (root / "test").is_dir():
        raise DatasetError(f"{root / 'test'}: no such folder (MVTec layout needs train/good and test)")
    test: list[Sample] = []
    for folder in sorted(p for p in (root / "test").iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = _images(folder)
        if folder.name == GOOD:
            test += [Sample(p, 0, GOOD) for p in images]
        else:
            test += _defect_samples(images, folder.name, root / "ground_truth" / folder.name, "_mask")
    return Dataset(root.name, root, "mvtec", train, test)


def _load_btad(root: Path) -> Dataset:
    """``train/ok``, ``test/ok``, ``test/ko``, ``ground_truth/ko/<stem>.png|.bmp``; defects are "ko"."""
    train = [Sample(p, 0, GOOD) for p in _images(root / "train" / "ok")]
    test = [Sample(p, 0, GOOD) for p in _images(root / "test" / "ok")]
    test += _defect_samples(_images(root / "test" / "ko"), "ko", root / "ground_truth" / "ko", "")
    return Dataset(root.name, root, "btad", train, test)


def _visa_root_and_category(root: Path, category: str | None) -> tuple[Path, str]:
    if category is not None:
        return root, category
    if (root / "Data" / "Images").is_dir():  # the category folder itself
        return root.parent, root.name
    raise DatasetError(f"{root}: VisA root given without a category (pass category='candle', ...)")


def _load_visa(root: Path, category: str | None) -> Dataset:
    """Split from ``split_csv/1cls.csv`` (object, split, label, image, mask), paths relative to the VisA root.

    The CSV labels images only "normal" / "anomaly", so every defect type is "anomaly".
    """
    visa_root, category = _visa_root_and_category(root, category)
    csv_path = visa_root / "split_csv" / "1cls.csv"
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: VisA split file not found")
    splits: dict[str, list[Sample]] = {"train": [], "test": []}
    with csv_path.open(newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            if row["object"] != category:
                continue
            where = f"{csv_path}:{line}"
            if row["split"] not in splits or row["label"] not in ("normal", "anomaly"):
                raise DatasetError(f"{where}: unknown split {row['split']!r} or label {row['label']!r}")
            image = visa_root / row["image"]
            if not image.is_file():
                raise DatasetError(f"{where}: image {image} not found")
            if row["label"] == "normal":
                splits[row["split"]].append(Sample(image, 0, GOOD))
                continue
            mask = visa_root / row["mask"] if row["mask"] else None
            if mask is None or not mask.is_file():
                raise DatasetError(f"{where}: anomalous image {image} has no mask file ({mask})")
            splits[row["split"]].append(Sample(image, 1, "anomaly", mask))
    if not splits["train"] and not splits["test"]:
        raise DatasetError(f"{csv_path}: no rows for category {category!r}")
    train, test = splits["train"], splits["test"]
    return Dataset(category, visa_root / category, "visa", train, test, mask_threshold=VISA_MASK_THRESHOLD)


def _load_folder(root: Path) -> Dataset:
    """Any folder of images (recursive): test samples of unknown label, no training set."""
    return Dataset(root.name, root, "folder", [], [Sample(p, -1, UNKNOWN) for p in _images(root)])


def detect_layout(root: Path) -> str:
    """Guess the layout from the folder structure (see :func:`load_dataset`)."""
    if (root / "train" / GOOD).is_dir():  # a missing test/ is then named, not taken for a plain folder
        return "mvtec"
    if (root / "train" / "ok").is_dir():
        return "btad"
    if (root / "split_csv").is_dir() or (root / "Data" / "Images").is_dir():
        return "visa"
    categories = sorted(p.name for p in root.iterdir() if (p / "train").is_dir() and (p / "test").is_dir())
    if categories:
        raise DatasetError(f"{root}: holds several categories ({', '.join(categories)}); pass one of them")
    return "folder"


def _check_mask_sizes(samples: list[Sample]) -> None:
    """Compare header sizes of every mask and its image; one error lists every mismatch."""
    problems = []
    for sample in samples:
        if sample.mask_path is None:
            continue
        try:
            image_hw, mask_hw = image_size(sample.path), image_size(sample.mask_path)
        except ImageError as exc:
            raise DatasetError(str(exc)) from exc
        if image_hw != mask_hw:
            problems.append(
                f"mask {sample.mask_path} is (H, W) = {mask_hw} but image {sample.path} is {image_hw}"
            )
    if problems:
        header = f"{len(problems)} mask(s) differ in size from their image:"
        raise DatasetError("\n".join([header, *problems]))


def load_dataset(
    root: str | Path,
    *,
    layout: str = "auto",
    category: str | None = None,
    check_masks: bool = True,
) -> Dataset:
    """Gather the samples of one category.

    Layouts: ``"mvtec"`` (also MPDD and Magnetic-Tile), ``"btad"``, ``"visa"`` (``root`` is the VisA
    root with ``category``, or the category folder), ``"folder"`` (any images, unlabelled test set), and
    ``"auto"``: mvtec if ``train/good`` exists, btad if ``train/ok``, visa if ``split_csv`` or
    ``Data/Images``, else folder. ``check_masks`` compares every mask's size with its image's from the
    file headers. A defect image without a mask is an error.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    if not any(root.iterdir()):
        raise DatasetError(f"{root}: folder is empty")
    if layout == "auto":
        layout = detect_layout(root)
    if category is not None and layout != "visa":
        raise DatasetError(f"category={category!r} applies to the VisA layout only, not {layout!r}")
    if layout == "visa":
        dataset = _load_visa(root, category)
    else:
        dataset = {"mvtec": _load_mvtec, "btad": _load_btad, "folder": _load_folder}[layout](root)
    if check_masks:
        _check_mask_sizes(dataset.test)
    return dataset
