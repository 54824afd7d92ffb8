"""What a render leaves beside its output: the assembled video itself, the before/after
preview, the face-tracks export, and the upload of all of them to a remote destination."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pyarrow as pa
import pyarrow.parquet as pq

from fusionray import __version__
from fusionray.actors.stages import to_display
from fusionray.config import RenderConfig
from fusionray.errors import MediaError, OutputError, PublishError, RenderError
from fusionray.faces.tracks import assign_track_ids, concat_face_tracks
from fusionray.jobs.inputs import OutputPaths
from fusionray.jobs.manifest import Manifest, chunk_faces_path, write_parquet_atomic
from fusionray.media.assemble import assemble_video
from fusionray.media.decode import decode_frames
from fusionray.media.probe import probe_video
from fusionray.media.sequence import (
    check_complete,
    place_frames,
    probe_sequence,
    write_frame_records,
)
from fusionray.media.storage import publish, publish_all, sibling, write_atomic
from fusionray.report.preview import build_preview, preview_indices
from fusionray.report.provenance import provenance_metadata
from fusionray.types import Chunk, ImageSequence, VideoInfo

log = logging.getLogger("fusionray")


def assemble_output(
    info: VideoInfo, segments: list[Path], paths: OutputPaths, digest: str | None
) -> list[str]:
    """Publish the output; a failure here (disk full, folder gone) is a render failure.

    `digest` None leaves out the provenance tags (`provenance=false`).

    Returns:
        Notes for run.json (subtitle streams the output container cannot hold).
    """
    metadata = provenance_metadata(__version__, digest) if digest else {}
    try:
        report = assemble_video(info, segments, paths.video, metadata=metadata)
    except (MediaError, OutputError) as error:
        raise RenderError(f"Writing the output '{paths.video}' failed: {error}") from error
    if not report.subtitle_streams_dropped:
        return []
    return [f"{len(report.subtitle_streams_dropped)} subtitle stream(s) "
            f"({', '.join(report.subtitle_streams_dropped)}) cannot be stored in "
            f"{paths.video.suffix} and were not copied; an .mkv output keeps them"]


def assemble_sequence(segments: list[Path], target: ImageSequence, *, record: Path,
                      job_key: str) -> list[str]:
    """Place every chunk's frames into the output sequence, each file atomically (a frame
    already holding the same bytes is kept), check that every frame is there, and record
    their digests in `record` for a per-frame resume under `job_key`.

    Returns:
        A note on frames kept from an earlier run, for run.json.

    Raises:
        RenderError: a frame cannot be written, or one is missing afterwards.
    """
    try:
        written, kept = place_frames(segments, target)
        check_complete(target)
        write_frame_records(record, target, job_key=job_key)
    except (MediaError, OutputError, OSError) as error:
        raise RenderError(f"Writing the output sequence '{target.location}' failed: "
                          f"{error}") from error
    log.info("Output sequence %s: %d frame(s) written, %d already in place", target.location,
             written, kept)
    return [f"{kept} output frame(s) already held these bytes and were kept"] if kept else []


def export_faces(
    config: RenderConfig, info: VideoInfo, manifest: Manifest, chunks: list[Chunk], target: Path
) -> None:
    """Join the chunks' face-track tables into one, with track ids over the whole video."""
    tables = [pq.read_table(p) for p in (chunk_faces_path(manifest, c) for c in chunks)
              if p.exists()]
    tracks = assign_track_ids(concat_face_tracks(tables, info),
                              iou_threshold=config.temporal.iou_threshold,
                              max_gap=config.temporal.max_gap,
                              max_shift=config.temporal.max_shift)
    write_parquet_atomic(target, tracks)


def write_preview(config: RenderConfig, info: VideoInfo, output: Path, target: Path,
                  output_frames: ImageSequence | None = None) -> None:
    """Decode a few frames of input and output (`output_frames` for a sequence) and save the
    before/after strip."""
    indices = preview_indices(info.frame_count, config.preview_frames)
    if not indices:
        return
    output_info = (probe_sequence(output_frames, info.average_rate)
                   if output_frames is not None else probe_video(output))
    before, after = [], []
    for index in indices:
        before += [to_display(f, info.rotation) for _, f in decode_frames(info, index, index + 1)]
        after += [to_display(f, output_info.rotation)
                  for _, f in decode_frames(output_info, index, index + 1)]
    strip = build_preview(indices, before, after)
    def write_png(partial: Path) -> None:
        if not cv2.imwrite(str(partial), strip):
            raise OutputError(f"Could not write preview image: '{target}'")

    write_atomic(target, write_png)


def write_sidecars(
    config: RenderConfig, info: VideoInfo, manifest: Manifest, chunks: list[Chunk],
    paths: OutputPaths, config_yaml: str, stages: dict[str, float],
    output_frames: ImageSequence | None = None,
) -> list[str]:
    """Write the resolved config, the face tracks and the preview beside a complete output.

    Each is best effort: the video is already complete and verified, so a sidecar that cannot
    be written becomes a note for run.json (and a warning), never a failed job.

    Returns:
        Notes naming each sidecar that was not written, and why.
    """
    def config_file() -> None:
        write_atomic(paths.config, lambda partial: partial.write_text(config_yaml))

    writers: list[tuple[str, Path, Callable[[], None]]] = [("config", paths.config, config_file)]
    if config.export_faces:
        writers.append(("face tracks", paths.faces,
                        lambda: export_faces(config, info, manifest, chunks, paths.faces)))
    if config.preview_frames:
        writers.append(("preview", paths.preview,
                        lambda: write_preview(config, info, paths.video, paths.preview,
                                             output_frames)))
    notes = []
    for what, target, write in writers:
        clock = time.perf_counter()
        try:
            write()
        except (OSError, ValueError, RuntimeError, pa.ArrowException) as error:
            notes.append(f"the {what} sidecar '{target}' was not written: {error}")
            log.warning("%s", notes[-1])
        if what == "preview":
            stages["preview"] = time.perf_counter() - clock
    return notes


def publish_outputs(paths: OutputPaths, destination: str) -> None:
    """Upload the video and its sidecars beside `destination`, the video last."""
    sidecars = [paths.run_json, paths.preview, paths.config, paths.faces]
    try:
        publish_all([(p, sibling(destination, p.name)) for p in sidecars if p.exists()])
        publish(paths.video, destination)
    except OutputError as error:
        raise PublishError(
            f"The render is complete and kept at '{paths.video}', but publishing it to "
            f"{destination!r} failed: {error}; upload that file (and its sidecars) yourself, "
            "or rerun to try again") from None
