"""Inputs and outputs as URIs, through `pyarrow.fs`: local paths, file://, s3://, gs://, hdfs://.

Every node of a cluster reads the same shot and writes to shared storage:

- **Inputs** (the video, source images) are *localised*: a local path is used as is; a URI is
  downloaded once per node into a cache keyed by the URI, size and modification time
  (`$FUSIONRAY_CACHE/inputs/`), through a temporary file and a rename, so concurrent actors on
  one node never read a half-written copy. Actors localising the same input at once take a
  per-entry file lock (`flock`): one downloads, the others wait and then use its copy. Video
  decoding seeks, which object stores do poorly through a stream, so a local copy is the right
  trade for chunked decoding. The cache is bounded (`InputCachePolicy`): after each download,
  entries unused for longer than `max_age_seconds`, then the least recently used beyond
  `max_bytes`, are removed, never one used within `keep_recent_seconds` (an actor may be about
  to open it) nor one being downloaded (its lock is held).
- **Outputs** are rendered into a local staging folder and then *published*: each file is
  uploaded to a temporary key beside its destination (`.NAME.partial-<random>`) and moved onto
  the final key only once complete. On S3 and GCS the move is a server-side copy, which creates
  the final object in one step (an object store has no rename), followed by deleting the
  temporary key; on local and HDFS file systems it is a rename. Either way the final key holds
  nothing or a complete file; a failed upload deletes its temporary key.

Connection settings travel in the URI or in the usual environment: for S3, credentials from
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (or the SDK's credential chain), and a non-AWS
endpoint as URI query options, e.g. `s3://shots/a.mp4?endpoint_override=host:9000&scheme=http`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from fusionray.config import StorageConfig
from fusionray.errors import MediaError, OutputError, first_line
from fusionray.types import VideoInfo

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs")
"""URI schemes that name shared storage (file:// is local)."""
COPY_BLOCK_BYTES = 8 << 20
"""Bytes per read/write when streaming a file to or from storage."""
ENTRY_LOCK = ".lock"
"""File in each input-cache entry folder that its downloader holds locked (`flock`)."""

log = logging.getLogger("fusionray")


def write_atomic(path: Path, write: Callable[[Path], object], *, durable: bool = False) -> None:
    """Write `path` whole or not at all: `write` fills a temporary file beside it
    (`.STEM.partial-PID-TID.SUFFIX`: one per writing thread, and the suffix kept, so writers
    that pick a format by extension still see it), which is then renamed onto `path`.
    Readers see the old file or the new one, never a torn one; the temporary file is removed
    when anything fails.

    Args:
        path: the local file to write.
        write: writes the file it is given (e.g. `lambda p: p.write_bytes(data)`).
        durable: flush the data to disk before the rename (what a rerun trusts after a crash:
            segments, frames), not only to the page cache.
    """
    partial = path.with_name(
        f".{path.stem}.partial-{os.getpid()}-{threading.get_native_id()}{path.suffix}")
    try:
        write(partial)
        if durable:
            descriptor = os.open(partial, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def exclusive_file_lock(path: Path, *, blocking: bool = True,
                        remove: bool = False) -> Iterator[bool]:
    """Hold an exclusive `flock` on `path` (created if missing) for the `with` block.

    Works between processes and between threads of one process (each call opens its own file
    description). The lock dies with its holder, so a crashed downloader never blocks the next.
    On network file systems `flock` may be node-local: this is a per-node lock by design.
    With `remove`, the holder deletes the lock file before releasing it (nothing is left in
    the folder); a waiter that then gets the deleted file's lock notices and locks anew.

    Yields:
        True when the lock is held; False only with `blocking=False` when another holds it.
    """
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(descriptor)
            yield False
            return
        try:
            # The file may have been moved away (an evicted entry) while we waited: a lock on
            # it would guard nothing at `path`, so take the lock again on the file there now.
            same = os.fstat(descriptor).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)
    try:
        yield True
    finally:
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(path)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


@dataclasses.dataclass(frozen=True)
class InputCachePolicy:
    """How much of the node-local input cache is kept (`storage.input_cache_*` keys)."""

    max_bytes: int | None = 100 << 30
    """Total size kept, in bytes (None = no size limit)."""
    max_age_seconds: float | None = 7 * 24 * 3600.0
    """Entries unused for longer are removed (None = no age limit)."""
    keep_recent_seconds: float = 600.0
    """Entries used more recently are never removed, whatever the size (an actor that just
    localised an input may not have opened it yet)."""

    @classmethod
    def from_config(cls, storage: StorageConfig) -> InputCachePolicy:
        """The policy of a job's `storage.input_cache_*` keys (0 = no limit)."""
        return cls(
            max_bytes=int(storage.input_cache_max_gb * 1e9) or None,
            max_age_seconds=storage.input_cache_max_age_hours * 3600.0 or None,
        )

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 or None, got {self.max_bytes!r}")
        if self.max_age_seconds is not None and self.max_age_seconds <= 0:
            raise ValueError(f"max_age_seconds must be > 0 or None, got {self.max_age_seconds!r}")
        if self.keep_recent_seconds < 0:
            raise ValueError(f"keep_recent_seconds must be >= 0, got {self.keep_recent_seconds!r}")


def is_uri(location: str | os.PathLike[str]) -> bool:
    """True for `scheme://...` strings (file:// included), False for plain paths."""
    text = os.fspath(location)
    scheme = urlsplit(text).scheme
    return "://" in text and len(scheme) > 1  # a Windows drive letter is not a scheme


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True when `location` names shared storage rather than this machine's file system."""
    return is_uri(location) and urlsplit(os.fspath(location)).scheme in REMOTE_SCHEMES


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system for `uri` and the path inside it.

    Raises:
        MediaError: the scheme is unknown or the URI is malformed.
    """
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as error:
        raise MediaError(f"Cannot open storage for {uri!r}: {first_line(error)}") from None


def input_cache_dir() -> Path:
    """`$FUSIONRAY_CACHE/inputs`, or `~/.cache/fusionray/inputs`."""
    base = os.environ.get("FUSIONRAY_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "fusionray") / "inputs"


def localise(
    location: str | os.PathLike[str],
    *,
    cache_dir: Path | None = None,
    policy: InputCachePolicy | None = None,
) -> Path:
    """A local path holding the file at `location` (downloaded once per node when remote).

    Args:
        location: a local path, or a URI that `pyarrow.fs` understands.
        cache_dir: where remote files are kept (default `input_cache_dir()`).
        policy: how much of the cache to keep after a download (default `InputCachePolicy()`).

    Raises:
        MediaError: the URI cannot be opened, the file does not exist, or the download fails.
    """
    text = os.fspath(location)
    if not is_uri(text):
        return Path(text).expanduser()
    filesystem, path = open_filesystem(text)
    if isinstance(filesystem, pafs.LocalFileSystem):
        return Path(path)
    try:
        info = filesystem.get_file_info(path)
    except OSError as error:
        raise MediaError(f"Cannot read {text!r}: {first_line(error)}") from None
    if info.type != pafs.FileType.File:
        raise MediaError(f"Input not found: {text!r}")
    stamp = f"{text}\n{info.size}\n{info.mtime_ns}".encode()
    root = cache_dir or input_cache_dir()
    folder = root / hashlib.sha256(stamp).hexdigest()[:24]
    target = folder / PurePosixPath(path).name
    if _complete(target, info.size):
        _mark_used(folder)
        return target
    try:
        with exclusive_file_lock(folder / ENTRY_LOCK):
            # Whoever held the lock before us may have downloaded it meanwhile.
            if not _complete(target, info.size):
                _download(filesystem, path, target, text)
            _mark_used(folder)
    except OSError as error:
        raise MediaError(f"Cannot download {text!r}: {first_line(error)}") from None
    evict_inputs(root, policy or InputCachePolicy(), keep=folder)
    return target


def _complete(target: Path, size: int | None) -> bool:
    return target.is_file() and (size is None or target.stat().st_size == size)


def _download(filesystem: pafs.FileSystem, path: str, target: Path, text: str) -> None:
    partial = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        with filesystem.open_input_stream(path) as source, open(partial, "wb") as sink:
            _copy(source, sink)
        os.replace(partial, target)
    except OSError:
        partial.unlink(missing_ok=True)
        raise


def _mark_used(folder: Path) -> None:
    """Record the entry's last use (the folder's mtime), which eviction orders by."""
    with contextlib.suppress(OSError):
        os.utime(folder)


def evict_inputs(root: Path, policy: InputCachePolicy, *, keep: Path | None = None) -> list[Path]:
    """Apply `policy` to the input cache at `root`; returns the entry folders removed.

    Entries unused for longer than `max_age_seconds` go first, then the least recently used
    until the total is within `max_bytes`. Never removed: `keep`, entries used within
    `keep_recent_seconds`, and entries whose lock another process holds (being downloaded).
    A file an actor already has open stays readable after removal (POSIX unlink semantics).
    """
    now = time.time()
    entries: list[tuple[float, int, Path]] = []
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    for folder in folders:
        try:
            used = folder.stat().st_mtime
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        except OSError:
            continue  # removed meanwhile
        entries.append((used, size, folder))
    entries.sort()  # least recently used first
    total = sum(size for _, size, _ in entries)
    removed: list[Path] = []
    for used, size, folder in entries:
        too_old = policy.max_age_seconds is not None and now - used > policy.max_age_seconds
        too_big = policy.max_bytes is not None and total > policy.max_bytes
        if not (too_old or too_big):
            continue
        if folder == keep or now - used < policy.keep_recent_seconds:
            continue
        if _remove_entry(folder):
            total -= size
            removed.append(folder)
            log.info("Input cache: removed %s (%.1f MB, unused for %.0f s)", folder,
                     size / 1e6, now - used)
    return removed


def _remove_entry(folder: Path) -> bool:
    """Remove one entry unless its downloader holds its lock; False when skipped."""
    with exclusive_file_lock(folder / ENTRY_LOCK, blocking=False) as held:
        if not held:
            return False
        # Moved aside first: a localise() arriving now sees no entry and downloads afresh,
        # instead of finding a folder half deleted.
        aside = folder.with_name(f".evicted-{folder.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(folder, aside)
        except OSError:
            return False
    shutil.rmtree(aside, ignore_errors=True)
    return True


def local_video_info(info: VideoInfo) -> VideoInfo:
    """`info` with its path localised: actors on any node call this before decoding."""
    if not is_uri(info.path):
        return info
    return dataclasses.replace(info, path=str(localise(info.path)))


def check_destination(uri: str) -> None:
    """Fail early when the folder (or bucket) a remote output goes to cannot be reached.

    Raises:
        OutputError: the URI cannot be opened or its parent folder/bucket does not exist.
    """
    try:
        filesystem, path = open_filesystem(uri)
    except MediaError as error:
        raise OutputError(str(error)) from None
    parent = str(PurePosixPath(path).parent)
    try:
        info = filesystem.get_file_info(parent)
    except OSError as error:
        raise OutputError(f"Cannot reach the output location {uri!r}: "
                          f"{first_line(error)}") from None
    # Object stores have no real folders: only the bucket must exist.
    bucket = PurePosixPath(path).parts[0] if PurePosixPath(path).parts else path
    if not _is_object_store(filesystem):
        if info.type == pafs.FileType.NotFound:
            raise OutputError(f"Output folder does not exist: {uri!r}")
    elif filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
        raise OutputError(f"Output bucket {bucket!r} does not exist: {uri!r}")


def publish(local: Path, destination: str) -> None:
    """Copy `local` to `destination` so that the destination is never seen incomplete.

    The bytes go to a temporary key beside the destination, which is then moved onto it; a
    failure removes the temporary key and leaves the destination as it was.

    Raises:
        OutputError: the upload or the final move failed.
    """
    filesystem, path = open_filesystem(destination)
    final = PurePosixPath(path)
    temporary = str(final.with_name(f".{final.name}.partial-{uuid.uuid4().hex[:12]}"))
    try:
        if not _is_object_store(filesystem):  # object stores have no folders to create
            filesystem.create_dir(str(final.parent), recursive=True)
        with open(local, "rb") as source, filesystem.open_output_stream(temporary) as sink:
            _copy(source, sink)
        finalise(filesystem, temporary, path)
    except (OSError, pa.ArrowException) as error:
        with contextlib.suppress(OSError, pa.ArrowException):  # never written, or moved
            filesystem.delete_file(temporary)
        raise OutputError(f"Cannot publish {destination!r}: {first_line(error)}") from None


def finalise(filesystem: pafs.FileSystem, temporary: str, final: str) -> None:
    """Move the complete temporary file onto the final key (server-side on object stores)."""
    filesystem.move(temporary, final)


def publish_all(files: Iterable[tuple[Path, str]]) -> None:
    """Publish each (local file, destination URI) in order; missing local files are skipped.

    Callers put the main artefact last, so whoever watches for it finds its sidecars there.
    """
    for local, destination in files:
        if local.is_file():
            publish(local, destination)


def sibling(uri: str, name: str) -> str:
    """The URI of file `name` in the same folder as `uri`, keeping any query options."""
    parts = urlsplit(uri)
    folder = PurePosixPath(parts.path).parent
    rebuilt = parts._replace(path=str(folder / name))
    return rebuilt.geturl()


def _is_object_store(filesystem: pafs.FileSystem) -> bool:
    return filesystem.type_name in ("s3", "gcs")


def _copy(source: object, sink: object) -> None:
    while True:
        block = source.read(COPY_BLOCK_BYTES)  # type: ignore[attr-defined]
        if not block:
            return
        sink.write(block)  # type: ignore[attr-defined]

