"""The work-folder manifest on its own (no Ray): what a reopened folder keeps and what it drops.

The end-to-end resume behaviour (a killed driver, a rerun) is in `test_faults.py`.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from fusionray.errors import RenderError
from fusionray.jobs.manifest import MANIFEST_NAME, RECORDS_NAME, Manifest
from fusionray.jobs.scheduler import record_segment
from fusionray.media.plan import plan_chunks

CHUNKS = plan_chunks(30, chunk_frames=10, overlap=2)


def open_manifest(work: Path, config_hash: str = "c1", input_identity: str = "i1") -> Manifest:
    return Manifest.open(work, config_hash=config_hash, input_identity=input_identity,
                         chunks=CHUNKS)


def record(manifest: Manifest, index: int, payload: bytes) -> Path:
    return manifest.record(CHUNKS[index], payload, faces_swapped=1, frames_with_faces=1)


def test_reopening_keeps_recorded_segments_and_their_companion_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    manifest = open_manifest(work)
    segment = record(manifest, 0, b"segment zero")
    tracks = segment.with_name("chunk_000000.faces.parquet")
    tracks.write_bytes(b"tracks of chunk zero")
    unrecorded = work / "chunk_000001.segment"  # written, but the driver died before recording
    unrecorded.write_bytes(b"half")
    orphan_tracks = work / "chunk_000001.faces.parquet"
    orphan_tracks.write_bytes(b"tracks of chunk one")

    reopened = open_manifest(work)

    assert sorted(reopened.rows) == [0]
    assert segment.read_bytes() == b"segment zero"
    assert tracks.read_bytes() == b"tracks of chunk zero"
    assert not unrecorded.exists() and not orphan_tracks.exists()
    assert any("1 finished chunk(s) reused" in note for note in reopened.notes)


def test_a_segment_whose_bytes_changed_is_dropped_and_rendered_again(tmp_path: Path) -> None:
    work = tmp_path / "work"
    manifest = open_manifest(work)
    record(manifest, 0, b"segment zero")
    record(manifest, 1, b"segment one").write_bytes(b"segment 1!!")  # same size, other bytes

    reopened = open_manifest(work)

    assert sorted(reopened.rows) == [0]
    assert not (work / "chunk_000001.segment").exists()
    assert any("1 recorded chunk(s) failed verification" in note for note in reopened.notes)


def test_a_different_config_starts_the_folder_clean(tmp_path: Path) -> None:
    work = tmp_path / "work"
    record(open_manifest(work), 0, b"segment zero")

    reopened = open_manifest(work, config_hash="c2")

    assert reopened.rows == {}
    assert [p.name for p in work.iterdir()] == [MANIFEST_NAME]  # an empty, compacted manifest
    assert any("a different config" in note for note in reopened.notes)


def test_recording_appends_one_line_and_never_rewrites_the_table(tmp_path: Path) -> None:
    work = tmp_path / "work"
    manifest = open_manifest(work)
    compacted = (work / MANIFEST_NAME).read_bytes()
    for index in range(3):
        record(manifest, index, f"segment {index}".encode())
        lines = (work / RECORDS_NAME).read_text().splitlines()
        assert len(lines) == index + 1
        assert Manifest.count_recorded(work) == index + 1
    assert (work / MANIFEST_NAME).read_bytes() == compacted  # O(1) per chunk

    reopened = open_manifest(work)  # compacts the records into the table
    assert sorted(reopened.rows) == [0, 1, 2]
    assert not (work / RECORDS_NAME).exists()
    assert Manifest.count_recorded(work) == 3


def test_a_record_torn_by_a_kill_is_ignored(tmp_path: Path) -> None:
    work = tmp_path / "work"
    manifest = open_manifest(work)
    record(manifest, 0, b"segment zero")
    record(manifest, 1, b"segment one")
    records = work / RECORDS_NAME
    text = records.read_text()
    records.write_text(text[: len(text) - 20])  # the driver died writing the second line

    reopened = open_manifest(work)

    assert sorted(reopened.rows) == [0]
    assert not (work / "chunk_000001.segment").exists()


def test_a_segment_that_cannot_be_written_names_the_cause(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk says so; a file vanishing under the write says the work folder disappeared,
    also while a removal in progress has not yet reached the folder itself (it deletes the
    files first; the fault test that removes the output folder mid-job met it)."""
    manifest = open_manifest(tmp_path / "work")

    def failing(error: OSError) -> None:
        def record(*_: object, **__: object) -> Path:
            raise error
        monkeypatch.setattr(manifest, "record", record)

    failing(OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(RenderError, match=r"Cannot write the segment of chunk 1 \(frames "
                                          r"\d+-\d+\) to .*: No space left on device"):
        record_segment(manifest, CHUNKS[1], b"x", faces_swapped=0, frames_with_faces=0)
    failing(FileNotFoundError(errno.ENOENT, "No such file or directory"))
    assert manifest.work.is_dir()
    with pytest.raises(RenderError, match="the work folder disappeared"):
        record_segment(manifest, CHUNKS[1], b"x", faces_swapped=0, frames_with_faces=0)
