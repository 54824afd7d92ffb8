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
