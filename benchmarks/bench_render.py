"""Render the same clip three ways and print a table.

1. fusionray: the Ray pipeline (`fusionray.jobs.pipeline.render`, local Ray on this machine).
2. fusionray in process: `RenderStage` over the keyframe-aware plan, chunk after chunk in this
   process, no Ray (one decode per chunk, steps on threads, frames kept in their planes): what
   the render actor does, without the cluster around it.
3. sequential: one process, frame by frame, the way single-machine tools work: decode to
   full-size BGR -> detect -> swap -> encode with the same engine functions, then the same
   assembly. This is the honest baseline, so it keeps the full-frame BGR path such tools use
   (FaceFusion, roop: every frame to BGR, detect and swap on it, back to YUV for the encoder);
   it does not get fusionray's plane path, thread overlap or small detector image.

Reports frames/s of each and their ratio, frames decoded per frame written, per-stage seconds,
and peak resident memory (the driver plus every process it started, sampled every 0.1 s). A
benchmark, not a test. `--seconds` takes several clip lengths; the issue's cases are 48 and 60:

    .venv/bin/python benchmarks/bench_render.py --seconds 12
    .venv/bin/python benchmarks/bench_render.py --seconds 60
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

from fusionray.actors.render_stage import RenderStage
from fusionray.actors.stages import detector_from_config, swapper_from_config
from fusionray.config import RenderConfig, register_configs, to_render_config
from fusionray.faces.select import select_faces
from fusionray.jobs.pipeline import build_source_identity, render
from fusionray.media.assemble import assemble_video
from fusionray.media.decode import decode_frames
from fusionray.media.demo import demo_source_image_path, write_demo_clip
from fusionray.media.encode import build_encoder_settings, encode_segment
from fusionray.media.plan import plan_video_chunks
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


def in_process(config: RenderConfig, video: Path, output: Path) -> dict[str, float]:
    """`RenderStage` chunk after chunk in this process (keyframe-aware plan), then assembly."""
    info = probe_video(video)
    stage = RenderStage(config, threads=os.cpu_count() or 1)
    source, _ = build_source_identity(config, [demo_source_image_path()],
                                      detector_from_config(config, threads=1))
    totals: dict[str, float] = {"frames_decoded": 0.0, "frames_written": 0.0}
    with tempfile.TemporaryDirectory() as work:
        segments = []
        for chunk in plan_video_chunks(info, config.chunk):
            result = stage(info, chunk, source)
            segment = Path(work) / f"{chunk.index:05d}.segment"
            segment.write_bytes(result.segment)
            segments.append(segment)
            totals["frames_decoded"] += result.frames_decoded
            totals["frames_written"] += result.frames
            for name, seconds in result.seconds.items():
                totals[name] = totals.get(name, 0.0) + seconds
        clock = time.perf_counter()
        assemble_video(info, segments, output)
        totals["assemble"] = time.perf_counter() - clock
    return totals


def bench(seconds: float, overrides: list[str], work: Path) -> None:
    """Render a `seconds` demo clip all three ways and print the tables."""
    video = write_demo_clip(work / f"clip-{seconds:g}s.mp4", seconds=seconds)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"+video={video}", f"+source={demo_source_image_path()}",
            f"output={work / 'ray.mp4'}", "progress=false", "preview_frames=0", *overrides])
    config = to_render_config(cfg)
    info = probe_video(video)
    frames = info.frame_count

    with PeakMemory() as ray_memory:
        started = time.perf_counter()
        summary = render(config, run_dir=work, config_yaml="")
        ray_wall = time.perf_counter() - started
    with PeakMemory() as stage_memory:
        started = time.perf_counter()
        stage_totals = in_process(config, video, work / "in-process.mp4")
        stage_wall = time.perf_counter() - started
    with PeakMemory() as seq_memory:
        started = time.perf_counter()
        seq_stages = sequential(config, video, work / "sequential.mp4")
        seq_wall = time.perf_counter() - started

    ray_fps, stage_fps, seq_fps = frames / ray_wall, frames / stage_wall, frames / seq_wall
    ray_decoded = getattr(summary, "frames_decoded", None)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}; clip: {frames} frames "
          f"{info.width}x{info.height}, keyframes every "
          f"{frames / max(1, len(info.keyframe_indices)):.0f} frames; overrides: "
          f"{' '.join(overrides) or '(none)'}")
    print(f"actors: {summary.actors}, chunk.frames={config.chunk.frames}, "
          f"providers: {', '.join(summary.providers)}")
    print()
    print("| run | wall s | frames/s | vs sequential | decoded per written | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    ray_ratio = f"{ray_decoded / frames:.2f}" if ray_decoded else "n/a"
    print(f"| fusionray (Ray) | {ray_wall:.2f} | {ray_fps:.2f} | {ray_fps / seq_fps:.2f}x | "
          f"{ray_ratio} | {ray_memory.peak / 2**20:.0f} |")
    print(f"| fusionray RenderStage, in process | {stage_wall:.2f} | {stage_fps:.2f} | "
          f"{stage_fps / seq_fps:.2f}x | "
          f"{stage_totals['frames_decoded'] / stage_totals['frames_written']:.2f} | "
          f"{stage_memory.peak / 2**20:.0f} |")
    print(f"| sequential loop | {seq_wall:.2f} | {seq_fps:.2f} | 1.00x | 1.00 | "
          f"{seq_memory.peak / 2**20:.0f} |")
    print()
    print("| stage | fusionray s (actor seconds) | in process s (busy, per thread) | "
          "sequential s |")
    print("| --- | ---: | ---: | ---: |")
    ray_stages = summary.stage_seconds
    rows = [("decode", ray_stages.get("detect_decode", 0) + ray_stages.get("swap_decode", 0)
             + ray_stages.get("decode", 0), stage_totals.get("decode", 0), seq_stages["decode"]),
            ("detect", ray_stages.get("detect", 0), stage_totals.get("detect", 0),
             seq_stages["detect"]),
            ("track + select", ray_stages.get("track", 0), stage_totals.get("track", 0), 0.0),
            ("swap (prepare + forward + paste)", ray_stages.get("swap", 0)
             + sum(ray_stages.get(k, 0) for k in ("prepare", "forward", "paste")),
             sum(stage_totals.get(k, 0) for k in ("prepare", "forward", "paste")),
             seq_stages["swap"]),
            ("encode", ray_stages.get("encode", 0), stage_totals.get("encode", 0),
             seq_stages["encode"]),
            ("assemble", ray_stages.get("assemble", 0), stage_totals.get("assemble", 0),
             seq_stages["assemble"]),
            ("ray start + actors", ray_stages.get("ray_start", 0), 0.0, 0.0)]
    for name, ray_s, stage_s, seq_s in rows:
        print(f"| {name} | {ray_s:.2f} | {stage_s:.2f} | {seq_s:.2f} |")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[12.0],
                        help="clip lengths at 25 fps, one table each (e.g. 12 60)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. quality=draft")
    args = parser.parse_args()

    register_configs()
    work = Path(tempfile.mkdtemp(prefix="fusionray-bench-"))
    for seconds in args.seconds:
        bench(seconds, args.overrides, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
