"""Chunk scheduling: keep at most `max_chunks_in_flight` chunks on the pools, record each
finished segment as it lands, retry failed chunks, and write a chunk that failed every retry
unswapped where `on_chunk_error=passthrough` asks for it."""

from __future__ import annotations

import logging
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
from tqdm import tqdm

from fusionray.actors.pools import ActorPool
from fusionray.actors.stages import ChunkResult, passthrough_segment
from fusionray.config import RenderConfig
from fusionray.errors import MediaError, RenderError
from fusionray.jobs.manifest import FinishedChunk, Manifest, chunk_faces_path, write_parquet_atomic
from fusionray.jobs.ray_session import failure_reason
from fusionray.types import Chunk, VideoInfo

log = logging.getLogger("fusionray")


@dataclass
class ChunkTotals:
    """Sums over finished chunks, and what happened to them."""

    frames: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    providers: set[str] = field(default_factory=set)
    reused: int = 0
    rendered: int = 0
    failures: list[str] = field(default_factory=list)
    passthrough: list[dict[str, int]] = field(default_factory=list)

    def add(self, result: ChunkResult) -> None:
        self.frames += result.frames
        self.faces += result.faces_swapped
        self.frames_with_faces += result.frames_with_faces
        for stage, seconds in result.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.providers.update(result.providers)
        self.rendered += 1

    def add_reused(self, row: FinishedChunk) -> None:
        self.frames += row.stop - row.start
        self.faces += row.faces_swapped
        self.frames_with_faces += row.frames_with_faces
        self.reused += 1


def describe(chunk: Chunk) -> str:
    return f"chunk {chunk.index} (frames {chunk.start}-{chunk.stop - 1})"


def record_segment(
    manifest: Manifest, chunk: Chunk, segment: bytes, *, faces: pa.Table | None = None,
    **counts: Any,
) -> Path:
    """Write a finished segment (and its face tracks) into the work folder; disk trouble stops
    the job (RenderError)."""
    try:
        if faces is not None:
            # Before the segment is recorded, so a resumed job that reuses the segment also
            # finds its face tracks.
            write_parquet_atomic(chunk_faces_path(manifest, chunk), faces)
        return manifest.record(chunk, segment, **counts)
    except OSError as error:
        reason = error.strerror or str(error)
        if not manifest.work.is_dir():
            reason = "the work folder disappeared (was the output folder removed?)"
        raise RenderError(
            f"Cannot write the segment of {describe(chunk)} to '{manifest.work}': {reason}"
        ) from error


def give_up_on_chunk(
    config: RenderConfig, info: VideoInfo, chunk: Chunk, error: BaseException,
    manifest: Manifest, totals: ChunkTotals,
) -> None:
    """A chunk failed every retry: stop naming it, or (passthrough) write it unswapped."""
    reason = failure_reason(error)
    attempts = config.cluster.chunk_retries + 1
    message = f"{describe(chunk).capitalize()} failed after {attempts} attempts: {reason}"
    if config.on_chunk_error != "passthrough":
        raise RenderError(message) from error
    try:
        segment = passthrough_segment(config, info, chunk)
    except MediaError as media_error:
        raise RenderError(f"{message}; writing it unswapped failed too: {media_error}") from error
    record_segment(manifest, chunk, segment, faces_swapped=0, frames_with_faces=0,
                   passthrough=True)
    log.warning("%s; wrote its frames unswapped (on_chunk_error=passthrough)", message)
    totals.passthrough.append({"chunk": chunk.index, "start": chunk.start, "stop": chunk.stop})
    totals.frames += chunk.owned_frames
    totals.rendered += 1


def run_chunks(
    config: RenderConfig,
    info: VideoInfo,
    chunks: list[Chunk],
    detect_pool: ActorPool,
    swap_pool: ActorPool,
    manifest: Manifest,
    source: ray.ObjectRef,
) -> tuple[list[Path], ChunkTotals]:
    """Render every chunk the manifest does not already hold, with at most
    `max_chunks_in_flight` in progress; each finished segment is recorded as it lands.

    Completion order is free; the returned segment paths are in chunk order.
    """
    totals = ChunkTotals()
    pending: deque[tuple[Chunk, int]] = deque()
    for chunk in chunks:
        if chunk.index in manifest.rows:
            totals.add_reused(manifest.rows[chunk.index])
        else:
            pending.append((chunk, 0))
    in_flight: dict[ray.ObjectRef, tuple[Chunk, int, int, int]] = {}
    limit = config.cluster.max_chunks_in_flight
    with tqdm(total=info.frame_count, initial=totals.frames, unit="frame", desc="fusionray",
              disable=not config.progress, file=sys.stderr, dynamic_ncols=True,
              mininterval=0.5) as progress:
        while pending or in_flight:
            while pending and len(in_flight) < limit:
                chunk, attempt = pending.popleft()
                detect_index, swap_index = detect_pool.pick(), swap_pool.pick()
                detected = detect_pool.actors[detect_index].detect.remote(info, chunk)
                rendered = swap_pool.actors[swap_index].render.remote(info, chunk, detected,
                                                                     source)
                detect_pool.load[detect_index] += 1
                swap_pool.load[swap_index] += 1
                in_flight[rendered] = (chunk, attempt, detect_index, swap_index)
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                chunk, attempt, detect_index, swap_index = in_flight.pop(ref)
                detect_pool.load[detect_index] -= 1
                swap_pool.load[swap_index] -= 1
                try:
                    result: ChunkResult = ray.get(ref)
                except (ray.exceptions.RayError, MediaError) as error:
                    reason = failure_reason(error)
                    totals.failures.append(f"{describe(chunk)} attempt {attempt + 1}: {reason}")
                    if attempt < config.cluster.chunk_retries:
                        log.warning("%s failed, retrying: %s", describe(chunk), reason)
                        pending.appendleft((chunk, attempt + 1))
                        continue
                    give_up_on_chunk(config, info, chunk, error, manifest, totals)
                    progress.update(chunk.owned_frames)
                    continue
                record_segment(manifest, chunk, result.segment, faces=result.face_tracks,
                               faces_swapped=result.faces_swapped,
                               frames_with_faces=result.frames_with_faces)
                totals.add(result)
                progress.update(result.frames)
    return [manifest.segment_path(chunk) for chunk in chunks], totals
