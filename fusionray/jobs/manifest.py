"""The work folder's manifest: which chunks are finished, so a rerun renders only the rest.

A job writes each finished chunk's segment into the work folder (`.NAME.fusionray-work/` beside
the output) and then records it in `manifest.parquet`: owned frame range, segment file, byte
size, sha256, and the job key it was made under (config hash plus the identity of the input
video and the source images). The segment is written through a temporary name and a rename,
then its row is appended to `manifest.records.jsonl` (one fsynced JSON line per chunk, so
recording costs O(1) per chunk, not a rewrite of the whole table). Opening the folder compacts
the records into `manifest.parquet`. A job killed at any instant leaves a manifest that lists
only segments that are complete on disk (a torn last line is ignored).

On a rerun, a recorded chunk is reused only when its job key matches this job's, its range is
the one this job's plan gives it, and its segment file still has the recorded sha256. A work
folder made under a different key (changed config, changed input) is emptied first: stale
segments are never mixed with new ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fusionray.media.storage import write_atomic
from fusionray.types import Chunk, VideoInfo

log = logging.getLogger("fusionray")

MANIFEST_NAME = "manifest.parquet"
RECORDS_NAME = "manifest.records.jsonl"
SEGMENT_SUFFIX = ".segment"

MANIFEST_SCHEMA = pa.schema([
    ("chunk", pa.int32()),
    ("start", pa.int64()),
    ("stop", pa.int64()),
    ("segment", pa.string()),
    ("bytes", pa.int64()),
    ("sha256", pa.string()),
    ("config_hash", pa.string()),
    ("input_identity", pa.string()),
    ("faces_swapped", pa.int64()),
    ("frames_with_faces", pa.int64()),
    ("passthrough", pa.bool_()),
])
"""One row per finished chunk. `passthrough` rows hold unswapped frames (on_chunk_error=
passthrough) and are never reused: a rerun tries those chunks again."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_identity(info: VideoInfo, sources: list[Path]) -> str:
    """A digest of what the job reads: the video's size, mtime and probe, and the sources' bytes.

    Size and mtime catch a replaced file cheaply; the probe digest (frame pts, time base, size,
    codec) catches a same-size rewrite that kept the mtime; source images are small, so their
    content is hashed.
    """
    probe = hashlib.sha256(json.dumps([
        info.codec_name, info.width, info.height, info.pix_fmt, str(info.time_base),
        list(info.frame_pts), list(info.keyframe_indices), info.rotation,
    ]).encode()).hexdigest()
    if info.sequence is not None:
        # Every frame file's size and mtime: replacing any one frame changes the identity.
        folder = Path(info.sequence.folder)
        stats = [os.stat(folder / info.sequence.name(i)) for i in range(info.frame_count)]
        video: dict[str, object] = {"sizes": [st.st_size for st in stats], "probe": probe,
                                    "mtimes_ns": [st.st_mtime_ns for st in stats]}
    else:
        stat = os.stat(info.path)
        video = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "probe": probe}
    parts = {
        "video": video,
        "sources": [sha256_file(path) for path in sources],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class FinishedChunk:
    """A manifest row."""

    chunk: int
    start: int
    stop: int
    segment: str
    """File name inside the work folder."""
    bytes: int
    sha256: str
    config_hash: str
    input_identity: str
    faces_swapped: int = 0
    frames_with_faces: int = 0
    passthrough: bool = False


@dataclass
class Manifest:
    """The manifest of one work folder: compacted Parquet plus an append-only record file."""

    work: Path
    config_hash: str
    input_identity: str
    rows: dict[int, FinishedChunk] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What opening the work folder found (resumed, started clean and why), for run.json."""

    @property
    def path(self) -> Path:
        return self.work / MANIFEST_NAME

    @property
    def records_path(self) -> Path:
        return self.work / RECORDS_NAME

    @classmethod
    def open(
        cls, work: Path, *, config_hash: str, input_identity: str, chunks: list[Chunk]
    ) -> Manifest:
        """Open (or create) the work folder and keep the recorded chunks that are still valid.

        Args:
            work: the work folder; created if missing.
            config_hash: this job's `config_hash`.
            input_identity: this job's `input_identity`.
            chunks: this job's plan; rows whose range differs from it are dropped.
        """
        manifest = cls(work=work, config_hash=config_hash, input_identity=input_identity)
        work.mkdir(parents=True, exist_ok=True)
        recorded = manifest._read()
        if recorded is None:
            manifest._clear_folder()
            manifest._write()
            return manifest
        stale = [row for row in recorded
                 if (row.config_hash, row.input_identity) != (config_hash, input_identity)]
        if stale:
            reason = ("a different config" if stale[0].config_hash != config_hash
                      else "a different input video or source image")
            manifest.notes.append(
                f"work folder '{work}' held {len(recorded)} segment(s) made with {reason} "
                f"(config {stale[0].config_hash[:12]}); started clean"
            )
            log.warning("%s", manifest.notes[-1])
            manifest._clear_folder()
            manifest._write()
            return manifest
        planned = {chunk.index: chunk for chunk in chunks}
        dropped = retried = 0
        for row in recorded:
            if row.passthrough:
                retried += 1
                continue
            chunk = planned.get(row.chunk)
            segment = work / row.segment
            valid = (
                chunk is not None
                and (chunk.start, chunk.stop) == (row.start, row.stop)
                and segment.is_file()
                and segment.stat().st_size == row.bytes
                and sha256_file(segment) == row.sha256
            )
            if valid:
                manifest.rows[row.chunk] = row
            else:
                dropped += 1
        if manifest.rows or dropped or retried:
            note = f"resumed from '{work}': {len(manifest.rows)} finished chunk(s) reused"
            if dropped:
                note += f", {dropped} recorded chunk(s) failed verification and are re-rendered"
            if retried:
                note += f", {retried} chunk(s) written unswapped last time are tried again"
            manifest.notes.append(note)
            log.warning("%s", note)
        manifest._remove_unrecorded()
        manifest._write()
        return manifest

    @classmethod
    def count_recorded(cls, work: Path) -> int:
        """Chunks recorded in a work folder right now (read-only; a job may be writing it)."""
        rows: set[int] = set()
        path = work / MANIFEST_NAME
        with contextlib.suppress(OSError, pa.ArrowInvalid):
            rows.update(pq.read_table(pa.BufferReader(path.read_bytes()))["chunk"].to_pylist())
        rows.update(int(row["chunk"]) for row in _read_records(work / RECORDS_NAME)  # type: ignore[call-overload]
                    if "chunk" in row)
        return len(rows)

    def segment_path(self, chunk: Chunk) -> Path:
        return self.work / f"chunk_{chunk.index:06d}{SEGMENT_SUFFIX}"

    def record(
        self, chunk: Chunk, segment: bytes, *, faces_swapped: int, frames_with_faces: int,
        passthrough: bool = False,
    ) -> Path:
        """Write a chunk's segment, then list it in the manifest (in that order)."""
        path = self.segment_path(chunk)
        write_atomic(path, lambda partial: partial.write_bytes(segment), durable=True)
        self.rows[chunk.index] = FinishedChunk(
            chunk=chunk.index, start=chunk.start, stop=chunk.stop, segment=path.name,
            bytes=len(segment), sha256=sha256_bytes(segment), config_hash=self.config_hash,
            input_identity=self.input_identity, faces_swapped=faces_swapped,
            frames_with_faces=frames_with_faces, passthrough=passthrough,
        )
        line = json.dumps(self.rows[chunk.index].__dict__, sort_keys=True) + "\n"
        with self.records_path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return path

    def _read(self) -> list[FinishedChunk] | None:
        """Compacted rows, then appended records (a later record of a chunk wins)."""
        records = _read_records(self.records_path)
        if not self.path.is_file() and not records:
            return None
        rows: list[dict[str, object]] = []
        if self.path.is_file():
            try:
                table = pq.read_table(self.path)
            except (OSError, pa.ArrowInvalid) as error:
                self.notes.append(f"unreadable manifest '{self.path}' ({error}); started clean")
                return None
            if not set(MANIFEST_SCHEMA.names) <= set(table.column_names):
                self.notes.append(f"manifest '{self.path}' is from another version; "
                                  "started clean")
                return None
            rows = table.to_pylist()
        latest: dict[object, FinishedChunk] = {}
        for row in [*rows, *records]:
            if not set(MANIFEST_SCHEMA.names) <= set(row):
                continue
            latest[row["chunk"]] = FinishedChunk(
                **{name: row[name] for name in MANIFEST_SCHEMA.names})  # type: ignore[arg-type]
        return list(latest.values())

    def _write(self) -> None:
        """Compact: every row into the Parquet file, then an empty record file."""
        rows = [self.rows[index].__dict__ for index in sorted(self.rows)]
        table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        write_atomic(self.path, lambda partial: pq.write_table(table, partial))
        self.records_path.unlink(missing_ok=True)

    def _clear_folder(self) -> None:
        for entry in self.work.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _remove_unrecorded(self) -> None:
        """Delete segments the manifest does not vouch for (half-written or failed checks).

        A recorded segment's companions (`chunk_000003.faces.parquet` beside
        `chunk_000003.segment`) stay with it.
        """
        stems = {row.segment.split(".", 1)[0] for row in self.rows.values()}
        for entry in self.work.iterdir():
            if entry.name in (MANIFEST_NAME, RECORDS_NAME) or not entry.is_file():
                continue
            if entry.name.split(".", 1)[0] not in stems:
                entry.unlink()


def _read_records(path: Path) -> list[dict[str, object]]:
    """The rows appended to a record file; a line cut short by a kill is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def write_parquet_atomic(path: Path, table: pa.Table) -> None:
    """Write a Parquet table whole or not at all (`write_atomic`)."""
    write_atomic(path, lambda partial: pq.write_table(table, partial))


def chunk_faces_path(manifest: Manifest, chunk: Chunk) -> Path:
    """Where a chunk's face-tracks table waits in the work folder (kept for resume)."""
    return manifest.work / f"chunk_{chunk.index:06d}.faces.parquet"
