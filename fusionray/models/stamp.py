"""Remember a model file's digests so a file verified once is not hashed again by every actor.

Hashing inswapper_128 (554 MB) takes seconds and every actor that opens it verifies it. A stamp
records a file's digests with the size, mtime (ns) and inode they were computed for; while those
are unchanged the recorded digest is used. That is the trust `make` and `rsync` put in mtimes; a
file replaced or rewritten gets a new mtime (or inode), so its stamp no longer applies and it is
hashed again.

Racy stamps (git's "racy clean" problem): a file modified within the filesystem's timestamp
granularity after it was hashed keeps its mtime. So a stamp is only trusted when the file's mtime
is at least `RACY_SECONDS` older than the moment the stamp was written; otherwise the file is
hashed again and the stamp rewritten (by then the file is usually old enough).

Files under `MIN_STAMP_BYTES` are hashed every time (cheaper than the bookkeeping). Stamps live
in a `.verified` folder beside the file, or, where that folder cannot be written (a
read-only shared model folder), in the default model cache keyed by the file's absolute path.
Writing a stamp is best effort: a failure only means hashing again next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

STAMP_FOLDER = ".verified"
MIN_STAMP_BYTES = 32 * 2**20
"""Smaller files are simply hashed (well under 0.1 s); stamps pay off for the big swappers."""
RACY_SECONDS = 2.0
"""A stamp only counts for a file whose mtime is this much older than the stamp."""


def _stamp_paths(path: Path) -> list[Path]:
    """Where the stamp of `path` may live, preferred first."""
    resolved = path.resolve()
    beside = resolved.parent / STAMP_FOLDER / (resolved.name + ".json")
    from fusionray.models.store import default_cache_dir  # store imports this module.

    key = hashlib.sha256(str(resolved).encode()).hexdigest()[:32]
    elsewhere = default_cache_dir() / STAMP_FOLDER / f"{resolved.name}.{key}.json"
    return [beside, elsewhere]


def _identity(path: Path) -> dict[str, int]:
    status = path.stat()
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "inode": status.st_ino}


def _read_stamp(path: Path) -> tuple[Path | None, dict[str, object]]:
    for candidate in _stamp_paths(path):
        try:
            record = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("path") == str(path.resolve()):
            return candidate, record
    return None, {}


def _write_stamp(path: Path, record: dict[str, object]) -> None:
    for candidate in _stamp_paths(path):
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            # Temporary file + rename: concurrent actors never read a half-written stamp.
            handle, temporary = tempfile.mkstemp(dir=candidate.parent, prefix=".stamp-")
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(record, stream)
            os.replace(temporary, candidate)
            return
        except OSError as error:
            log.debug("Cannot write the verification stamp %s: %s", candidate, error)
    log.debug("No verification stamp written for %s; it will be hashed again", path)


def stamped_digest(path: Path, algorithm: str, compute: Callable[[Path], str]) -> str:
    """The `algorithm` digest of `path`: from its stamp when the file is unchanged since it was
    stamped (and not racy), else computed with `compute(path)` and stamped.

    Args:
        path: the file.
        algorithm: digest name used as the stamp key, e.g. `sha256` or `crc32`.
        compute: computes the digest (hex string) from the file.
    """
    identity = _identity(path)
    if identity["size"] < MIN_STAMP_BYTES:
        return compute(path)
    _, record = _read_stamp(path)
    digests = record.get("digests") if record else None
    stamped_ns = record.get("stamped_ns") if record else None
    valid = (
        isinstance(digests, dict)
        and all(record.get(key) == value for key, value in identity.items())
        and isinstance(stamped_ns, int)
        and identity["mtime_ns"] + int(RACY_SECONDS * 1e9) < stamped_ns
    )
    if valid and isinstance(digests, dict) and isinstance(digests.get(algorithm), str):
        return str(digests[algorithm])
    digest = compute(path)
    if _identity(path) != identity:
        return digest  # Changed while hashing: do not stamp a digest of moving bytes.
    kept = dict(digests) if valid and isinstance(digests, dict) else {}
    kept[algorithm] = digest
    _write_stamp(path, {"path": str(path.resolve()), **identity, "stamped_ns": time.time_ns(),
                        "digests": kept})
    return digest
