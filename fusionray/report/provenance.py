"""Provenance: every output container says that fusionray altered it.

On by default (`provenance: true` in `conf/config.yaml`); `provenance=false` turns it off, for
example when a downstream tool rejects unknown tags. The tag is the container's `comment`, the
one free-text key that MP4/MOV (`©cmt`) and Matroska (`COMMENT`) both keep and that players and
`ffprobe` show:

    comment=altered by fusionray 0.1.0 (config 3f2a9c1d0b7e)

The config hash is the first 12 hex digits of `fusionray.config.config_hash`: the settings that
change pixels, so two outputs with the same tag were rendered the same way. Matroska keeps any
key, so it also gets the exact fields as separate tags (`FUSIONRAY_VERSION`,
`FUSIONRAY_CONFIG_HASH`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import av

PROVENANCE_KEY = "comment"
_PATTERN = re.compile(r"altered by fusionray (?P<version>\S+) \(config (?P<config>[0-9a-f]+)\)")


@dataclass(frozen=True)
class Provenance:
    """What an output's tags say about how it was made."""

    version: str
    """fusionray version that rendered it."""
    config_hash: str
    """Leading hex digits of the pixel-affecting config hash."""


def provenance_metadata(version: str, config_hash: str) -> dict[str, str]:
    """Container tags that mark a video as altered by fusionray `version` with `config_hash`."""
    short = config_hash[:12]
    return {
        PROVENANCE_KEY: f"altered by fusionray {version} (config {short})",
        # MP4 drops non-standard keys; Matroska keeps these as separate tags.
        "fusionray_version": version,
        "fusionray_config_hash": config_hash,
    }


def parse_provenance(tags: dict[str, str]) -> Provenance | None:
    """The provenance in a container's tags (any key case), or None when there is none."""
    lowered = {key.lower(): value for key, value in tags.items()}
    match = _PATTERN.search(lowered.get(PROVENANCE_KEY, ""))
    if match is None:
        return None
    return Provenance(version=match["version"], config_hash=match["config"])


def read_provenance(path: str | os.PathLike[str]) -> Provenance | None:
    """Open `path` with PyAV and return its fusionray provenance, or None."""
    with av.open(os.fspath(path)) as container:
        return parse_provenance(dict(container.metadata))
