"""HTTP downloads for the model store: pooch does the fetching, this module makes it resumable.

pooch (the data fetcher of SciPy and scikit-image) downloads to a temporary file beside the
target, checks a known hash, moves the file into place atomically, and unpacks archives
(`pooch.Unzip`). Its own HTTP downloader cannot resume: every attempt starts from byte 0 and a
failed attempt's bytes are deleted, which is hopeless for a 550 MB model over a flaky link. pooch
takes any callable as its downloader, so `ResumableDownloader` plugs in there: it keeps the bytes
received so far in a stable `.partial` file, asks for the rest with an HTTP `Range` request,
retries with backoff, and shows a tqdm progress bar. Requests (pooch's own HTTP library) does the
HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from fusionray.errors import ModelError

log = logging.getLogger(__name__)

DOWNLOAD_ATTEMPTS = 4
"""Tries per source (a resumed try continues where the last one stopped)."""
DOWNLOAD_TIMEOUT_SECONDS = 60.0
"""Connect and read timeout of one request: a server silent for this long counts as cut."""
RETRY_WAIT_SECONDS = 1.0
"""First pause between tries; doubles each time, at most 8 s."""
_CHUNK_BYTES = 1 << 16
_NOT_TRANSIENT = (400, 401, 403, 404, 410)


def partial_path(folder: Path, url: str) -> Path:
    """Where the bytes received so far from `url` are kept between tries and between runs."""
    key = hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()[:16]
    return folder / f".download-{key}.partial"


class ResumableDownloader:
    """A pooch downloader that resumes interrupted downloads with HTTP Range requests.

    Args:
        attempts: tries before giving up (each resumes from the bytes already on disk).
        timeout: seconds for the connection and for each read.
        retry_wait: seconds before the second try; doubles each try, capped at 8 s.
        progressbar: show a tqdm bar (None: only on a terminal).
    """

    def __init__(
        self,
        *,
        attempts: int = DOWNLOAD_ATTEMPTS,
        timeout: float = DOWNLOAD_TIMEOUT_SECONDS,
        retry_wait: float = RETRY_WAIT_SECONDS,
        progressbar: bool | None = None,
    ) -> None:
        self.attempts = attempts
        self.timeout = timeout
        self.retry_wait = retry_wait
        self.progressbar = progressbar

    def __call__(self, url: str, output_file: str | Path, pooch: Any, check_only: bool = False
                 ) -> bool | None:
        """Download `url` into `output_file` (pooch's temporary name), resuming if possible.

        Raises:
            ModelError: the server refuses the file (4xx), or every try failed.
        """
        if check_only:
            response = requests.head(url, timeout=self.timeout, allow_redirects=True)
            return response.status_code == 200
        output = Path(output_file)
        partial = partial_path(output.parent, url)
        last_error: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self._attempt(url, partial)
            except requests.HTTPError as error:
                status = error.response.status_code if error.response is not None else None
                if status in _NOT_TRANSIENT:
                    partial.unlink(missing_ok=True)
                    raise ModelError(f"{url}: the server answered HTTP {status}") from None
                last_error = error
            except (requests.RequestException, OSError) as error:
                last_error = error
            else:
                os.replace(partial, output)
                return None
            have = partial.stat().st_size if partial.exists() else 0
            log.warning("Download of %s failed (try %d/%d, %d bytes kept): %s",
                        url, attempt, self.attempts, have, last_error)
            if attempt < self.attempts:
                time.sleep(min(self.retry_wait * 2 ** (attempt - 1), 8.0))
        raise ModelError(
            f"{url}: download failed after {self.attempts} tries ({last_error}); the bytes "
            f"received so far are kept in {partial} and the next pull resumes from them"
        )

    def _attempt(self, url: str, partial: Path) -> None:
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout,
                          allow_redirects=True) as response:
            if response.status_code == 416 and have:
                # Nothing past what we hold: the partial is stale or the file changed. Restart.
                partial.unlink()
                raise requests.ConnectionError("range not satisfiable; restarting from byte 0")
            response.raise_for_status()
            resumed = have > 0 and response.status_code == 206
            if not resumed:
                have = 0  # The server ignored the Range header and sends the whole file.
            length = response.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            with open(partial, "ab" if resumed else "wb") as stream, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, leave=False,
                desc=url.rsplit("/", 1)[-1][:40], disable=_disable(self.progressbar),
            ) as progress:
                for block in response.iter_content(_CHUNK_BYTES):
                    stream.write(block)
                    progress.update(len(block))
            size = partial.stat().st_size
            if total is not None and size != total:
                raise requests.ConnectionError(f"connection cut at {size} of {total} bytes")


def _disable(progressbar: bool | None) -> bool | None:
    # tqdm: disable=None hides the bar when stderr is not a terminal (logs, CI).
    return None if progressbar is None else not progressbar


def crc32_file(path: Path) -> str:
    """CRC32 of a file's bytes as 8 lower-case hex digits (FaceFusion's `.hash` format)."""
    value = 0
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            value = zlib.crc32(block, value)
    return f"{value & 0xFFFFFFFF:08x}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
