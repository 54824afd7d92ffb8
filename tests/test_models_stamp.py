"""Verification stamps: a big model file is hashed once, and again whenever it may have changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fusionray.models import stamp
from fusionray.models.download import sha256_file


class CountingHash:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> str:
        self.calls += 1
        return sha256_file(path)


@pytest.fixture
def model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(stamp, "MIN_STAMP_BYTES", 0)  # Stamp even this small file.
    monkeypatch.setenv("FUSIONRAY_CACHE", str(tmp_path / "default-cache"))
    path = tmp_path / "models" / "big.onnx"
    path.parent.mkdir()
    path.write_bytes(b"a" * 1000)
    old = path.stat().st_mtime_ns - 3600 * 10**9  # An hour old: not racy.
    os.utime(path, ns=(old, old))
    return path


def test_an_unchanged_file_is_hashed_once(model_file: Path) -> None:
    counting = CountingHash()
    digest = stamp.stamped_digest(model_file, "sha256", counting)
    assert digest == sha256_file(model_file)
    assert stamp.stamped_digest(model_file, "sha256", counting) == digest
    assert counting.calls == 1
    assert (model_file.parent / stamp.STAMP_FOLDER / "big.onnx.json").is_file()


def test_a_changed_file_is_hashed_again(model_file: Path) -> None:
    counting = CountingHash()
    first = stamp.stamped_digest(model_file, "sha256", counting)
    status = model_file.stat()
    model_file.write_bytes(b"b" * 1000)  # Same size, rewritten in place (same inode).
    os.utime(model_file, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    assert stamp.stamped_digest(model_file, "sha256", counting) != first
    assert counting.calls == 2


def test_a_racy_stamp_is_not_trusted(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file modified within the racy window of its stamp might have kept its mtime."""
    counting = CountingHash()
    monkeypatch.setattr(stamp, "RACY_SECONDS", 10 * 3600.0)
    stamp.stamped_digest(model_file, "sha256", counting)
    stamp.stamped_digest(model_file, "sha256", counting)
    assert counting.calls == 2
    monkeypatch.setattr(stamp, "RACY_SECONDS", 2.0)
    # Each hash re-stamped the file; with an hour between its mtime and the stamp it counts.
    stamp.stamped_digest(model_file, "sha256", counting)
    assert counting.calls == 2


def test_an_unwritable_folder_stamps_in_the_default_cache(
    model_file: Path, tmp_path: Path
) -> None:
    """Where no stamp can be written beside the file (here a file blocks the stamp folder, as
    a read-only shared folder would even for root), the default cache keeps it."""
    (model_file.parent / stamp.STAMP_FOLDER).write_text("not a folder")
    counting = CountingHash()
    stamp.stamped_digest(model_file, "sha256", counting)
    stamp.stamped_digest(model_file, "sha256", counting)
    assert counting.calls == 1
    assert list((tmp_path / "default-cache" / stamp.STAMP_FOLDER).glob("big.onnx.*.json"))
