"""Inputs and outputs as URIs, through `pyarrow.fs`: local paths, file://, s3://, gs://, hdfs://.

Every node of a cluster reads the same shot and writes to shared storage:

- **Inputs** (the video, source images) are *localised*: a local path is used as is; a URI is
  downloaded once per node into a cache keyed by the URI, size and modification time
  (`$FUSIONRAY_CACHE/inputs/`), through a temporary file and a rename, so concurrent actors on
  one node never read a half-written copy. Video decoding seeks, which object stores do
  poorly through a stream, so a local copy is the right trade for chunked decoding.
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
import hashlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from fusionray.errors import MediaError, OutputError
from fusionray.types import VideoInfo

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs")
"""URI schemes that name shared storage (file:// is local)."""
COPY_BLOCK_BYTES = 8 << 20
"""Bytes per read/write when streaming a file to or from storage."""


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
        raise MediaError(f"Cannot open storage for {uri!r}: {_first_line(error)}") from None


def input_cache_dir() -> Path:
    """`$FUSIONRAY_CACHE/inputs`, or `~/.cache/fusionray/inputs`."""
    base = os.environ.get("FUSIONRAY_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "fusionray") / "inputs"


def localise(location: str | os.PathLike[str], *, cache_dir: Path | None = None) -> Path:
    """A local path holding the file at `location` (downloaded once per node when remote).

    Args:
        location: a local path, or a URI that `pyarrow.fs` understands.
        cache_dir: where remote files are kept (default `input_cache_dir()`).

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
        raise MediaError(f"Cannot read {text!r}: {_first_line(error)}") from None
    if info.type != pafs.FileType.File:
        raise MediaError(f"Input not found: {text!r}")
    stamp = f"{text}\n{info.size}\n{info.mtime_ns}".encode()
    folder = (cache_dir or input_cache_dir()) / hashlib.sha256(stamp).hexdigest()[:24]
    target = folder / PurePosixPath(path).name
    if target.is_file() and target.stat().st_size == info.size:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        with filesystem.open_input_stream(path) as source, open(partial, "wb") as sink:
            _copy(source, sink)
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise MediaError(f"Cannot download {text!r}: {_first_line(error)}") from None
    return target


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
                          f"{_first_line(error)}") from None
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
        raise OutputError(f"Cannot publish {destination!r}: {_first_line(error)}") from None


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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
