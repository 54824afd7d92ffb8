"""Many shots in one Ray job: `+video=[a.mov,b.mov]`, or `+shots=FILE` (CSV or YAML).

A shot list has one row per shot: `video` (required), `sources` (images, `;`-separated in CSV,
a list in YAML; default: the job's `+source`), `output` (default: the job's default output for
that video), and `overrides` (Hydra-style `key=value` settings for that shot only, space-
separated in CSV, a list or mapping in YAML). Example CSV::

    video,sources,output,overrides
    /shots/sc01.mov,/faces/a.png,/renders/sc01.mov,
    /shots/sc02.mov,/faces/a.png;/faces/a2.png,,swapper.mask_blur=0.2 chunk.frames=24

All shots render in one Ray job with the pools shared (shots with equal render settings share
the render actors, their chunks interleaved), each with its own work folder and manifest (a
rerun resumes only what is unfinished), run.json and lock. A shot that fails (a broken input,
a chunk that fails every retry) fails alone: the others still render. The job prints one
summary table, writes it as `shots.json` in the run folder, and exits non-zero when any shot
failed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from fusionray.actors.pools import StageClasses
from fusionray.config import to_render_config
from fusionray.errors import ConfigError, FusionrayError, PublishError, RenderError
from fusionray.jobs.exit_codes import EXIT_OK, EXIT_RENDER_FAILED
from fusionray.jobs.lock import OutputLock
from fusionray.jobs.pipeline import (
    Shot,
    finish_shot,
    keep_work_on_failure,
    open_work,
    prepare_shot,
    run_shots,
)
from fusionray.report.summary import RunSummary, write_json_atomic

log = logging.getLogger("fusionray")

SHOT_COLUMNS = ("video", "sources", "output", "overrides")


@dataclass(frozen=True)
class ShotSpec:
    """One row of a shot list."""

    video: str
    sources: tuple[str, ...] = ()
    """Source images; empty = the job's `+source`."""
    output: str | None = None
    overrides: tuple[str, ...] = ()
    """`key=value` settings for this shot only."""


def _overrides(value: Any, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, dict):
        return tuple(f"{key}={json.dumps(item) if isinstance(item, (list, dict)) else item}"
                     for key, item in value.items())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(f"Invalid overrides {value!r} in {where}: must be 'key=value ...', a "
                      "list of 'key=value' or a mapping")


def _sources(value: Any, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part for part in (p.strip() for p in value.split(";")) if part)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(f"Invalid sources {value!r} in {where}: must be paths separated by ';' "
                      "or a list of paths")


def load_shot_list(path: Path) -> list[ShotSpec]:
    """Read a shot list (`.csv`, `.yaml` or `.yml`; see the module docstring).

    Raises:
        ConfigError: the file is missing, of another kind, empty, or a row is malformed.
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".yaml", ".yml"):
        raise ConfigError(f"Unknown shot list format {suffix!r} of '{path}'. Choose one of: "
                          ".csv, .yaml, .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"Cannot read the shot list '{path}': "
                          f"{error.strerror or error}") from None
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        unknown = sorted(set(reader.fieldnames or ()) - set(SHOT_COLUMNS))
        if unknown:
            raise ConfigError(f"Unknown shot list column {unknown[0]!r} in '{path}'. Choose "
                              f"one of: {', '.join(SHOT_COLUMNS)}")
        rows: Any = list(reader)
    else:
        data = yaml.safe_load(text)
        rows = data.get("shots") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise ConfigError(f"Shot list '{path}' must be a list of shots (or `shots:` with "
                              "one)")
    specs = []
    for number, row in enumerate(rows, start=1):
        where = f"shot {number} of '{path}'"
        if isinstance(row, str):
            row = {"video": row}
        if not isinstance(row, dict) or not row.get("video"):
            raise ConfigError(f"Invalid {where}: every shot needs a video")
        unknown = sorted(set(row) - set(SHOT_COLUMNS))
        if unknown:
            raise ConfigError(f"Unknown key {unknown[0]!r} in {where}. Choose one of: "
                              f"{', '.join(SHOT_COLUMNS)}")
        specs.append(ShotSpec(video=str(row["video"]), sources=_sources(row.get("sources"),
                              where), output=row.get("output") or None,
                              overrides=_overrides(row.get("overrides"), where)))
    if not specs:
        raise ConfigError(f"Shot list '{path}' holds no shot")
    return specs


def shot_specs(cfg: DictConfig) -> list[ShotSpec] | None:
    """The shots a composed config asks for: `+shots=FILE` or a list `+video`; None for a
    plain one-video job."""
    shots = cfg.get("shots")
    video = cfg.get("video")
    if shots is not None:
        if video is not None:
            raise ConfigError("Give either +video or +shots, not both")
        return load_shot_list(Path(str(shots)).expanduser())
    if isinstance(video, ListConfig):
        if cfg.get("output"):
            raise ConfigError("output= names one file; with a list of videos each shot gets "
                              "its default output (use a shot list to name them)")
        return [ShotSpec(video=str(item)) for item in video]
    return None


def shot_config(cfg: DictConfig, spec: ShotSpec) -> DictConfig:
    """The job's composed config with the shot's video, sources, output and overrides."""
    shot = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(shot, dict)
    shot.pop("shots", None)
    shot.pop("hydra", None)
    shot["video"] = spec.video
    if spec.sources:
        shot["source"] = list(spec.sources)
    if spec.output:
        shot["output"] = spec.output
    merged: Any = OmegaConf.create(shot)
    if spec.overrides:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(spec.overrides)))
    assert isinstance(merged, DictConfig)
    return merged


@dataclass
class ShotRow:
    """One line of the summary table."""

    shot: int
    video: str
    status: str
    """ok, failed, or published_failed (rendered, kept locally, upload failed)."""
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    output: str = ""
    error: str = ""


@dataclass
class ShotsReport:
    """What a shot-list job did."""

    rows: list[ShotRow] = field(default_factory=list)
    summaries: list[RunSummary] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        codes = [row.status for row in self.rows]
        return EXIT_OK if all(code == "ok" for code in codes) else EXIT_RENDER_FAILED

    def table(self) -> str:
        """A fixed-width table, one line per shot."""
        header = ("shot", "status", "frames", "faces", "seconds", "output / error")
        lines = [header] + [(str(r.shot), r.status, str(r.frames), str(r.faces),
                             f"{r.seconds:.1f}", r.output or r.error) for r in self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                            strict=False))
                         + "  " + line[-1] for line in lines)


def render_shots(
    cfg: DictConfig, specs: Sequence[ShotSpec], *, run_dir: Path,
    quality: str | None = None, stage_classes: StageClasses | None = None,
) -> ShotsReport:
    """Render every shot of `specs` in one Ray job with shared pools (see the module
    docstring); a shot's failure never stops the others."""
    report = ShotsReport()
    started = time.perf_counter()
    prepared: list[tuple[int, Shot, str]] = []
    with contextlib.ExitStack() as locks:
        for number, spec in enumerate(specs, start=1):
            row = ShotRow(shot=number, video=spec.video, status="failed")
            report.rows.append(row)
            try:
                composed = shot_config(cfg, spec)
                shot = prepare_shot(to_render_config(composed), run_dir)
                lock = locks.enter_context(OutputLock.for_config(shot.paths.video,
                                                                 shot.config.storage))
                shot.lock = lock
                shot.notes += lock.notes
                open_work(shot)
            except FusionrayError as error:
                row.error = str(error)
                log.warning("shot %d (%s) cannot render: %s", number, spec.video, error)
                continue
            prepared.append((number, shot, OmegaConf.to_yaml(composed)))
        outputs = [str(shot.paths.video) for _, shot, _ in prepared]
        if len(set(outputs)) < len(outputs):
            raise ConfigError(f"Two shots write the same output: {sorted(outputs)}; give "
                              "each shot its own output")
        if prepared:
            try:
                run = run_shots([shot for _, shot, _ in prepared],
                                stage_classes or StageClasses(), isolate_failures=True)
            except (KeyboardInterrupt, RenderError) as error:
                for _, shot, _ in prepared:
                    keep_work_on_failure(shot, error)
                raise
            for number, shot, config_yaml in prepared:
                row = report.rows[number - 1]
                assert shot.job is not None
                try:
                    if shot.job.failed is not None:
                        raise shot.job.failed
                    summary = finish_shot(shot, run, config_yaml=config_yaml, quality=quality)
                except PublishError as error:
                    row.status, row.error = "publish_failed", str(error)
                except FusionrayError as error:
                    row.error = str(keep_work_on_failure(shot, error))
                else:
                    report.summaries.append(summary)
                    row.status, row.output = "ok", summary.output
                    row.frames, row.faces = summary.frames, summary.faces_swapped
                    row.seconds = summary.wall_seconds
                if row.status != "ok":
                    row.frames = shot.job.totals.frames
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "shots.json", {
        "wall_seconds": round(time.perf_counter() - started, 3),
        "shots": [asdict(row) for row in report.rows]})
    return report
