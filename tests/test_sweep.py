"""Hydra sweeps over quality settings: one shared Ray, a summary table and a contact sheet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fusionray.report.sweep import (
    PSNR_CAP_DB,
    TILE_SIZE,
    build_contact_sheet,
    outside_faces_mask,
    psnr,
)
from tests.test_render import compose_config

ROOT = Path(__file__).resolve().parents[1]


def test_outside_faces_mask_grows_each_box() -> None:
    mask = outside_faces_mask((100, 200), [np.array([40, 20, 80, 60], np.float32)], margin=0.25)
    assert mask.shape == (100, 200)
    assert not mask[10:70, 30:90].any()  # box grown by 10 px each side
    assert mask[:10].all() and mask[:, 90:].all() and mask.sum() == 100 * 200 - 60 * 60


@pytest.mark.parametrize(
    ("noise", "expected"),
    [(0, PSNR_CAP_DB), (1, 48.13), (16, 24.05)],
)
def test_psnr(noise: int, expected: float) -> None:
    reference = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(reference, reference + np.uint8(noise)) == pytest.approx(expected, abs=0.01)


def test_psnr_ignores_pixels_outside_the_mask() -> None:
    reference = np.zeros((4, 4, 3), np.uint8)
    changed = reference.copy()
    changed[0, 0] = 255
    mask = np.ones((4, 4), bool)
    mask[0, 0] = False
    assert psnr(reference, changed, mask) == PSNR_CAP_DB


def test_contact_sheet_layout() -> None:
    tile = np.zeros((TILE_SIZE, TILE_SIZE, 3), np.uint8)
    sheet = build_contact_sheet([10, 20], [(["input"], [tile, tile]),
                                           (["quality=draft", "fps"], [tile, tile])])
    assert sheet.shape[1] == 330 + 2 * TILE_SIZE
    assert sheet.shape[0] == 30 + 2 * (TILE_SIZE + 2)


@pytest.mark.parametrize("preset", ["draft", "standard", "master"])
def test_presets_differ_where_the_issue_says(preset: str) -> None:
    config = compose_config("+video=demo", f"quality={preset}")
    assert config.encode.codec == {"draft": "libx264", "standard": "auto",
                                   "master": "auto"}[preset]


def test_presets_differ_in_every_quality_knob() -> None:
    configs = [compose_config("+video=demo", f"quality={p}")
               for p in ("draft", "standard", "master")]
    for read in (
        lambda c: (c.detector.variant, c.detector.tiles),
        lambda c: (c.swapper.mask_padding, c.swapper.mask_blur),
        lambda c: c.swapper.colour_match,
        lambda c: (c.swapper.blend, c.swapper.blend_levels),
        lambda c: c.encode.codec,
        lambda c: c.encode.crf,
    ):
        values = [read(c) for c in configs]
        assert len(set(values)) > 1, values
    assert len({c.encode.crf for c in configs}) == 3


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_shares_ray_and_writes_summary_and_contact_sheet(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "fusionray.jobs.render", "-m", "+video=demo",
         "quality=draft,standard", "swapper.mask_blur=0.1,0.3", "progress=false",
         "preview_frames=0", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/*.run.json"))]
    assert len(runs) == 4
    # One Ray for the whole sweep: every job ran in the same Ray session.
    assert len({r["ray_session"] for r in runs}) == 1 and runs[0]["ray_session"]
    assert len({r["config_hash"] for r in runs}) == 4
    for parquet_or_csv in (pd.read_parquet(sweep / "sweep_summary.parquet"),
                           pd.read_csv(sweep / "sweep_summary.csv")):
        table = parquet_or_csv
        assert len(table) == 4
        assert sorted(zip(table["setting.quality"], table["setting.swapper.mask_blur"].astype(str),
                          strict=True)) == [("draft", "0.1"), ("draft", "0.3"),
                                            ("standard", "0.1"), ("standard", "0.3")]
        assert (table["frames_per_second"] > 0).all() and (table["wall_seconds"] > 0).all()
        assert table["identity_score"].isna().all()
        # Compression outside the face: the standard preset (CRF 18) beats draft (CRF 26).
        by_quality = table.groupby("setting.quality")["psnr_outside_face_db"].mean()
        assert 30 < by_quality["draft"] < by_quality["standard"]
    sheet = cv2.imread(str(sweep / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] == 30 + 5 * (TILE_SIZE + 2)


def _job(sweep: Path, job: str, overrides: list[str], *, clip: Path | None = None,
         failure: BaseException | None = None, identity: dict | None = None) -> None:
    """A job folder as Hydra and the render leave it: overrides, and a run.json whose output
    is a copy of its input (so its PSNR against its own input is the cap), or a failure."""
    import shutil

    from fusionray.jobs.sweep import record_failed_job

    folder = sweep / job
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if failure is not None:
        record_failed_job(folder, exit_code=2, error=failure)
        return
    assert clip is not None
    output = folder / f"{clip.stem}.swapped.mp4"
    shutil.copyfile(clip, output)
    run = {"input": str(clip), "output": str(output), "quality": "standard", "frames": 12,
           "frames_per_second": 10.0, "wall_seconds": 1.2, "faces_swapped": 0,
           "frames_with_faces": 0, "config_hash": job}
    if identity is not None:
        run["identity"] = identity
    (folder / f"{output.stem}.run.json").write_text(json.dumps(run))


def test_summary_rows_use_their_own_input_and_list_failed_jobs(tmp_path: Path) -> None:
    from fusionray.jobs.sweep import sweep_exit_code
    from fusionray.report.sweep import summarize_sweep
    from tests.clips import write_clip

    # Two different shots: a row measured against the other shot's frames would score low
    # (another picture) or fail (another size).
    first = write_clip(tmp_path / "a.mp4", width=160, height=96, frames=12, audio=False)
    second = write_clip(tmp_path / "b.mp4", width=128, height=80, frames=8, audio=False,
                        gop=4)
    sweep = tmp_path / "sweep"
    _job(sweep, "0", [f"+video={first}"], clip=first)
    _job(sweep, "1", ["+video=/shots/missing.mp4"],
         failure=FileNotFoundError("Input not found: '/shots/missing.mp4'"))
    _job(sweep, "2", [f"+video={second}"], clip=second)
    table = summarize_sweep(sweep).to_pandas()
    assert list(table["job"]) == ["0", "1", "2"]
    assert list(table["status"]) == ["ok", "failed", "ok"]
    assert list(table["psnr_outside_face_db"].iloc[[0, 2]]) == [PSNR_CAP_DB, PSNR_CAP_DB]
    assert pd.isna(table["psnr_outside_face_db"].iloc[1])
    assert table["error"].iloc[1] == "Input not found: '/shots/missing.mp4'"
    assert table["exit_code"].tolist() == [0, 2, 0]
    assert (sweep / "sweep_summary.csv").exists() and (sweep / "contact_sheet.png").exists()
    assert sweep_exit_code([2]) == 2 and sweep_exit_code([2, 1]) == 1 and sweep_exit_code([]) == 0


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_with_one_broken_input_runs_the_rest_and_exits_non_zero(tmp_path: Path) -> None:
    from fusionray.media.demo import demo_source_image_path
    from tests.clips import write_face_clip

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"garbage" * 100)
    clip = write_face_clip(tmp_path / "face.mp4", frames=20)
    sweep = tmp_path / "sweep"
    # The broken input last: the first job starts Ray, whose start-up on a loaded machine can
    # time out (a failure of its own, which would hide the one this test is about).
    result = subprocess.run(
        [sys.executable, "-m", "fusionray.jobs.render", "-m", f"+video=demo,{clip},{broken}",
         f"+source={demo_source_image_path()}", "quality=draft", "progress=false",
         "preview_frames=0", "cluster.num_cpus=2", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 2, result.stderr[-3000:]  # the one failure was bad input
    assert "1 of 3 sweep jobs failed" in result.stderr
    table = pd.read_csv(sweep / "sweep_summary.csv")
    assert list(table["status"]) == ["ok", "ok", "failed"]
    assert "broken.mp4" in table["error"][2]
    # Each finished row is measured against its own input (the demo and the face clip).
    assert (table["psnr_outside_face_db"][:2] > 28).all(), table["psnr_outside_face_db"]
    assert len(set(table["output"][:2])) == 2


def test_summary_shows_each_jobs_identity_score(tmp_path: Path) -> None:
    """A job with a recognizer carries run.json's identity block into its row (mean, 5th
    percentile, similarity to the target); a job without one says why its cells are empty."""
    from fusionray.report.sweep import IDENTITY_NOTE, summarize_sweep
    from tests.clips import write_clip

    clip = write_clip(tmp_path / "a.mp4", width=160, height=96, frames=12, audio=False)
    sweep = tmp_path / "sweep"
    scores = {"faces": 12, "source_mean": 0.71, "source_p05": 0.62, "target_mean": 0.18,
              "target_p95": 0.25}
    _job(sweep, "0", [f"+video={clip}", "swapper.pixel_boost=512"], clip=clip, identity=scores)
    _job(sweep, "1", [f"+video={clip}", "swapper=classic"], clip=clip)
    table = summarize_sweep(sweep).to_pandas()
    assert table[["identity_score", "identity_p05", "identity_to_target"]].iloc[0].tolist() == [
        0.71, 0.62, 0.18]
    assert pd.isna(table["identity_note"].iloc[0])
    assert table[["identity_score", "identity_p05"]].iloc[1].isna().all()
    assert table["identity_note"].iloc[1] == IDENTITY_NOTE
