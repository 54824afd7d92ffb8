"""What a render reads and where it writes: input paths, the output path and its sidecars, and
the checks that run before Ray starts (so a bad command costs seconds and leaves nothing)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from fusionray.config import RenderConfig
from fusionray.errors import OutputError
from fusionray.media.assemble import OUTPUT_FORMATS
from fusionray.media.demo import demo_source_image_path, ensure_demo_clip
from fusionray.media.storage import check_destination, is_remote, localise


@dataclass(frozen=True)
class OutputPaths:
    """Where a render writes: the video and its sidecars, all in one folder."""

    video: Path
    run_json: Path
    preview: Path
    config: Path
    faces: Path
    """Per-frame detections and selection (`fusionray.faces.tracks`)."""
    work: Path
    """Segments and manifest while the job runs (removed on success unless keep_work)."""

    @classmethod
    def for_video(cls, video: Path) -> OutputPaths:
        stem = video.stem
        return cls(
            video=video,
            run_json=video.with_name(f"{stem}.run.json"),
            preview=video.with_name(f"{stem}.preview.png"),
            config=video.with_name(f"{stem}.config.yaml"),
            faces=video.with_name(f"{stem}.faces.parquet"),
            work=video.with_name(f".{video.name}.fusionray-work"),
        )


def resolve_inputs(config: RenderConfig) -> tuple[Path, list[Path]]:
    """Local paths of the input video and source images (URIs are downloaded to this node's
    cache); `demo` maps to the built-in demo."""
    sources = [localise(s) for s in config.source_paths]
    if config.video == "demo":
        return ensure_demo_clip(), sources or [demo_source_image_path()]
    return localise(config.video), sources


def default_output(video: Path, run_dir: Path) -> Path:
    """`<run dir>/<video name>.swapped<ext>`: the input's container where fusionray writes it
    (an .mkv keeps its subtitle streams), else .mp4."""
    extension = video.suffix.lower() if video.suffix.lower() in OUTPUT_FORMATS else ".mp4"
    return run_dir / f"{video.stem}.swapped{extension}"


def resolve_output(config: RenderConfig, video: Path, run_dir: Path) -> tuple[Path, str | None]:
    """The local output path, and the remote destination it is published to (None: local).

    Raises:
        OutputError: the remote destination cannot be written (checked before rendering).
    """
    destination = config.output if config.output and is_remote(config.output) else None
    if destination:
        check_destination(destination)
        return run_dir / PurePosixPath(urlsplit(destination).path).name, destination
    if config.output:
        return localise(config.output), None
    return default_output(video, run_dir), None


def check_output(paths: OutputPaths, video: Path) -> None:
    """Fail early if the output cannot be written.

    Raises:
        OutputError: the output is the input, its folder cannot be created, or is not writable.
    """
    target = paths.video
    if target.suffix.lower() not in OUTPUT_FORMATS:
        raise OutputError(
            f"Unsupported output extension {target.suffix!r} for '{target}'. "
            f"Choose one of: {', '.join(OUTPUT_FORMATS)}"
        )
    if target.exists() and video.exists() and target.resolve() == video.resolve():
        raise OutputError(f"Output path is the input video: '{target}'")
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".fusionray-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputError(f"Output folder is not writable: '{folder}' ({reason})") from None
