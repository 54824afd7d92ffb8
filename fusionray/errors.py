"""One exception tree for fusionray.

Every error is also the closest builtin, so callers that do not know fusionray can still catch
it (`except OSError`). Messages name the bad value and, where there is a fixed set, the allowed
ones. Only `fusionray.jobs` turns these into exit codes.
"""

from __future__ import annotations


class FusionrayError(Exception):
    """Base class of every error fusionray raises on purpose."""


class ConfigError(FusionrayError, ValueError):
    """A configuration value is unknown, out of range or inconsistent."""


class MediaError(FusionrayError, OSError):
    """A video or image cannot be read, decoded, encoded or written."""


class FaceNotFoundError(FusionrayError, ValueError):
    """A source image holds no detectable face."""


class ModelError(FusionrayError, RuntimeError):
    """A model cannot be fetched, verified, loaded, or does not match its contract."""


class OutputError(FusionrayError, OSError):
    """The output path cannot be written, or publishing the result failed."""


class ClusterError(FusionrayError, ConnectionError):
    """The configured Ray cluster cannot be reached or joined."""


class RenderError(FusionrayError, RuntimeError):
    """A render failed after it started (a chunk failed every retry, the cluster went away)."""


class RenderInterrupted(RenderError):
    """The job was interrupted (SIGINT, SIGTERM); finished chunks are kept for a rerun."""


def first_line(error: BaseException) -> str:
    """The exception's own first line, or its type's name where it has no message (for a
    one-line error that wraps another)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def choices_message(kind: str, value: object, allowed: list[str] | tuple[str, ...]) -> str:
    """Format the standard 'unknown value' sentence.

    >>> choices_message("detector", "scrd", ["scrfd", "blazeface"])
    "Unknown detector 'scrd'. Choose one of: scrfd, blazeface"
    """
    return f"Unknown {kind} {value!r}. Choose one of: {', '.join(allowed)}"


class PublishError(OutputError):
    """The render is complete and verified on local disk, but uploading it (or a sidecar) to
    the remote destination failed; the local file is kept and named in the message."""
