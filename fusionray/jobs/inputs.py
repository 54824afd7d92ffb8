"""What a render reads and where it writes: input paths, the output path and its sidecars, and
the checks that run before Ray starts (so a bad command costs seconds and leaves nothing)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from fusionray.config import RenderConfig
from fusionray.errors import OutputError
from fusionray.media.assemble import OUTPUT_FORMATS, check_output_codec, output_extension
from fusionray.media.demo import demo_source_image_path, ensure_demo_clip
from fusionray.media.sequence import output_sequence
from fusionray.media.storage import InputCachePolicy, check_destination, is_remote, localise
from fusionray.types import ImageSequence, VideoInfo


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
    sequence: bool = False
    """`video` is the folder of an image-sequence output (`for_sequence`)."""
    frames: Path | None = None
    """A sequence's per-frame record (sizes and sha256, for a per-frame resume)."""

    @classmethod
    def for_sequence(cls, folder: Path) -> OutputPaths:
        """An image-sequence output: `video` is its folder, the sidecars sit beside it, named
        after it (`shot.swapped/` -> `shot.swapped.run.json`)."""
        return cls._with_sidecars(folder, folder.name, sequence=True,
                                  frames=folder.with_name(f"{folder.name}.frames.json"))

    @classmethod
    def for_video(cls, video: Path) -> OutputPaths:
        """A video output: the sidecars sit beside it, named after its stem (`shot.mp4` ->
        `shot.run.json`)."""
        return cls._with_sidecars(video, video.stem)

    @classmethod
    def _with_sidecars(cls, video: Path, stem: str, *, sequence: bool = False,
                       frames: Path | None = None) -> OutputPaths:
        """`video` with `<stem>.run.json`, `.preview.png`, `.config.yaml` and `.faces.parquet`
        beside it, and its hidden work folder."""
        return cls(
            video=video,
            run_json=video.with_name(f"{stem}.run.json"),
            preview=video.with_name(f"{stem}.preview.png"),
            config=video.with_name(f"{stem}.config.yaml"),
            faces=video.with_name(f"{stem}.faces.parquet"),
            work=video.with_name(f".{video.name}.fusionray-work"),
            sequence=sequence,
            frames=frames,
        )


def resolve_inputs(config: RenderConfig) -> tuple[Path, list[Path]]:
    """Local paths of the input video and source images (URIs are downloaded to this node's
    cache, trimmed to `storage.input_cache_*`); `demo` maps to the built-in demo."""
    policy = InputCachePolicy.from_config(config.storage)
    sources = [localise(s, policy=policy) for s in config.source_paths]
    if config.video == "demo":
        return ensure_demo_clip(), sources or [demo_source_image_path()]
    return localise(config.video, policy=policy), sources


def default_sequence_output(sequence: ImageSequence, run_dir: Path) -> Path:
    """`<run dir>/<sequence folder name>.swapped/`: the input's file names, in a folder."""
    return run_dir / f"{Path(sequence.folder).name}.swapped"


def resolve_sequence_output(config: RenderConfig, info: VideoInfo,
                            run_dir: Path) -> tuple[OutputPaths, ImageSequence]:
    """Where an image-sequence input's output sequence goes: `output=` as a folder or a printf
    pattern, else `default_sequence_output`.

    Raises:
        OutputError: a remote or video-file output (not supported for sequences yet), or a
            pattern of another file type, or the output is the input folder.
    """
    assert info.sequence is not None
    location = config.output
    if location and is_remote(location):
        raise OutputError(f"output={location!r}: an image sequence is written to a local (or "
                          "mounted) folder; remote destinations take video files only")
    if location and Path(location).suffix.lower() in OUTPUT_FORMATS:
        raise OutputError(f"output={location!r} is a video file, but the input is an image "
                          f"sequence ({info.sequence.location!r}); name a folder or a pattern "
                          f"such as 'out/{info.sequence.pattern}'")
    target = output_sequence(info, localise(location) if location
                             else default_sequence_output(info.sequence, run_dir))
    if Path(target.folder).resolve() == Path(info.sequence.folder).resolve() and \
            target.pattern == info.sequence.pattern:
        raise OutputError(f"The output sequence is the input: '{target.location}'")
    return OutputPaths.for_sequence(Path(target.folder)), target


def default_output(video: Path, run_dir: Path, codec: str = "") -> Path:
    """`<run dir>/<video name>.swapped<ext>`: the input's container where fusionray writes it
    (an .mkv keeps its subtitle streams), else .mp4 (.mov for ProRes/DNxHR output)."""
    return run_dir / f"{video.stem}.swapped{output_extension(video.suffix, codec)}"


def resolve_output(
    config: RenderConfig, video: Path, run_dir: Path, *, codec: str = "",
) -> tuple[Path, str | None]:
    """The local output path, and the remote destination it is published to (None: local).

    Args:
        codec: the segment encoder's codec (`settings_for_video(...).codec`): it picks the
            default container and is checked against the one asked for.

    Raises:
        OutputError: the remote destination cannot be written (checked before rendering), or
            the output container cannot hold `codec` (e.g. ProRes in .mp4).
    """
    destination = config.output if config.output and is_remote(config.output) else None
    if destination:
        check_destination(destination)
        local = run_dir / PurePosixPath(urlsplit(destination).path).name
    elif config.output:
        local = localise(config.output)
    else:
        local = default_output(video, run_dir, codec)
    check_output_codec(local, codec)
    return local, destination


def check_output(paths: OutputPaths, video: Path) -> None:
    """Fail early if the output cannot be written.

    Raises:
        OutputError: the output is the input, its folder cannot be created, or is not writable.
    """
    target = paths.video
    if paths.sequence:
        folder = target
    elif target.suffix.lower() not in OUTPUT_FORMATS:
        raise OutputError(
            f"Unsupported output extension {target.suffix!r} for '{target}'. "
            f"Choose one of: {', '.join(OUTPUT_FORMATS)}"
        )
    elif target.exists() and video.exists() and target.resolve() == video.resolve():
        raise OutputError(f"Output path is the input video: '{target}'")
    if not paths.sequence:
        folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".fusionray-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputError(f"Output folder is not writable: '{folder}' ({reason})") from None
