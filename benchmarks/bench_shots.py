"""Shot-list throughput: N short shots rendered as one shot list (one Ray job, shared pools,
chunks interleaved) against the same shots rendered one after another (one job each, as N
separate commands would: each starts its own local Ray and actors). A benchmark, not a test.

    .venv/bin/python benchmarks/bench_shots.py --shots 3 --seconds 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from fusionray.config import register_configs, to_render_config
from fusionray.jobs.pipeline import render
from fusionray.jobs.shots import ShotSpec, render_shots
from fusionray.media.demo import demo_source_image_path, write_demo_clip

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=3, help="number of shots")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per shot (25 fps)")
    parser.add_argument("--chunk-frames", type=int, default=12)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import machine_line

    machine = machine_line()
    register_configs()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        clips = [write_demo_clip(work / f"shot{i}.mp4", seconds=args.seconds)
                 for i in range(args.shots)]
        overrides = [f"+source={demo_source_image_path()}", "progress=false",
                     "preview_frames=0", f"chunk.frames={args.chunk_frames}"]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=["+video=demo", *overrides])
            singles = [to_render_config(compose(config_name="config", overrides=[
                f"+video={clip}", f"output={work / 'seq' / clip.name}", *overrides]))
                for clip in clips]

        clock = time.perf_counter()
        for config in singles:
            render(config, run_dir=work / "seq", config_yaml="x: 1\n")
        sequential = time.perf_counter() - clock

        specs = [ShotSpec(video=str(clip), output=str(work / "list" / clip.name))
                 for clip in clips]
        clock = time.perf_counter()
        report = render_shots(cfg, specs, run_dir=work / "list")
        shot_list = time.perf_counter() - clock
        assert all(row.status == "ok" for row in report.rows), report.table()

    frames = sum(row.frames for row in report.rows)
    print(f"{machine} (shared: figures are noisy)")
    print(f"{args.shots} shots x {args.seconds:g} s (640x360, classic engine), {frames} frames")
    print("| mode | wall s | frames/s |\n|---|---:|---:|")
    print(f"| one after another | {sequential:.1f} | {frames / sequential:.1f} |")
    print(f"| shot list | {shot_list:.1f} | {frames / shot_list:.1f} |")
    print(f"shot list speed: {sequential / shot_list:.2f}x")


if __name__ == "__main__":
    main()
