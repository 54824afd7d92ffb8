"""Sweep summary: one table row per render of a Hydra multirun, and a labelled contact sheet.

After `python -m fusionray.jobs.render -m +video=demo quality=draft,standard,master
swapper.mask_blur=0.1,0.3`, the sweep folder holds one numbered folder per job (each with its
video, run.json, faces.parquet and `.hydra/overrides.yaml`) and, from `summarize_sweep`:

- `sweep_summary.parquet` and `sweep_summary.csv`: per job its settings (one column per
  override key), status (`ok` or `failed`, with the exit code and error of a failed job),
  frames/s, wall seconds, faces swapped, output size, the quality proxy and the identity
  score;
- `contact_sheet.png`: the same frames under every setting, cropped around the face, one row
  per job labelled with its settings and figures, the input on top.

Quality proxy: PSNR (dB) of the output against its own job's input *outside* the faces (every
detected face box of that frame, grown by `FACE_MARGIN` on each side), over evenly spaced
frames. It
measures what the codec and CRF did to the picture the swap must not touch; the face region
itself is meant to change. Identity score (cosine similarity of the swapped face's embedding
to the source's, `fusionray.faces.identity`) comes from the job's run.json `identity` block,
which the render writes whenever a recognizer is present (the inswapper engine):
`identity_score` is the mean, `identity_p05` the 5th percentile, `identity_to_target` the mean
similarity to the original target face. Without a recognizer the columns are null and
`identity_note` says why.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from fusionray.media.decode import decode_frames
from fusionray.media.probe import probe_video
from fusionray.media.storage import write_atomic
from fusionray.report.preview import preview_indices
from fusionray.types import VideoInfo

SUMMARY_PARQUET = "sweep_summary.parquet"
SUMMARY_CSV = "sweep_summary.csv"
CONTACT_SHEET = "contact_sheet.png"
FACE_MARGIN = 0.25
"""Face boxes are grown by this fraction of their size on each side before masking."""
PSNR_FRAMES = 12
"""Frames sampled for the PSNR proxy."""
PSNR_CAP_DB = 99.0
"""PSNR of identical pixels (infinite) is reported as this."""
TILE_SIZE = 200
"""Side of a contact-sheet tile in pixels."""
LABEL_WIDTH = 330
IDENTITY_NOTE = ("no identity score: the classic engine has no face recognizer, or "
                 "identity_every=0, or no face was swapped on a scored frame")


FAILED_JOB_FILE = "fusionray.failed.json"
"""Written into a job's folder by a sweep job that failed (`fusionray.jobs.sweep`): its exit
code and error, so the summary lists it and the sweep exits non-zero."""


@dataclass(frozen=True)
class SweepRun:
    """One job of the sweep: finished (`run` is its run.json) or failed (`failure`)."""

    folder: Path
    job: str
    settings: dict[str, str]
    """Override key -> value as given on the command line (`quality`, `swapper.mask_blur`)."""
    run: dict[str, Any]
    """The job's run.json (empty for a failed job)."""
    failure: dict[str, Any] | None = None
    """`exit_code` and `error` of a failed job (its FAILED_JOB_FILE), else None."""


def find_runs(sweep_dir: Path) -> list[SweepRun]:
    """Every job folder under `sweep_dir` that finished (has a run.json) or recorded a
    failure, in job order."""
    runs = []
    for folder in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        run_jsons = sorted(folder.glob("*.run.json"))
        failed = folder / FAILED_JOB_FILE
        if not run_jsons and not failed.is_file():
            continue
        overrides_file = folder / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        settings = {}
        for item in overrides or []:
            key, _, value = str(item).lstrip("+~").partition("=")
            settings[key] = value
        if run_jsons:
            runs.append(SweepRun(folder=folder, job=folder.name, settings=settings,
                                 run=json.loads(run_jsons[0].read_text())))
        else:
            runs.append(SweepRun(folder=folder, job=folder.name, settings=settings, run={},
                                 failure=json.loads(failed.read_text())))
    return sorted(runs, key=lambda r: (not r.job.isdigit(), int(r.job) if r.job.isdigit() else 0,
                                       r.job))


def face_boxes_by_frame(faces_parquet: Path) -> dict[int, list[np.ndarray]]:
    """Frame index -> face boxes (x1, y1, x2, y2) from a faces.parquet export."""
    if not faces_parquet.exists():
        return {}
    table = pq.read_table(faces_parquet, columns=["frame", "bbox"]).to_pydict()
    boxes: dict[int, list[np.ndarray]] = {}
    for frame, bbox in zip(table["frame"], table["bbox"], strict=True):
        boxes.setdefault(int(frame), []).append(np.asarray(bbox, dtype=np.float32))
    return boxes


def outside_faces_mask(shape: tuple[int, int], boxes: Sequence[np.ndarray],
                       margin: float = FACE_MARGIN) -> np.ndarray:
    """Boolean (H, W) mask, True outside every face box grown by `margin` of its size."""
    mask = np.ones(shape, dtype=bool)
    height, width = shape
    for x1, y1, x2, y2 in boxes:
        grow_x, grow_y = (x2 - x1) * margin, (y2 - y1) * margin
        left, top = max(0, math.floor(x1 - grow_x)), max(0, math.floor(y1 - grow_y))
        right, bottom = min(width, math.ceil(x2 + grow_x)), min(height, math.ceil(y2 + grow_y))
        mask[top:bottom, left:right] = False
    return mask


def psnr(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 images over `mask` (all pixels if None); capped at PSNR_CAP_DB."""
    diff = reference.astype(np.float64) - test.astype(np.float64)
    if mask is not None:
        diff = diff[mask]
    if diff.size == 0:
        return math.nan
    mse = float(np.mean(diff * diff))
    if mse == 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def _frame(info: VideoInfo, index: int) -> np.ndarray:
    from fusionray.actors.stages import to_display

    for _, frame in decode_frames(info, index, index + 1):
        return to_display(frame, info.rotation)
    raise ValueError(f"frame {index} not decoded from {info.path!r}")


def psnr_outside_faces(input_info: VideoInfo, output_info: VideoInfo,
                       boxes: dict[int, list[np.ndarray]], indices: Sequence[int]) -> float:
    """Mean PSNR (dB) of output vs input outside the faces over frames `indices`."""
    values = []
    for index in indices:
        before, after = _frame(input_info, index), _frame(output_info, index)
        values.append(psnr(before, after, outside_faces_mask(before.shape[:2],
                                                             boxes.get(index, []))))
    finite = [v for v in values if not math.isnan(v)]
    return round(float(np.mean(finite)), 3) if finite else math.nan


def _crop_box(boxes: dict[int, list[np.ndarray]], index: int, shape: tuple[int, int]
              ) -> tuple[int, int, int, int]:
    """A square around the largest face of frame `index` (the frame centre if none)."""
    height, width = shape
    faces = boxes.get(index, [])
    if faces:
        x1, y1, x2, y2 = max(faces, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 1.8
    else:
        cx, cy, side = width / 2, height / 2, min(width, height)
    side = min(side, width, height)
    left = int(np.clip(cx - side / 2, 0, width - side))
    top = int(np.clip(cy - side / 2, 0, height - side))
    return left, top, int(side), int(side)


def _tile(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, w, h = box
    return cv2.resize(frame[top:top + h, left:left + w], (TILE_SIZE, TILE_SIZE),
                      interpolation=cv2.INTER_AREA if w >= TILE_SIZE else cv2.INTER_CUBIC)


def _label_panel(lines: Sequence[str], height: int) -> np.ndarray:
    panel = np.full((height, LABEL_WIDTH, 3), 32, dtype=np.uint8)
    for row, text in enumerate(lines):
        scale, weight = (0.6, 2) if row == 0 else (0.48, 1)
        cv2.putText(panel, text, (10, 28 + 24 * row), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), weight, cv2.LINE_AA)
    return panel


def build_contact_sheet(frame_indices: Sequence[int], rows: Sequence[tuple[list[str],
                        Sequence[np.ndarray]]]) -> np.ndarray:
    """Stack rows of tiles, each with a label panel on its left, under a header of frame indices.

    Args:
        frame_indices: the frame index of each column.
        rows: (label lines, tiles) per row; tiles are BGR uint8 (TILE_SIZE, TILE_SIZE, 3).

    Returns:
        BGR uint8 image.
    """
    header = np.full((30, LABEL_WIDTH + TILE_SIZE * len(frame_indices), 3), 16, dtype=np.uint8)
    for column, index in enumerate(frame_indices):
        cv2.putText(header, f"frame {index}", (LABEL_WIDTH + column * TILE_SIZE + 8, 21),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    blocks = [header]
    for lines, tiles in rows:
        strip = np.concatenate(list(tiles), axis=1)
        blocks.append(np.concatenate([_label_panel(lines, TILE_SIZE), strip], axis=1))
        blocks.append(np.full((2, header.shape[1], 3), 90, dtype=np.uint8))
    return np.concatenate(blocks, axis=0)


def _varying(runs: Sequence[SweepRun]) -> list[str]:
    keys = sorted({k for r in runs for k in r.settings})
    return [k for k in keys if len({r.settings.get(k) for r in runs}) > 1] or keys


def summarize_sweep(sweep_dir: str | os.PathLike[str], *, sheet_frames: int = 3) -> pa.Table:
    """Write the summary table (Parquet, CSV) and the contact sheet into `sweep_dir`.

    Returns:
        The summary table (empty when no job finished or failed).
    """
    folder = Path(sweep_dir)
    runs = find_runs(folder)
    if not runs:
        return pa.table({})
    setting_keys = sorted({k for r in runs for k in r.settings})
    labelled = _varying(runs)
    finished = [run for run in runs if run.failure is None]
    # Each row is measured against its own input: a sweep may vary `+video` too.
    inputs: dict[str, VideoInfo] = {}

    def input_of(run: SweepRun) -> VideoInfo:
        path = str(run.run["input"])
        if path not in inputs:
            inputs[path] = probe_video(path)
        return inputs[path]

    first_input = input_of(finished[0]) if finished else None
    sheet_indices = (preview_indices(first_input.frame_count, sheet_frames)
                     if first_input else [])
    records: list[dict[str, Any]] = []
    sheet_rows: list[tuple[list[str], list[np.ndarray]]] = []
    reference_boxes: dict[int, list[np.ndarray]] = {}
    for run in runs:
        record: dict[str, Any] = {"job": run.job}
        record.update({f"setting.{k}": run.settings.get(k) for k in setting_keys})
        if run.failure is not None:
            record.update(status="failed", exit_code=int(run.failure.get("exit_code", 1)),
                          error=str(run.failure.get("error", "")))
            records.append(record)
            continue
        output = Path(run.run["output"])
        boxes = face_boxes_by_frame(output.with_name(f"{output.stem}.faces.parquet"))
        input_info = input_of(run)
        # The sheet crops every row around the first input's faces; another input, its own.
        same_input = first_input is not None and input_info.path == first_input.path
        if same_input:
            reference_boxes = reference_boxes or boxes
        output_info = probe_video(output)
        indices = preview_indices(input_info.frame_count, PSNR_FRAMES)
        proxy = psnr_outside_faces(input_info, output_info, boxes, indices)
        record.update(status="ok", exit_code=0, error=None)
        record.update(
            quality=run.run.get("quality"),
            frames=run.run["frames"],
            frames_per_second=run.run["frames_per_second"],
            wall_seconds=run.run["wall_seconds"],
            faces_swapped=run.run["faces_swapped"],
            frames_with_faces=run.run["frames_with_faces"],
            output_bytes=output.stat().st_size,
            psnr_outside_face_db=proxy,
            identity_score=(run.run.get("identity") or {}).get("source_mean"),
            identity_p05=(run.run.get("identity") or {}).get("source_p05"),
            identity_to_target=(run.run.get("identity") or {}).get("target_mean"),
            identity_note=None if run.run.get("identity") else IDENTITY_NOTE,
            config_hash=run.run["config_hash"],
            output=str(output),
        )
        records.append(record)
        label = ["  ".join(f"{k.split('.')[-1]}={run.settings.get(k)}" for k in labelled),
                 f"job {run.job}: {run.run['frames_per_second']:.1f} frames/s, "
                 f"{run.run['wall_seconds']:.1f} s",
                 f"PSNR outside face {proxy:.1f} dB",
                 f"{output.stat().st_size / 1e6:.2f} MB, {run.run['faces_swapped']} faces"]
        tiles = []
        own_boxes = reference_boxes if same_input else boxes
        for index in sheet_indices:
            # Another input may be shorter than the first: its last frame stands in.
            frame = _frame(output_info, min(index, output_info.frame_count - 1))
            tiles.append(_tile(frame, _crop_box(own_boxes, index, frame.shape[:2])))
        sheet_rows.append((label, tiles))

    table = pa.Table.from_pylist(records)
    write_atomic(folder / SUMMARY_PARQUET, lambda p: pq.write_table(table, p))
    write_atomic(folder / SUMMARY_CSV, lambda p: pacsv.write_csv(table, p))
    if first_input is not None:
        input_tiles = []
        for index in sheet_indices:
            frame = _frame(first_input, index)
            input_tiles.append(_tile(frame, _crop_box(reference_boxes, index, frame.shape[:2])))
        sheet_rows.insert(0, (["input", Path(first_input.path).name], input_tiles))
        sheet = build_contact_sheet(sheet_indices, sheet_rows)
        write_atomic(folder / CONTACT_SHEET, lambda p: _imwrite(p, sheet))
    return table


def _imwrite(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"Could not encode {path}")
    path.write_bytes(encoded.tobytes())


