"""GPU node benchmark: the swapper model alone, and fusionray end to end against the loop.

One command on a GPU node (written for one H100/H200 and 16 cores), from a clean checkout
with the project's .venv:

    .venv/bin/python benchmarks/bench_gpu.py [--budget 480] [--frames 450]

Phases, each with its share of the time budget (a phase that would overrun is skipped with a
note, never run over):

1. build the cost-equivalent inswapper stand-in, fp32 and fp16, with a dynamic batch
   (`../shared/tools/build_inswapper_standin.py --dynamic-batch [--fp16]`), and import them
   into a private model cache as `inswapper_128` / `inswapper_128_fp16`;
2. model faces/s at batch 1/8/32 through fusionray's own session factory and device-resident
   runner: CUDA fp32, CUDA fp16, TensorRT fp16 (the engine build is capped, and its engine
   and timing cache land in the private cache, where phase 4's actors find them);
3. a 1080p clip with one moving face (the astronaut photograph under a panning, zooming
   camera);
4. fusionray end to end (local Ray on this node, swap actors sharing the GPU) and the
   sequential loop (decode -> detect -> swap -> encode in one process, same engine code):
   frames/s, GPU utilisation sampled with nvidia-smi, CPU seconds per stage.

The swapper weights are random (timing only). The recognizer is the cost-equivalent ArcFace
R50 stand-in (`benchmarks/arcface_standin.py`): it embeds the source once per job, and the
swapped faces of every `identity_every`th frame twice for the identity score. Faces are found
by BlazeFace, which must be in the model cache or a `--shared-models` folder
on a node without network. Every figure is printed as a Markdown table naming the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT.parent / "shared" / "tools" / "build_inswapper_standin.py"
PHASES = ("build", "model", "clip", "render")


# ------------------------------------------------------------------------------ arguments

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (also the workers' hidden one)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds for the whole run (default 480 = 8 minutes)")
    parser.add_argument("--frames", type=int, default=450, help="frames in the 1080p clip")
    parser.add_argument("--width", type=int, default=1920, help="clip width")
    parser.add_argument("--height", type=int, default=1080, help="clip height")
    parser.add_argument("--fps", type=int, default=30, help="clip frame rate")
    parser.add_argument("--batches", type=_int_list, default=(1, 8, 32),
                        help="comma-separated batch sizes for the model table")
    parser.add_argument("--seconds-per-point", type=float, default=3.0,
                        help="timed seconds per (provider, batch) point")
    parser.add_argument("--trt-build-cap", type=float, default=240.0,
                        help="seconds the TensorRT engine build may take before it is skipped")
    parser.add_argument("--trt-level", type=int, default=3,
                        help="TensorRT builder optimisation level (0-5; lower builds faster)")
    parser.add_argument("--swap-actors", type=int, default=4,
                        help="swap actors sharing the GPU in the fusionray run")
    parser.add_argument("--skip", type=_name_list, default=(),
                        help=f"phases to skip, comma-separated: {', '.join(PHASES)}")
    parser.add_argument("--work", type=Path, default=None,
                        help="work folder (default: a temporary one, removed at the end)")
    parser.add_argument("--shared-models", type=Path, default=None,
                        help="read-only folder holding the BlazeFace files (offline nodes)")
    parser.add_argument("--standin", type=Path, default=STANDIN, help="stand-in builder script")
    parser.add_argument("--worker", choices=("model", "render"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.skip) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) in --skip: {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(PHASES)}")
    if args.frames < 1 or args.budget <= 0 or args.seconds_per_point <= 0:
        parser.error("--frames, --budget and --seconds-per-point must be positive")
    if any(b < 1 for b in args.batches):
        parser.error(f"--batches must be positive, got {args.batches}")
    return args


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}"
                                         ) from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# ------------------------------------------------------------------------------ budget

@dataclass
class Budget:
    """Seconds left for the run; phases ask for a cap and are skipped when it is too small."""

    total: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.total - (time.monotonic() - self.started)

    def cap(self, wanted: float, *, reserve: float = 0.0) -> float:
        """At most `wanted` seconds, leaving `reserve` for the phases after this one."""
        return max(0.0, min(wanted, self.left() - reserve))


# ------------------------------------------------------------------------------ tables

def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
                 *, align: Sequence[str] | None = None) -> str:
    """A Markdown table; numbers right-aligned unless `align` says otherwise ('l'/'r')."""
    def cell(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    if align is None:
        align = ["r" if rows and all(isinstance(r[i], (int, float)) or r[i] is None
                                     for r in rows) else "l" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in text_rows]
    return "\n".join(lines)


def model_table(results: Sequence[dict[str, Any]], batches: Sequence[int]) -> str:
    """faces/s per (provider, precision) row and batch column, with the session start time."""
    rows = []
    for result in results:
        by_batch = {point["batch"]: point for point in result.get("points", [])}
        rows.append([result["label"], result.get("provider") or "—",
                     *[by_batch[b]["faces_per_second"] if b in by_batch else None
                       for b in batches],
                     result.get("open_seconds"), result.get("note", "")])
    return format_table(["model run", "ran on", *[f"faces/s @ b{b}" for b in batches],
                         "session start s", "note"], rows,
                        align=["l", "l", *["r"] * len(batches), "r", "l"])


# ------------------------------------------------------------------------------ clip

def moving_face_frames(width: int, height: int, frames: int) -> Iterator[Any]:
    """BGR frames (height, width, 3) uint8 of the astronaut under a camera that pans across,
    zooms in by 30 % and rolls ±4 degrees: one face, about 0.4 x the frame height, moving."""
    import cv2
    import numpy as np
    import skimage.data

    world = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    # Face centre in astronaut() pixels is about (210, 110) and the face about 140 px tall.
    for index in range(frames):
        t = index / max(1, frames - 1)
        centre = (190.0 + 60.0 * t, 140.0 - 20.0 * math.sin(math.pi * t))
        zoom = (0.4 * height / 140.0) * (1.0 + 0.3 * t)
        matrix = cv2.getRotationMatrix2D(centre, 4.0 * math.sin(2 * math.pi * t), zoom)
        # The face drifts from the left third to the right third of the frame.
        matrix[0, 2] += width * (0.35 + 0.3 * t) - centre[0]
        matrix[1, 2] += height * 0.5 - centre[1]
        yield np.ascontiguousarray(cv2.warpAffine(world, matrix, (width, height),
                                                  flags=cv2.INTER_LINEAR,
                                                  borderMode=cv2.BORDER_REFLECT))


def write_clip(path: Path, *, width: int, height: int, frames: int, fps: int) -> Path:
    """Encode the moving-face clip as H.264 yuv420p (GOP = 2 s) in MP4."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "g": str(2 * fps)}
        for image in moving_face_frames(width, height, frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ------------------------------------------------------------------------------ sampling

class GpuSampler:
    """nvidia-smi utilisation and memory every 200 ms, in a background process."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.marks: list[tuple[str, float, float]] = []
        self._process: subprocess.Popen[str] | None = None
        smi = shutil.which("nvidia-smi")
        if smi:
            self._process = subprocess.Popen(
                [smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            parts = [p.strip() for p in line.split(",")]
            with contextlib.suppress(ValueError, IndexError):
                self.samples.append((time.monotonic(), float(parts[0]), float(parts[1])))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.marks.append((name, started, time.monotonic()))

    def summary(self, name: str) -> tuple[float | None, float | None, float | None]:
        """(mean %, max %, max memory MiB) over the named phase; None without samples."""
        for mark, start, stop in self.marks:
            if mark == name:
                window = [s for s in self.samples if start <= s[0] <= stop]
                if window:
                    utils = [s[1] for s in window]
                    return sum(utils) / len(utils), max(utils), max(s[2] for s in window)
        return None, None, None

    def close(self) -> None:
        if self._process is not None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)


class TreeCpu:
    """CPU seconds of this process and every process it started (Ray's raylet, workers),
    sampled so processes that exit before the end still count."""

    def __init__(self, interval: float = 0.5) -> None:
        import psutil

        self._psutil = psutil
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        me = self._psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            with contextlib.suppress(self._psutil.Error):
                times = process.cpu_times()
                self._seen[process.pid] = times.user + times.system

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._sample()

    def total(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(self._seen.values())


# ------------------------------------------------------------------------------ workers

def model_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one (provider, model) at each batch through fusionray's session factory."""
    import numpy as np

    from fusionray.config import GpuConfig
    from fusionray.models.session import SessionRunner, open_session

    settings = GpuConfig(tensorrt_batch_opt=spec["batch_opt"], tensorrt_batch_max=spec["batch_max"],
                         tensorrt_builder_level=spec["trt_level"])
    started = time.perf_counter()
    opened = open_session(Path(spec["model"]), providers=(spec["provider"],), threads=2,
                          fallback_to_cpu=False, gpu=settings,
                          engine_root=Path(spec["engine_root"]), fp16=spec["fp16"])
    open_seconds = time.perf_counter() - started
    runner = SessionRunner(opened)
    rng = np.random.default_rng(0)
    points = []
    for batch in spec["batches"]:
        target = rng.random((batch, 3, 128, 128), dtype=np.float32)
        source = rng.standard_normal((batch, 512)).astype(np.float32)
        source /= np.linalg.norm(source, axis=1, keepdims=True)
        for _ in range(3):
            runner.run(target, source)  # Warm-up: kernels chosen, buffers bound.
        calls, began = 0, time.perf_counter()
        while calls < 5 or time.perf_counter() - began < spec["seconds"]:
            runner.run(target, source)
            calls += 1
        elapsed = time.perf_counter() - began
        points.append({"batch": batch, "faces_per_second": batch * calls / elapsed,
                       "ms_per_call": 1000 * elapsed / calls})
    return {"provider": opened.label, "open_seconds": open_seconds, "points": points}


def render_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One end-to-end run: fusionray's Ray pipeline, or the sequential loop."""
    sys.path.insert(0, str(ROOT))
    from hydra import compose, initialize_config_dir

    from fusionray.config import register_configs, to_render_config

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = to_render_config(compose(config_name="config", overrides=spec["overrides"]))
    cpu = TreeCpu()
    started = time.perf_counter()
    if spec["mode"] == "fusionray":
        from fusionray.jobs.pipeline import render

        summary = render(config, run_dir=Path(spec["work"]), config_yaml="")
        stages = dict(summary.stage_seconds)
        providers = list(summary.providers)
    else:
        stages, providers = sequential_loop(config)
    wall = time.perf_counter() - started
    return {"wall": wall, "cpu_seconds": cpu.total(), "stages": stages, "providers": providers}


def sequential_loop(config: Any) -> tuple[dict[str, float], list[str]]:
    """decode -> detect -> select -> swap -> encode, frame by frame, in this process; CPU
    seconds (all threads of the process) per stage."""
    from fusionray.actors.stages import detector_from_config, swapper_from_config
    from fusionray.faces.select import select_faces
    from fusionray.jobs.pipeline import build_source_identity, resolve_inputs
    from fusionray.media.assemble import assemble_video
    from fusionray.media.decode import decode_frames
    from fusionray.media.encode import build_encoder_settings, encode_segment
    from fusionray.media.probe import probe_video

    video, sources = resolve_inputs(config)
    info = probe_video(video)
    detector = detector_from_config(config, threads=os.cpu_count() or 1)
    source, _ = build_source_identity(config, sources, detector)
    swapper = swapper_from_config(config, threads=os.cpu_count() or 1)
    settings = build_encoder_settings(
        codec=config.encode.codec, crf=config.encode.crf, preset=config.encode.preset,
        pix_fmt=config.encode.pix_fmt, lossless=config.encode.lossless,
        width=info.width, height=info.height)
    cpu = dict.fromkeys(("decode", "detect", "swap", "encode"), 0.0)

    def frames() -> Iterator[Any]:
        clock = time.process_time()
        for _, frame in decode_frames(info, 0, info.frame_count):
            now = time.process_time()
            cpu["decode"] += now - clock
            faces = select_faces(detector.detect(frame), config.selection)
            detected = time.process_time()
            cpu["detect"] += detected - now
            if faces:
                frame = swapper.swap(frame, faces, source)
            clock = time.process_time()
            cpu["swap"] += clock - detected
            yield frame

    with tempfile.TemporaryDirectory() as work:
        segment = Path(work) / "all.segment"
        began = time.process_time()
        encode_segment(frames(), pts=info.frame_pts, info=info, settings=settings, path=segment)
        cpu["encode"] = time.process_time() - began - cpu["decode"] - cpu["detect"] - cpu["swap"]
        assemble_video(info, [segment], Path(config.output))
    providers = [f"{detector.name}:{detector.provider}",
                 f"{swapper.name}:{getattr(swapper, 'provider', 'none')}"]
    return cpu, providers


def run_worker(kind: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run a worker in a child process (so a phase can be cut off at its cap)."""
    if timeout < 5:
        return {"note": "skipped: no time left in the budget"}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
               "--worker-args", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"note": f"skipped: did not finish within its {timeout:.0f} s cap"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"note": f"failed: {tail[:160]}"}
    return dict(json.loads(lines[-1]))


# ------------------------------------------------------------------------------ main



def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker_args)
        worker = model_worker if args.worker == "model" else render_worker
        print(json.dumps(worker(spec)))
        return 0

    budget = Budget(args.budget)
    work = args.work or Path(tempfile.mkdtemp(prefix="fusionray-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    notes: list[str] = []
    sampler = GpuSampler()
    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import machine_line

    print(machine_line(), flush=True)
    try:
        models = build_phase(args, budget, work, cache, notes)
        model_results = model_phase(args, budget, cache, models, notes, sampler)
        clip = clip_phase(args, budget, work, notes)
        render_results = render_phase(args, budget, work, cache, clip, models, model_results,
                                      notes, sampler)
    finally:
        sampler.close()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(model_table(model_results, args.batches))
    print()
    print(render_table(render_results, args.frames, sampler))
    print()
    print(stage_table(render_results))
    mean, peak, memory = sampler.summary("model")
    if mean is not None:
        notes.append(f"model phase GPU utilisation: mean {mean:.0f} %, max {peak:.0f} %, "
                     f"memory max {memory:.0f} MiB")
    for note in notes:
        print(f"- {note}")
    print(f"- total {budget.total - budget.left():.0f} s of the {budget.total:.0f} s budget")
    return 0


def build_phase(args: argparse.Namespace, budget: Budget, work: Path, cache: Path,
                notes: list[str]) -> dict[str, Path]:
    """Build both stand-ins in parallel and import them into the private cache."""
    if "build" in args.skip:
        notes.append("build: skipped (--skip); using stand-ins already in the work cache")
        return {name: path for name in ("inswapper_128", "inswapper_128_fp16")
                for path in cache.glob(f"**/{name}.onnx")}
    from fusionray.models.store import import_model

    cap = budget.cap(120.0, reserve=240.0)
    started = time.perf_counter()
    jobs = {name: subprocess.Popen([sys.executable, str(args.standin), "--dynamic-batch",
                                    "-o", str(work / f"{name}.standin.onnx"), *flags],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for name, flags in (("inswapper_128", []), ("inswapper_128_fp16", ["--fp16"]))}
    models: dict[str, Path] = {}
    for name, job in jobs.items():
        try:
            job.wait(timeout=max(1.0, cap - (time.perf_counter() - started)))
        except subprocess.TimeoutExpired:
            job.kill()
            notes.append(f"build: {name} stand-in not built within {cap:.0f} s")
            continue
        if job.returncode != 0:
            notes.append(f"build: {name} stand-in failed")
            continue
        file = work / f"{name}.standin.onnx"
        models[name] = import_model(name, file, cache_dir=cache, allow_unverified=True)
        file.unlink()
    notes.append(f"build: stand-ins built and imported in {time.perf_counter() - started:.0f} s")
    return models


def model_phase(args: argparse.Namespace, budget: Budget, cache: Path,
                models: dict[str, Path], notes: list[str],
                sampler: GpuSampler) -> list[dict[str, Any]]:
    """CUDA fp32, CUDA fp16 and TensorRT fp16 faces/s at each batch."""
    runs = [("CUDA fp32", "cuda", "inswapper_128", False),
            ("CUDA fp16", "cuda", "inswapper_128_fp16", False),
            ("TensorRT fp16", "tensorrt", "inswapper_128_fp16", True)]
    results = []
    if "model" in args.skip:
        return [{"label": label, "note": "skipped (--skip)"} for label, *_ in runs]
    timed = args.seconds_per_point * len(args.batches) + 30
    with sampler.phase("model"):
        for label, provider, name, fp16 in runs:
            if name not in models:
                results.append({"label": label, "note": f"skipped: no {name} stand-in"})
                continue
            wanted = timed + (args.trt_build_cap if provider == "tensorrt" else 30)
            spec = {"model": str(models[name]), "provider": provider, "fp16": fp16,
                    "batches": list(args.batches), "seconds": args.seconds_per_point,
                    "batch_opt": min(8, max(args.batches)),
                    "batch_max": max(args.batches), "trt_level": args.trt_level,
                    "engine_root": str(cache / "tensorrt")}
            result = run_worker("model", spec, budget.cap(wanted, reserve=150.0))
            results.append({"label": label, **result})
    return results


def clip_phase(args: argparse.Namespace, budget: Budget, work: Path,
               notes: list[str]) -> Path | None:
    if "clip" in args.skip or "render" in args.skip:
        return None
    # About 40 ms a 1080p frame on one core for warp + encode; skip rather than overrun.
    needed = args.frames * args.width * args.height / (1920 * 1080) * 0.04
    if budget.cap(needed * 2, reserve=min(90.0, budget.left() / 3)) < needed:
        notes.append(f"clip: skipped, {needed:.0f} s needed and the budget is spent")
        return None
    started = time.perf_counter()
    clip = write_clip(work / "clip.mp4", width=args.width, height=args.height,
                      frames=args.frames, fps=args.fps)
    notes.append(f"clip: {args.frames} frames {args.width}x{args.height} written in "
                 f"{time.perf_counter() - started:.0f} s")
    return clip


def render_phase(args: argparse.Namespace, budget: Budget, work: Path, cache: Path,
                 clip: Path | None, models: dict[str, Path],
                 model_results: list[dict[str, Any]], notes: list[str],
                 sampler: GpuSampler) -> dict[str, dict[str, Any]]:
    if clip is None or "inswapper_128_fp16" not in models:
        notes.append("render: skipped (" + ("no clip" if clip is None else
                                            "no fp16 stand-in") + ")")
        return {}
    sys.path.insert(0, str(ROOT))
    from benchmarks.arcface_standin import build_arcface_standin
    from fusionray.media.demo import demo_source_image_path
    from fusionray.models.store import import_model

    embedder = work / "arcface_r50_standin.onnx"
    embedder.write_bytes(build_arcface_standin().SerializeToString())
    import_model("arcface_w600k_r50", embedder, cache_dir=cache, allow_unverified=True)
    trt_ok = any(r["label"] == "TensorRT fp16" and r.get("points") for r in model_results)
    providers = "[tensorrt,cuda,cpu]" if trt_ok else "[cuda,cpu]"
    if not trt_ok:
        notes.append("render: TensorRT had no engine from the model phase; the render uses CUDA")
    cpus = os.cpu_count() or 1
    actors = max(1, args.swap_actors)
    common = [f"+video={clip}", f"+source={demo_source_image_path()}", "progress=false",
              "preview_frames=0", "export_faces=false", "swapper=inswapper", "swapper.fp16=true",
              f"swapper.providers={providers}", "detector=blazeface", "selection.mode=one",
              f"models.cache_dir={cache}", "models.offline=true",
              # The model phase's TensorRT engine is keyed on this profile: the actors reuse it.
              f"gpu.tensorrt_batch_opt={min(8, max(args.batches))}",
              f"gpu.tensorrt_batch_max={max(args.batches)}",
              f"gpu.tensorrt_builder_level={args.trt_level}",
              *([f"models.shared_dirs=[{args.shared_models}]"] if args.shared_models else [])]
    fusionray = [*common, f"output={work / 'fusionray.mp4'}", f"cluster.num_cpus={cpus}",
                 "cluster.num_gpus=1", "cluster.detect.replicas=1", "cluster.detect.num_gpus=0",
                 f"cluster.swap.replicas={actors}", f"cluster.swap.num_gpus={1 / actors:.4f}",
                 f"cluster.swap.num_cpus={max(1, (cpus - 1) // actors)}",
                 f"cluster.max_chunks_in_flight={2 * actors}"]
    sequential = [*common, f"output={work / 'sequential.mp4'}"]
    results: dict[str, dict[str, Any]] = {}
    for name, overrides, reserve in (("fusionray", fusionray, 60.0), ("sequential", sequential,
                                                                      0.0)):
        with sampler.phase(name):
            results[name] = run_worker("render", {"mode": name, "overrides": overrides,
                                                  "work": str(work)},
                                       budget.cap(budget.left(), reserve=reserve))
    return results


def render_table(results: dict[str, dict[str, Any]], frames: int, sampler: GpuSampler) -> str:
    rows = []
    for name in ("fusionray", "sequential"):
        result = results.get(name, {"note": "skipped"})
        wall = result.get("wall")
        mean, peak, memory = sampler.summary(name)
        rows.append([name, wall, frames / wall if wall else None, result.get("cpu_seconds"),
                     mean, peak, memory, "; ".join(result.get("providers", [])) or
                     result.get("note", "")])
    table = format_table(["end to end", "wall s", "frames/s", "CPU s (all processes)",
                          "GPU util mean %", "GPU util max %", "GPU mem max MiB", "providers"],
                         rows, align=["l", "r", "r", "r", "r", "r", "r", "l"])
    ours, loop = results.get("fusionray", {}).get("wall"), results.get("sequential", {}).get("wall")
    if ours and loop:
        table += f"\n\nfusionray / sequential: {loop / ours:.2f}x"
    return table


def stage_table(results: dict[str, dict[str, Any]]) -> str:
    """fusionray's actor seconds per stage (run.json) beside the loop's CPU seconds."""
    ours = results.get("fusionray", {}).get("stages", {})
    loop = results.get("sequential", {}).get("stages", {})
    names = ["decode", "detect", "swap", "encode"]
    rows = [[stage,
             (ours.get(f"detect_{stage}", 0.0) + ours.get(f"swap_{stage}", 0.0)
              if stage == "decode" else ours.get(stage)) if ours else None,
             loop.get(stage)] for stage in names]
    rows += [[stage, ours.get(stage), None] for stage in sorted(ours)
             if stage not in names and not stage.endswith("_decode")]
    return format_table(["stage", "fusionray actor s (run.json)", "sequential CPU s"], rows,
                        align=["l", "r", "r"])


if __name__ == "__main__":
    sys.exit(main())
