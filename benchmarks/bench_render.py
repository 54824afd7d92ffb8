"""Render the same clip two ways and print a table.

1. fusionray: the Ray pipeline (`fusionray.jobs.pipeline.render`, local Ray on this machine).
2. sequential: one process, frame by frame, the way single-machine tools work: decode -> detect
   -> swap -> encode with the same engine functions, then the same assembly.

Reports frames/s of each and their ratio, per-stage seconds, and peak resident memory (the
driver plus every process it started, sampled every 0.1 s). A benchmark, not a test.

    .venv/bin/python benchmarks/bench_render.py --seconds 12
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from hydra import compose, initialize_config_dir

from fusionray.actors.stages import detector_from_config, swapper_from_config
from fusionray.config import RenderConfig, register_configs, to_render_config
from fusionray.faces.select import select_faces
from fusionray.jobs.pipeline import build_source_identity, render
from fusionray.media.assemble import assemble_video
from fusionray.media.decode import decode_frames
from fusionray.media.demo import demo_source_image_path, write_demo_clip
from fusionray.media.encode import build_encoder_settings, encode_segment
from fusionray.media.probe import probe_video

ROOT = Path(__file__).resolve().parents[1]


class PeakMemory:
    """Samples the summed RSS of this process and all its descendants in a thread."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for process in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a process may exit while we look
                total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def sequential(config: RenderConfig, video: Path, output: Path) -> dict[str, float]:
    """Decode, detect, swap and encode frame by frame in this process."""
    stages = dict.fromkeys(("decode", "detect", "swap", "encode", "assemble"), 0.0)
    info = probe_video(video)
    detector = detector_from_config(config, threads=os.cpu_count() or 1)
    source, _ = build_source_identity(config, [demo_source_image_path()], detector)
    swapper = swapper_from_config(config)
    settings = build_encoder_settings(codec=config.encode.codec, crf=config.encode.crf,
                                      preset=config.encode.preset, pix_fmt=config.encode.pix_fmt,
                                      lossless=config.encode.lossless, width=info.width,
                                      height=info.height)

    def frames():
        clock = time.perf_counter()
        for _, frame in decode_frames(info, 0, info.frame_count):
            now = time.perf_counter()
            stages["decode"] += now - clock
            faces = select_faces(detector.detect(frame), config.selection)
            after_detect = time.perf_counter()
            stages["detect"] += after_detect - now
            if faces:
                frame = swapper.swap(frame, faces, source)
            clock = time.perf_counter()
            stages["swap"] += clock - after_detect
            yield frame

    with tempfile.TemporaryDirectory() as work:
        segment = Path(work) / "all.segment"
        started = time.perf_counter()
        encode_segment(frames(), pts=info.frame_pts, info=info, settings=settings, path=segment)
        stages["encode"] = time.perf_counter() - started - stages["decode"] - stages["detect"] \
            - stages["swap"]
        clock = time.perf_counter()
        assemble_video(info, [segment], output)
        stages["assemble"] = time.perf_counter() - clock
    return stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="clip length (25 fps)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. quality=draft")
    args = parser.parse_args()

    register_configs()
    work = Path(tempfile.mkdtemp(prefix="fusionray-bench-"))
    video = write_demo_clip(work / "clip.mp4", seconds=args.seconds)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"+video={video}", f"+source={demo_source_image_path()}",
            f"output={work / 'ray.mp4'}", "progress=false", "preview_frames=0", *args.overrides])
    config = to_render_config(cfg)
    frames = probe_video(video).frame_count

    with PeakMemory() as ray_memory:
        started = time.perf_counter()
        summary = render(config, run_dir=work, config_yaml="")
        ray_wall = time.perf_counter() - started
    with PeakMemory() as seq_memory:
        started = time.perf_counter()
        seq_stages = sequential(config, video, work / "sequential.mp4")
        seq_wall = time.perf_counter() - started

    ray_fps, seq_fps = frames / ray_wall, frames / seq_wall
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}; clip: {frames} frames "
          f"{probe_video(video).width}x{probe_video(video).height}; overrides: "
          f"{' '.join(args.overrides) or '(none)'}")
    print(f"actors: {summary.actors}, chunk.frames={config.chunk.frames}, "
          f"providers: {', '.join(summary.providers)}")
    print()
    print("| run | wall s | frames/s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| fusionray (Ray) | {ray_wall:.2f} | {ray_fps:.2f} | {ray_memory.peak / 2**20:.0f} |")
    print(f"| sequential loop | {seq_wall:.2f} | {seq_fps:.2f} | {seq_memory.peak / 2**20:.0f} |")
    print(f"| ratio Ray / sequential | | {ray_fps / seq_fps:.2f}x | |")
    print()
    print("| stage | fusionray s (actor seconds) | sequential s |")
    print("| --- | ---: | ---: |")
    ray_stages = summary.stage_seconds
    rows = [("decode", ray_stages.get("detect_decode", 0) + ray_stages.get("swap_decode", 0),
             seq_stages["decode"]),
            ("detect", ray_stages.get("detect", 0), seq_stages["detect"]),
            ("swap", ray_stages.get("swap", 0), seq_stages["swap"]),
            ("encode", ray_stages.get("encode", 0), seq_stages["encode"]),
            ("assemble", ray_stages.get("assemble", 0), seq_stages["assemble"]),
            ("ray start + actors", ray_stages.get("ray_start", 0), 0.0)]
    for name, ray_s, seq_s in rows:
        print(f"| {name} | {ray_s:.2f} | {seq_s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
