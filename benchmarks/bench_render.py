"""Render the same clip as whole processes, the sides alternating, and print tables.

Sides (each a separate process, run round after round in the same order: A B A B):

1. fusionray: `python -m fusionray.jobs.render` exactly as a user types it (on a machine of at
   most `cluster.inline_max_cpus` CPUs without a GPU, every chunk rendered by the driver's own
   workers and no Ray started; else a local Ray on this machine, the config's pools and
   threads). `--also cluster.inline_max_cpus=0` adds the Ray side on a small machine.
2. sequential: one process, frame by frame, the way single-machine tools work: decode to
   full-size BGR -> detect -> swap -> encode with the same engine functions, then the same
   assembly. This is the honest baseline, so it keeps the full-frame BGR path such tools use
   (FaceFusion, roop: every frame to BGR, detect and swap on it, back to YUV for the encoder);
   it does not get fusionray's plane path, thread overlap or small detector image.
3. with `--in-process`: `RenderStage` over the keyframe-aware plan, chunk after chunk in one
   process, no Ray: what the render actor does, without the cluster around it.
4. with `--also OVERRIDE` (repeatable): fusionray again with that Hydra override, e.g.
   `--also cluster.inline=false` (every chunk on an actor, none in the driver).
5. with `--joined`: fusionray joining a Ray already running on this machine
   (`cluster.address=...`), as on a studio box where `ray start --head` runs once for many
   renders. The head is started before the side's clock and stopped after it, so it costs the
   other sides nothing; its start is not counted, which is the point of this side. Its actors
   are the head's processes, so its peak RSS is the driver's alone.

Reports the median wall seconds of each side and its ratio to the sequential loop, frames
decoded per frame written (fusionray's from its run.json), per-stage seconds, and peak resident
memory (the side's process plus every process it started, sampled every 0.1 s). A benchmark,
not a test. `--seconds` takes several clip lengths; the issue's cases are 48 and 60, and
`--gop 250` measures decode amplification at a long GOP:

    .venv/bin/python benchmarks/bench_render.py --seconds 60
    .venv/bin/python benchmarks/bench_render.py --seconds 60 --gop 250 --repeats 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import psutil
from hydra import compose, initialize_config_dir

from fusionray.actors.render_stage import RenderStage
from fusionray.actors.stages import detector_from_config, swapper_from_config
from fusionray.config import RenderConfig, register_configs, to_render_config
from fusionray.faces.select import select_faces
from fusionray.jobs.pipeline import build_source_identity
from fusionray.media.assemble import assemble_video
from fusionray.media.decode import decode_frames
from fusionray.media.demo import demo_source_image_path, write_demo_clip
from fusionray.media.encode import build_encoder_settings, encode_segment
from fusionray.media.plan import plan_video_chunks
from fusionray.media.probe import probe_video

ROOT = Path(__file__).resolve().parents[1]


class PeakMemory:
    """Samples the summed RSS of one process (`pid`; default this one) and all its descendants
    in a thread."""

    def __init__(self, interval: float = 0.1, *, pid: int | None = None) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._root = psutil.Process(pid)

    def _sample(self) -> int:
        total, tree = 0, [self._root]
        with contextlib.suppress(psutil.Error):  # the root may have exited
            tree += self._root.children(recursive=True)
        for process in tree:
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


def worker(mode: str, video: Path, output: Path, overrides: list[str]) -> None:
    """One timed side, in this (child) process: print its stage seconds as JSON."""
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"+video={video}", f"+source={demo_source_image_path()}", f"output={output}",
            "progress=false", "preview_frames=0", *overrides])
    config = to_render_config(cfg)
    run = sequential if mode == "sequential" else in_process
    print(json.dumps(run(config, video, output)))


# Ray's raylet starts its workers at nice 15; on a quiet machine that changes nothing, but
# beside other (niced) work it would hand the sequential side (nice 0) an edge that has nothing
# to do with either pipeline. Both sides run at the same priority.
CHILD_ENV = {**os.environ, "RAY_worker_niceness": "0"}


def timed_child(command: list[str], *, env: dict[str, str] = CHILD_ENV,
                ) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes, the child and all its descendants) and stdout of one
    whole child process, which must succeed."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    # Only the side's own process tree: not this script, which generated the clip.
    with PeakMemory(pid=child.pid) as memory:
        stdout, stderr = child.communicate()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed ({child.returncode}):\n"
                         f"{stderr[-4000:]}")
    return seconds, memory.peak, stdout


HEAD_SCRIPT = """
import sys, ray
ray.init(address="local", num_cpus=int(sys.argv[1]), include_dashboard=False,
         logging_level="WARNING")
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the benchmark closes it
"""


@contextlib.contextmanager
def running_ray() -> Iterator[tuple[str, dict[str, str]]]:
    """A local Ray that other processes join, for one run of the `joined` side: started (and
    ready) before the side's clock, stopped after it. Yields its GCS address and the
    environment that joins it (Ray's token authentication: head and job share one token)."""
    env = {**CHILD_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = subprocess.Popen([sys.executable, "-c", HEAD_SCRIPT, str(os.cpu_count() or 1)],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert head.stdin is not None and head.stdout is not None
    try:
        address = head.stdout.readline().strip()
        if not address:
            raise SystemExit("The Ray head for the joined side did not start")
        yield address, env
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()


def command_for(name: str, video: Path, output: Path, overrides: list[str],
                address: str | None = None) -> list[str]:
    """The whole-process command line of one side (`address`: the Ray the joined side joins)."""
    if name in ("fusionray", "joined") or name.startswith("fusionray "):
        joined = [f"cluster.address={address}"] if name == "joined" else []
        if name.startswith("fusionray "):  # an --also side: its own override last
            joined = [name.split(" ", 1)[1]]
        return [sys.executable, "-m", "fusionray.jobs.render", f"+video={video}",
                f"+source={demo_source_image_path()}", f"output={output}", "progress=false",
                "preview_frames=0", f"hydra.run.dir={output.parent / ('hydra-' + output.stem)}",
                *joined, *overrides]
    return [sys.executable, str(Path(__file__).resolve()), "--worker", name,
            "--video", str(video), "--output", str(output), *overrides]


class RunJson(TypedDict):
    """The fields of fusionray's run.json (`fusionray.report.summary.RunSummary`) read here."""

    actors: dict[str, int]
    actor_threads: dict[str, int]
    chunks: int
    providers: list[str]
    frames_decoded: int
    frames_written: int
    stage_seconds: dict[str, float]


def bench(seconds: float, *, gop: int, repeats: int, sides: list[str], overrides: list[str],
          work: Path, machine: str) -> None:
    """Render a `seconds` demo clip with each side as a whole process, alternating the sides
    round by round (A B A B), and print the tables under `machine` (`machine_line`)."""
    video = write_demo_clip(work / f"clip-{seconds:g}s-g{gop}.mp4", seconds=seconds, gop=gop)
    info = probe_video(video)
    frames = info.frame_count
    walls: dict[str, list[float]] = {name: [] for name in sides}
    peaks: dict[str, list[int]] = {name: [] for name in sides}
    stages: dict[str, dict[str, float]] = {}
    run_json: RunJson | None = None  # the last round's, when the fusionray side runs
    for round_index in range(repeats):
        for name in sides:
            tag = name if name in LABELS else f"also{sides.index(name)}"  # no '=' in paths
            output = work / f"{tag}-{seconds:g}s-g{gop}-{round_index}.mp4"
            with (running_ray() if name == "joined"
                  else contextlib.nullcontext((None, CHILD_ENV))) as (address, env):
                wall, peak, stdout = timed_child(
                    command_for(name, video, output, overrides, address), env=env)
            walls[name].append(wall)
            peaks[name].append(peak)
            if name == "fusionray":
                run_json = json.loads(output.with_suffix(".run.json").read_text())
            elif name == "joined" or name.startswith("fusionray "):
                stages[name] = json.loads(output.with_suffix(".run.json").read_text())
            else:
                stages[name] = json.loads(stdout.strip().splitlines()[-1])
            print(f"round {round_index + 1} {name:11s} {wall:7.2f} s", flush=True)

    print()
    print(machine)
    print(f"clip: {frames} frames {info.width}x{info.height} at 25 fps, keyframes every "
          f"{frames / max(1, len(info.keyframe_indices)):.0f} frames (asked: {gop}); "
          f"overrides: {' '.join(overrides) or '(none)'}; rounds: {repeats}, sides alternating")
    if run_json:
        print(f"fusionray actors: {run_json['actors']}, threads {run_json['actor_threads']}, "
              f"chunks {run_json['chunks']}, providers: {', '.join(run_json['providers'])}")
    print()
    base = statistics.median(walls["sequential"]) if "sequential" in walls else None
    print("| run (whole process) | wall s (median) | runs s | frames/s | vs sequential | "
          "decoded per written | peak RSS MB |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for name in sides:
        wall = statistics.median(walls[name])
        if name == "fusionray" and run_json:
            decoded = f"{int(run_json['frames_decoded']) / int(run_json['frames_written']):.2f}"
        elif name in ("in-process", "joined") or name.startswith("fusionray "):
            decoded = (f"{stages[name]['frames_decoded'] / stages[name]['frames_written']:.2f}")
        else:
            decoded = "1.00"
        ratio = f"{base / wall:.2f}x" if base else "n/a"
        label = LABELS.get(name) or f"fusionray with `{name.split(' ', 1)[1]}`"
        print(f"| {label} | {wall:.2f} | {', '.join(f'{t:.1f}' for t in walls[name])} | "
              f"{frames / wall:.2f} | {ratio} | {decoded} | {max(peaks[name]) / 2**20:.0f} |")
    print()
    ray_stages: dict[str, float] = dict(run_json.get("stage_seconds", {})) if run_json else {}
    print("| stage | fusionray s (actor seconds) | in process s (busy, per thread) | "
          "sequential s |")
    print("| --- | ---: | ---: | ---: |")
    in_proc = stages.get("in-process", {})
    seq = stages.get("sequential", {})
    rows = [("decode", ("detect_decode", "swap_decode", "decode"), ("decode",), ("decode",)),
            ("detect", ("detect",), ("detect",), ("detect",)),
            ("track + select", ("track",), ("track",), ()),
            ("swap (prepare + forward + paste)", ("swap", "prepare", "forward", "paste"),
             ("prepare", "forward", "paste"), ("swap",)),
            ("encode", ("encode",), ("encode",), ("encode",)),
            ("assemble", ("assemble",), ("assemble",), ("assemble",)),
            ("ray start + actors", ("ray_start",), (), ())]
    for label, ray_keys, stage_keys, seq_keys in rows:
        values = [sum(table.get(key, 0.0) for key in keys)
                  for table, keys in ((ray_stages, ray_keys), (in_proc, stage_keys),
                                      (seq, seq_keys))]
        print(f"| {label} | " + " | ".join(f"{value:.2f}" for value in values) + " |")
    print()


LABELS = {"fusionray": "fusionray (`python -m fusionray.jobs.render`, as a user runs it)",
          "in-process": "fusionray RenderStage in one process, no Ray",
          "joined": "fusionray joining a running Ray (`cluster.address`; RSS: driver only)",
          "sequential": "sequential loop (decode, BGR, detect, swap, encode per frame)"}




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[12.0],
                        help="clip lengths at 25 fps, one table each (e.g. 12 60)")
    parser.add_argument("--gop", type=int, default=25,
                        help="keyframe interval of the generated clip, frames (25, or 250)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the sides, A B A B")
    parser.add_argument("--in-process", action="store_true",
                        help="also time RenderStage chunk after chunk in one process, no Ray")
    parser.add_argument("--joined", action="store_true",
                        help="also time fusionray joining a Ray already running here")
    parser.add_argument("--also", action="append", default=[], metavar="OVERRIDE",
                        help="another fusionray side with this Hydra override (repeatable), "
                             "e.g. --also cluster.inline=false")
    parser.add_argument("--worker", choices=["sequential", "in-process"], help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. quality=draft")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.video, args.output, args.overrides)
        return 0

    sides = ["fusionray", *(f"fusionray {override}" for override in args.also),
             *(["joined"] if args.joined else []),
             *(["in-process"] if args.in_process else []), "sequential"]
    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import machine_line

    machine = machine_line()  # before the runs: its load average is the one they began under
    work = Path(tempfile.mkdtemp(prefix="fusionray-bench-"))
    for seconds in args.seconds:
        bench(seconds, gop=args.gop, repeats=args.repeats, sides=sides,
              overrides=args.overrides, work=work, machine=machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
