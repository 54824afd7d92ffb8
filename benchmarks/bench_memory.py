"""Peak memory does not grow with video length (invariant 6), and the object store never spills.

Generates 720p clips (a virtual camera moving over a real face, 25 fps, H.264) of each length,
renders each with the classic engine in a fresh process on a local Ray, and reports the peak
resident memory of the driver plus every process it started (sampled every 0.1 s) and the
bytes Ray spilled from its object store. Passes when the longest clip's peak is within 25 % of
the shortest's and nothing spilled. A benchmark, not a test (`tests/test_memory.py` runs a short
version under the `slow` marker).

    .venv/bin/python benchmarks/bench_memory.py --seconds 30 600
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 1280, 720, 25
TOLERANCE = 0.25
"""Invariant 6: the long clip's peak may exceed the short clip's by at most this fraction."""


class Measurement(TypedDict):
    """One clip's render, as `--measure` prints it (a JSON line)."""

    frames: int
    wall_seconds: float
    frames_per_second: float
    peak_rss_mb: int
    spilled_bytes: int
    frames_with_faces: int
    chunks: int
    max_chunks_in_flight: int
    chunk_frames: int


class ClipResult(Measurement):
    """A `Measurement` with the clip length it was measured on."""

    seconds: float


def write_720p_clip(path: Path, seconds: float) -> Path:
    """Stream a `seconds`-long 1280x720 clip to `path` (frames are never all in memory)."""
    from skimage import data

    from fusionray.media.demo import DEMO_HEIGHT, camera_matrix

    world = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    world = cv2.resize(world, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    count = max(2, round(FPS * seconds))
    upscale = np.array([[HEIGHT / DEMO_HEIGHT, 0, 0], [0, HEIGHT / DEMO_HEIGHT, 0], [0, 0, 1]])
    # The demo's camera path repeats every 10 s so a long clip keeps a moving face.
    period = 10 * FPS
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast", "g": str(2 * FPS)}
        for index in range(count):
            t = (index % period) / (period - 1)
            matrix = (upscale @ np.vstack([camera_matrix(t, world_size=1024), [0, 0, 1]]))[:2]
            image = cv2.warpAffine(world, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def spilled_bytes() -> int:
    """Bytes Ray spilled from the object store in this session (0 when it never spilled)."""
    import ray
    from ray._private.internal_api import memory_summary

    # The address explicitly: other Ray instances on the machine make `auto` ambiguous.
    summary = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    match = re.search(r"Spilled (\d+) MiB", summary)
    # Ray prints this line only when something spilled; under 1 MiB it reads "Spilled 0 MiB".
    return max(1, int(match.group(1)) * 1024 * 1024) if match else 0


def measure(video: Path, output: Path, overrides: list[str]) -> Measurement:
    """Render `video` on a fresh local Ray in this process; peak RSS, spill and timing."""
    import ray
    from hydra import compose, initialize_config_dir

    from benchmarks.bench_render import PeakMemory
    from fusionray.config import register_configs, to_render_config
    from fusionray.jobs.pipeline import render
    from fusionray.media.demo import demo_source_image_path

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"+video={video}", f"+source={demo_source_image_path()}", f"output={output}",
            "progress=false", "preview_frames=0", *overrides])
    config = to_render_config(cfg)
    ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
             logging_level=logging.WARNING)
    try:
        with PeakMemory() as memory:
            started = time.perf_counter()
            summary = render(config, run_dir=output.parent, config_yaml="")
            wall = time.perf_counter() - started
        spilled = spilled_bytes()
    finally:
        ray.shutdown()
    return {"frames": summary.frames, "wall_seconds": round(wall, 1),
            "frames_per_second": round(summary.frames / wall, 2),
            "peak_rss_mb": round(memory.peak / 2**20), "spilled_bytes": spilled,
            "frames_with_faces": summary.frames_with_faces, "chunks": summary.chunks,
            "max_chunks_in_flight": config.cluster.max_chunks_in_flight,
            "chunk_frames": config.chunk.frames}


def run(lengths: list[float], overrides: list[str], work: Path) -> list[ClipResult]:
    """Measure each length in its own process, so one run's memory never counts in another."""
    results = []
    for seconds in lengths:
        clip = write_720p_clip(work / f"clip-{seconds:g}s.mp4", seconds)
        command = [sys.executable, str(Path(__file__).resolve()), "--measure", str(clip),
                   *overrides]
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                   check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if completed.returncode != 0:
            raise RuntimeError(f"measuring {seconds:g} s failed:\n{completed.stderr[-3000:]}")
        result: ClipResult = json.loads(completed.stdout.strip().splitlines()[-1])
        result["seconds"] = seconds
        results.append(result)
        clip.unlink()
    return results


def verdict(results: list[ClipResult]) -> tuple[bool, str]:
    shortest, longest = results[0], results[-1]
    ratio = float(longest["peak_rss_mb"]) / float(shortest["peak_rss_mb"])
    spilled = sum(int(r["spilled_bytes"]) for r in results)
    ok = ratio <= 1 + TOLERANCE and spilled == 0
    return ok, (f"peak ratio {longest['seconds']:g} s / {shortest['seconds']:g} s = {ratio:.3f} "
                f"(limit {1 + TOLERANCE:.2f}); spilled {spilled} bytes: "
                + ("PASS" if ok else "FAIL"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0, 600.0],
                        help="clip lengths, shortest first (default: 30 600)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. chunk.frames=24")
    args = parser.parse_args()
    if args.measure:
        output = args.measure.with_name(args.measure.stem + ".out.mp4")
        print(json.dumps(measure(args.measure, output, args.overrides)))
        return 0
    with tempfile.TemporaryDirectory(prefix="fusionray-memory-") as work:
        results = run(sorted(args.seconds), args.overrides, Path(work))
    print(f"{os.cpu_count()} CPUs; 1280x720 at {FPS} fps, classic engine; overrides: "
          f"{' '.join(args.overrides) or '(none)'}")
    print("| clip s | frames | wall s | frames/s | peak RSS MB | spilled bytes |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['seconds']:g} | {r['frames']} | {r['wall_seconds']} | "
              f"{r['frames_per_second']} | {r['peak_rss_mb']} | {r['spilled_bytes']} |")
    ok, line = verdict(results)
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
