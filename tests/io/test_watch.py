import pytest

from lineguard.io.watch import FolderWatcher


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_a_file_is_ready_once_its_size_is_stable(tmp_path):
    watcher = FolderWatcher(tmp_path)
    part = tmp_path / "a.png"
    part.write_bytes(b"x" * 10)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".b.png").write_bytes(b"hidden temporary")
    (tmp_path / "empty.png").write_bytes(b"")
    assert watcher.poll() == []  # first sight: maybe still being written
    with open(part, "ab") as f:
        f.write(b"y" * 10)  # still growing
    assert watcher.poll() == []
    assert watcher.poll() == [part]  # unchanged since the last poll
    assert watcher.poll() == []  # handed on once only


def test_forget_offers_a_file_again_and_sub_folders_count(tmp_path):
    (tmp_path / "cam1").mkdir()
    image = tmp_path / "cam1" / "a.jpg"
    image.write_bytes(b"abc")
    watcher = FolderWatcher(tmp_path)
    watcher.poll()
    assert watcher.poll() == [image]
    watcher.forget(image)
    watcher.poll()
    assert watcher.poll() == [image]


def test_follow_stops_after_idle_timeout(tmp_path):
    fake = FakeTime()
    (tmp_path / "a.png").write_bytes(b"1")
    watcher = FolderWatcher(tmp_path, poll_seconds=1.0, clock=fake.clock, sleep=fake.sleep)
    assert list(watcher.follow(idle_timeout=5.0)) == [tmp_path / "a.png"]
    assert 5.0 <= fake.now <= 7.0  # the file took two polls, then five idle seconds


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        FolderWatcher(tmp_path / "nope")
