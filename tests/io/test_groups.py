"""Independent batches for test-batch methods: by folder or by count."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.errors import ParameterError
from lineguard.io.groups import group_paths, parse_batch_by


def test_batches_by_folder_are_named_below_the_common_parent():
    paths = [Path(p) for p in ("/line/a/cam1/1.png", "/line/a/cam2/1.png", "/line/a/cam1/2.png", "/line/b/3.png")]
    assert group_paths(paths, "folder") == {"a/cam1": [paths[0], paths[2]], "a/cam2": [paths[1]], "b": [paths[3]]}
    assert group_paths(paths[:1], "folder") == {"cam1": paths[:1]}
    inside = [Path("/line/0.png"), Path("/line/cam/1.png")]
    assert group_paths(inside, "folder") == {"line": inside[:1], "cam": inside[1:]}


def test_batches_by_count_keep_the_order():
    paths = [Path(f"{i}.png") for i in range(5)]
    assert group_paths(paths, 2) == {"batch-0000": paths[:2], "batch-0001": paths[2:4], "batch-0002": paths[4:]}


@pytest.mark.parametrize("value", ["0", "-3", "folders", "2.5", ""])
def test_a_bad_batch_by_is_named(value):
    with pytest.raises(ParameterError, match="--batch-by must be 'folder' or a positive number"):
        parse_batch_by(value)
    assert parse_batch_by("folder") == "folder" and parse_batch_by("12") == 12
