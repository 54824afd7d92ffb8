"""run.json: what a render did, how long each stage took, and with which providers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fusionray.media.storage import write_atomic


@dataclass(frozen=True)
class RunSummary:
    """The record written beside every output as `<output stem>.run.json`."""

    fusionray_version: str
    config_hash: str
    """sha256 of the pixel-affecting settings and inputs (see `config_hash`)."""
    input: str
    sources: list[str]
    output: str
    frames: int
    chunks: int
    faces_swapped: int
    frames_with_faces: int
    wall_seconds: float
    frames_per_second: float
    stage_seconds: dict[str, float]
    """Driver stages are wall seconds; actor stages are summed over chunks (actor seconds)."""
    providers: list[str]
    """`engine:provider` of every model session used, e.g. `blazeface:CPUExecutionProvider`."""
    actors: dict[str, int]
    """Actors started per pool; all 0 when no Ray was needed (`fusionray.jobs.inline`)."""
    nodes: int
    """Distinct Ray nodes that ran actors."""
    ray_address: str
    """The GCS address of the Ray the job used; "" when it started none."""
    quality: str | None = None
    notes: list[str] = field(default_factory=list)
    chunks_reused: int = 0
    """Chunks taken from the work folder of an earlier, interrupted run of the same job."""
    chunks_rendered: int = 0
    """Chunks rendered by this run (including passthrough ones)."""
    chunk_failures: list[str] = field(default_factory=list)
    """Every failed chunk attempt (retried, or given up on), with its frame range and reason."""
    passthrough_chunks: list[dict[str, int]] = field(default_factory=list)
    """Chunks written unswapped after every retry failed (on_chunk_error=passthrough):
    {"chunk", "start", "stop"} with frames [start, stop)."""
    ray_session: str | None = None
    """Ray session name: equal across the jobs of a sweep that shared one Ray."""
    frames_decoded: int = 0
    """Frames decoded by this run's actors, every pass and stage together."""
    frames_written: int = 0
    """Frames in the output (rendered by this run, reused or written unswapped)."""
    actor_threads: dict[str, int] = field(default_factory=dict)
    """Inference/decode/encode threads per actor, by pool."""
    pool_events: list[str] = field(default_factory=list)
    """Actors started (and on which node), restarted, or gone for good, in order; the driver's
    workers replaced after a hung chunk (`fusionray.jobs.inline`)."""
    chunks_by_actor: dict[str, int] = field(default_factory=dict)
    """Chunks each actor finished (e.g. {"render-0": 3, "render-2": 1}); "driver": those the
    driver's own workers finished (no Ray, or beside Ray's start)."""
    chunk_timeouts: list[dict[str, Any]] = field(default_factory=list)
    """Chunks cancelled as hung: chunk, attempt, seconds, limit_seconds, actor."""
    identity: dict[str, float | int] | None = None
    """With a recognizer: cosine similarity of the swapped faces to the source identity
    (`source_mean`, `source_p05`) and to the original target faces (`target_mean`,
    `target_p95`) over `faces` scored faces (`fusionray.faces.identity`); else None. Covers
    the chunks this run rendered (a resumed job's reused chunks are not scored again)."""
    concealed_frames: list[int] = field(default_factory=list)
    """Frames that could not be decoded (or predict from one that could not) and were written
    as a copy of the last good frame (`media.strict_decode=false`), ascending; frames of
    chunks reused from an interrupted run are not known here."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to `path` whole or not at all (`write_atomic`)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomic(path, lambda partial: partial.write_text(text))


def write_summary(path: Path, summary: RunSummary) -> None:
    write_json_atomic(path, asdict(summary))
