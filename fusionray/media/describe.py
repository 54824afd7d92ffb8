"""What the pipeline will see in a video, as data and as text (`fusionray probe FILE`)."""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import av

from fusionray.config import ChunkConfig
from fusionray.media.plan import chunk_frames_for, decoded_frames, plan_video_chunks
from fusionray.media.probe import probe_video
from fusionray.report.provenance import parse_provenance


@dataclass(frozen=True)
class StreamLine:
    """One stream of the container."""

    index: int
    kind: str
    """video, audio, subtitle, data or attachment."""
    codec_name: str
    detail: str
    """Size and pixel format for video, sample rate and layout for audio."""


@dataclass(frozen=True)
class VideoDescription:
    """The facts `fusionray probe` prints."""

    path: str
    format_name: str
    streams: list[StreamLine]
    frames: int
    """Exact frame count from demuxed packets."""
    fps: float
    duration_seconds: float
    width: int
    height: int
    rotation: int
    """Display rotation in degrees counter-clockwise; frames are swapped upright."""
    keyframes: int
    keyframe_spacing: dict[str, float]
    """Frames between consecutive keyframes: min, mean, max (empty with one keyframe)."""
    chunk_frames: int
    """Owned frames per chunk the plan aimed at (the auto length where 0 was asked)."""
    overlap: int
    chunks: int
    """Chunks a render with `chunk_frames` and `overlap` plans."""
    decoded_per_frame: float
    """Frames decoded per frame rendered (one decode per chunk): 1 at best, more with overlap
    and sparse keyframes (a chunk decodes from the keyframe at or before its read range)."""
    provenance: str | None
    """The fusionray provenance tag, when this video is itself a fusionray output."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_video(
    path: str | os.PathLike[str], *, chunk_frames: int = 0, overlap: int = 4
) -> VideoDescription:
    """Probe `path` and work out what a render with this chunking would do.

    Raises:
        MediaError: the file is missing or not a readable video.
    """
    info = probe_video(path)
    with av.open(os.fspath(path)) as container:
        streams = [_stream_line(stream) for stream in container.streams]
        tags = dict(container.metadata)
    settings = ChunkConfig(frames=chunk_frames, overlap=overlap)
    chunks = plan_video_chunks(info, settings)
    decoded = decoded_frames(chunks, info.keyframe_indices)  # one decode per chunk
    spacing = [b - a for a, b in pairwise(info.keyframe_indices)]
    found = parse_provenance(tags)
    return VideoDescription(
        path=os.fspath(path),
        format_name=info.format_name,
        streams=streams,
        frames=info.frame_count,
        fps=round(float(info.average_rate), 3),
        duration_seconds=round(info.duration_seconds, 3),
        width=info.width,
        height=info.height,
        rotation=info.rotation,
        keyframes=len(info.keyframe_indices),
        keyframe_spacing=_spacing_stats(spacing),
        chunk_frames=chunk_frames_for(info, settings),
        overlap=overlap,
        chunks=len(chunks),
        decoded_per_frame=round(decoded / info.frame_count, 2),
        provenance=(f"altered by fusionray {found.version} (config {found.config_hash})"
                    if found else None),
    )


def _spacing_stats(spacing: list[int]) -> dict[str, float]:
    if not spacing:
        return {}
    return {"min": min(spacing), "mean": round(statistics.fmean(spacing), 1), "max": max(spacing)}


def _stream_line(stream: av.stream.Stream) -> StreamLine:
    context: Any = stream.codec_context
    name = context.name if context is not None else "unknown"
    if stream.type == "video":
        detail = f"{context.width}x{context.height} {context.pix_fmt or ''}".strip()
    elif stream.type == "audio":
        layout = getattr(getattr(context, "layout", None), "name", "")
        detail = f"{context.sample_rate} Hz {layout}".strip()
    else:
        detail = ""
    return StreamLine(index=stream.index, kind=stream.type, codec_name=name, detail=detail)


def format_description(description: VideoDescription) -> str:
    """Human-readable lines, one fact per line."""
    d = description
    lines = [f"{d.path}: {d.format_name}"]
    for stream in d.streams:
        lines.append(f"  stream {stream.index}: {stream.kind} {stream.codec_name} {stream.detail}"
                     .rstrip())
    lines += [
        f"  frames: {d.frames} (exact, from packets)",
        f"  fps: {d.fps:g}   duration: {d.duration_seconds:.3f} s",
        f"  size: {d.width}x{d.height}   rotation: {d.rotation} degrees",
    ]
    if d.keyframe_spacing:
        s = d.keyframe_spacing
        lines.append(f"  keyframes: {d.keyframes}, every {s['min']:g}/{s['mean']:g}/{s['max']:g} "
                     "frames (min/mean/max)")
    else:
        lines.append(f"  keyframes: {d.keyframes} (only the first frame: every chunk decodes "
                     "from the start)")
    lines.append(f"  chunks: {d.chunks} of {d.chunk_frames} frames, overlap {d.overlap} "
                 f"({d.decoded_per_frame:g} frames decoded per frame rendered, 2 at best)")
    if d.provenance:
        lines.append(f"  provenance: {d.provenance}")
    return "\n".join(lines)
