"""The CPU side of benchmarks/bench_gpu.py: arguments, budget, tables, the moving-face clip."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from fusionray.media.probe import probe_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" /
                                                  "bench_gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module
    spec.loader.exec_module(module)
    return module


def test_arguments(bench: ModuleType) -> None:
    args = bench.parse_args([])
    assert (args.budget, args.frames, args.batches, args.skip) == (480.0, 450, (1, 8, 32), ())
    args = bench.parse_args(["--batches", "1,4", "--skip", "render,model", "--budget", "60"])
    assert args.batches == (1, 4) and args.skip == ("render", "model")
    for bad in (["--skip", "encode"], ["--batches", "1,x"], ["--batches", "0"],
                ["--frames", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_budget_caps_and_reserves(bench: ModuleType) -> None:
    budget = bench.Budget(100.0, started=time.monotonic() - 30.0)
    assert 69.0 < budget.left() <= 70.0
    assert budget.cap(50.0) == 50.0
    assert 39.0 < budget.cap(50.0, reserve=30.0) <= 40.0
    assert budget.cap(50.0, reserve=500.0) == 0.0
    assert bench.run_worker("model", {}, 1.0) == {"note": "skipped: no time left in the budget"}


def test_tables(bench: ModuleType) -> None:
    assert bench.format_table(["name", "n"], [["a", 1.234], ["b", 1234.5], ["c", None]]) == (
        "| name | n |\n| --- | ---: |\n| a | 1.23 |\n| b | 1,234.5 |\n| c | — |")
    results = [
        {"label": "CUDA fp32", "provider": "CUDAExecutionProvider", "open_seconds": 2.5,
         "points": [{"batch": 1, "faces_per_second": 210.0}, {"batch": 8,
                                                               "faces_per_second": 900.0}]},
        {"label": "TensorRT fp16", "note": "skipped: did not finish within its 240 s cap"},
    ]
    table = bench.model_table(results, (1, 8, 32)).splitlines()
    assert table[0] == ("| model run | ran on | faces/s @ b1 | faces/s @ b8 | faces/s @ b32 | "
                        "session start s | note |")
    assert table[2] == "| CUDA fp32 | CUDAExecutionProvider | 210.0 | 900.0 | — | 2.50 |  |"
    assert table[3] == ("| TensorRT fp16 | — | — | — | — | — | skipped: did not finish within "
                        "its 240 s cap |")


def test_render_and_stage_tables(bench: ModuleType) -> None:
    sampler = bench.GpuSampler.__new__(bench.GpuSampler)
    sampler.samples = [(1.0, 50.0, 1000.0), (2.0, 70.0, 1200.0), (5.0, 10.0, 800.0)]
    sampler.marks = [("fusionray", 0.5, 2.5)]
    results = {"fusionray": {"wall": 3.0, "cpu_seconds": 40.0, "providers": ["a:b"],
                             "stages": {"detect_decode": 1.0, "swap_decode": 2.0, "swap": 5.0,
                                        "ray_start": 4.0}},
               "sequential": {"wall": 9.0, "cpu_seconds": 12.0, "providers": [],
                              "stages": {"decode": 3.0, "detect": 1.0, "swap": 4.0,
                                         "encode": 1.0}}}
    lines = bench.render_table(results, 450, sampler).splitlines()
    assert lines[2] == "| fusionray | 3.00 | 150.0 | 40.0 | 60.0 | 70.0 | 1,200.0 | a:b |"
    assert lines[3] == "| sequential | 9.00 | 50.0 | 12.0 | — | — | — |  |"
    assert lines[-1] == "fusionray / sequential: 3.00x"
    stages = bench.stage_table(results).splitlines()
    assert stages[2] == "| decode | 3.00 | 3.00 |"
    assert stages[4] == "| swap | 5.00 | 4.00 |"
    assert stages[-1] == "| ray_start | 4.00 | — |"


def test_clip_has_one_moving_face(bench: ModuleType, tmp_path: Path) -> None:
    frames = list(bench.moving_face_frames(320, 180, 5))
    assert all(f.shape == (180, 320, 3) and f.dtype == np.uint8 for f in frames)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 10  # It moves.
    from fusionray.faces.blazeface import BlazeFaceDetector

    detector = BlazeFaceDetector(model="back")
    centres = []
    for frame in (frames[0], frames[-1]):
        faces = detector.detect(frame)
        assert len(faces) == 1
        centres.append(faces[0].keypoints[2][0])
    assert centres[1] - centres[0] > 0.15 * 320  # Left third towards the right third.
    clip = bench.write_clip(tmp_path / "clip.mp4", width=320, height=180, frames=12, fps=30)
    info = probe_video(clip)
    assert (info.frame_count, info.width, info.height) == (12, 320, 180)
