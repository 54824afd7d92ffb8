"""The one mapping from how a job ended to the process exit code (and its one-line message).

| code | meaning |
| ---: | --- |
| 0 | rendered (and published) |
| 1 | the render failed after it started (a chunk failed every retry, the cluster went |
|   | away, writing the output failed) |
| 2 | bad input or config, found before anything was rendered |
| 3 | the render is complete on local disk, but uploading it to the destination failed |
|   | (the local file is kept and named) |
| 130 | interrupted (SIGINT, SIGTERM); finished chunks are kept for a rerun |
"""

from __future__ import annotations

from fusionray.errors import FusionrayError, PublishError, RenderError, RenderInterrupted

EXIT_OK = 0
EXIT_RENDER_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PUBLISH_FAILED = 3
EXIT_INTERRUPTED = 130


def exit_code_for(error: BaseException) -> int:
    """The exit code of a job that raised `error` (most specific class first)."""
    if isinstance(error, RenderInterrupted | KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, PublishError):
        return EXIT_PUBLISH_FAILED
    if isinstance(error, RenderError):
        return EXIT_RENDER_FAILED
    if isinstance(error, FusionrayError):
        return EXIT_BAD_INPUT
    return EXIT_RENDER_FAILED


def exit_message(error: BaseException) -> str:
    """The one line printed on stderr for `error`."""
    if isinstance(error, KeyboardInterrupt) and not isinstance(error, RenderInterrupted):
        return "fusionray: error: Interrupted before rendering started"
    return f"fusionray: error: {error}"
