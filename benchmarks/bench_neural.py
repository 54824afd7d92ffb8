"""The neural path on CPU: fusionray against a per-frame insightface loop, same clip and models.

Two whole processes render the same clip, alternating (A B A B ...):

- fusionray: `python -m fusionray.jobs.render` with `swapper=inswapper`, BlazeFace detection
  (the config's variant), the stand-in swapper and the ArcFace-contract embedder below.
- loop: the single-process way tools do it: decode a frame (PyAV), detect (the same BlazeFace
  detector), insightface's `INSwapper.get(img, face, source_face, paste_back=True)` on the
  largest face, encode (libx264 with the config's crf and preset); ONNX Runtime with
  `--loop-threads` threads (2 by default) for the detector and the swapper.

Models: the swapper is the random-weight, cost-equivalent stand-in for inswapper_128
(`../shared/tools/build_inswapper_standin.py`: same graph shape and cost, output is noise;
about 10 s and 554 MB to build, or pass `--standin FILE` to reuse one), imported into a
temporary model cache under the `inswapper_128` name the way the tests import fixtures. The
embedder is the cost-equivalent ArcFace R50 stand-in (`benchmarks/arcface_standin.py`: the
published IResNet-50 shape, random weights): the loop embeds the one source face with it once;
fusionray also embeds the swapped faces of every `identity_every`th frame twice for run.json's
identity score, so that cost must be real here (`--recognizer fixture` gives the test suite's
near-free ArcFace-contract graph instead, which hides it). Both sides use the same files.

The clip: `--frames` frames (48) at 1280x720, 25 fps, H.264, one face (skimage's astronaut,
scaled to a 150 px face box) moving across a grey background.

The third side of each round is the model-alone floor: the stand-in's forward passes for
the clip's faces, batch 1, using every core, the faster of one after another on a session of
every core's threads and several at once on one-thread sessions (in a process of its own; its
start and the sessions' opening are not counted), i.e. the fastest any pipeline could go on
this machine with one face per frame. It is timed in every round because this
VM's speed drifts over minutes; fusionray's ratio to the floor is taken round by round.
Also printed, timed once: the batched forward at `--batch` on the freed-batch rewrite, the
recognizer's cost, and the one-time cost of freeing the batch dimension (done before the
timed runs, as a deployed model cache would have it).

    .venv/bin/python benchmarks/bench_neural.py                      # 48 frames, 2 rounds
    .venv/bin/python benchmarks/bench_neural.py --frames 6 --repeats 1 --floor-faces 1  # smoke

A benchmark, not a test; timing only (the stand-in says nothing about swap quality).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT.parent / "shared" / "tools" / "build_inswapper_standin.py"
FPS = 25
FACE_BOX = 150.0
"""Face box width of the astronaut in the clip, pixels."""




def write_clip(path: Path, *, frames: int, width: int, height: int) -> None:
    """`frames` frames of one face moving left to right (and a little down), H.264 crf 18."""
    import av
    import cv2
    import skimage.data

    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    scale = FACE_BOX / 94.0  # BlazeFace's box on the full astronaut is about 94 px wide.
    small = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    patch_height, patch_width = small.shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for index in range(frames):
            progress = index / max(frames - 1, 1)
            x0 = round(progress * (width - patch_width))
            y0 = round(progress * max(height - patch_height, 0) * 0.3)
            canvas = np.full((height, width, 3), 90, np.uint8)
            visible = canvas[y0:y0 + patch_height, x0:x0 + patch_width]
            visible[:] = small[:visible.shape[0], :visible.shape[1]]
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def prepare_models(folder: Path, standin: Path | None, builder: Path, *, recognizer: str
                   ) -> tuple[Path, float]:
    """Build (or reuse) the stand-in and import it and the embedder (`recognizer`: r50, the
    cost-equivalent stand-in, or fixture) into `folder/cache`."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.arcface_standin import build_arcface_standin
    from fusionray.models.store import import_model
    from tests.faces_fixtures import copy_blazeface_models
    from tests.onnx_fixtures import build_arcface_fixture, import_fixtures

    build_seconds = 0.0
    if standin is None:
        standin = folder / "inswapper_standin.onnx"
        started = time.perf_counter()
        subprocess.run([sys.executable, str(builder), "-o", str(standin)], check=True,
                       stdout=subprocess.DEVNULL)
        build_seconds = time.perf_counter() - started
    embedder = (build_arcface_fixture() if recognizer == "fixture"
                else build_arcface_standin().SerializeToString())
    cache = import_fixtures(folder / "fixtures", arcface_w600k_r50=embedder)
    copy_blazeface_models(cache)  # the offline cache also serves the detector and the gate
    # The stand-ins are by design not the published files: imported as accepted exports.
    import_model("inswapper_128", standin, cache_dir=cache, allow_unverified=True)
    return cache, build_seconds


def render_overrides(video: Path, source: Path, cache: Path, output: Path) -> list[str]:
    """The Hydra overrides both sides share (the loop reads its settings from them too)."""
    return [f"+video={video}", f"+source={source}", "swapper=inswapper",
            "swapper.providers=[cpu]", "detector.providers=[cpu]", f"models.cache_dir={cache}",
            "models.offline=true", "models.shared_dirs=[]", "progress=false",
            "preview_frames=0", f"output={output}"]


def compose(overrides: list[str]) -> object:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from fusionray.config import register_configs, to_render_config

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return to_render_config(hydra_compose("config", overrides=overrides))


def run_loop(overrides: list[str], threads: int) -> dict[str, float]:
    """The per-frame insightface loop, in this process (the worker side of `--worker loop`)."""
    import av
    import cv2
    import onnxruntime as ort
    from insightface.model_zoo.inswapper import INSwapper

    from fusionray.actors.stages import detector_from_config
    from fusionray.faces.align import arcface_template, face_to_template_matrix
    from fusionray.faces.embed import ArcFaceEmbedder
    from fusionray.models.loader import ModelOptions

    started = time.perf_counter()
    values = dict(item.split("=", 1) for item in overrides)
    config = compose(overrides)
    cache = Path(values["models.cache_dir"])
    detector = detector_from_config(config, threads=threads)  # type: ignore[arg-type]
    embedder = ArcFaceEmbedder(options=ModelOptions(threads=threads, cache_dir=cache,
                                                    shared_dirs=(), offline=True))
    source_image = cv2.imread(values["+source"], cv2.IMREAD_COLOR)
    if source_image is None:
        raise SystemExit(f"Cannot read the source image {values['+source']}")
    source_face = max(detector.detect(source_image), key=lambda face: face.area)
    source = SimpleNamespace(normed_embedding=embedder.embed(source_image, [source_face])[0])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    model_file = str(cache / "inswapper_128.onnx")
    session = ort.InferenceSession(model_file, sess_options=options,
                                   providers=["CPUExecutionProvider"])
    swapper = INSwapper(model_file=model_file, session=session)
    template = np.hstack([arcface_template(128), np.ones((5, 1))])
    encode = config.encode  # type: ignore[attr-defined]
    loaded = time.perf_counter()
    frames = swapped = 0
    with av.open(values["+video"]) as source_container, \
            av.open(values["output"], "w") as output:
        video = source_container.streams.video[0]
        stream = output.add_stream("libx264", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.options = {"crf": str(encode.crf), "preset": encode.preset}
        for frame in source_container.decode(video):
            image = frame.to_ndarray(format="bgr24")
            faces = detector.detect(image)
            if faces:
                face = max(faces, key=lambda found: found.area)
                # insightface aligns from 5 ArcFace points; BlazeFace has 4 of them. The 5
                # points that fusionray's fit maps onto the template give insightface the same
                # alignment.
                to_frame = cv2.invertAffineTransform(face_to_template_matrix(face, 128))
                target = SimpleNamespace(kps=(template @ to_frame.T).astype(np.float32))
                image = swapper.get(image, target, source, paste_back=True)
                swapped += 1
            out = av.VideoFrame.from_ndarray(np.ascontiguousarray(image, dtype=np.uint8),
                                             format="bgr24")
            out.pts, out.time_base = frame.pts, frame.time_base
            output.mux(stream.encode(out))
            frames += 1
        output.mux(stream.encode(None))
    return {"frames": frames, "swapped": swapped, "load_seconds": loaded - started,
            "loop_seconds": time.perf_counter() - loaded}


def run_floor(cache: Path, faces: int) -> dict[str, float]:
    """The model-alone floor, in this process (the worker side of `--worker floor`): the
    stand-in's forward passes for `faces` faces at batch 1 using every core, timed two ways
    (opening the sessions is not timed): one after another on a session of every core's
    threads, and as many at once as there are cores on a one-thread session (what fusionray's
    `RowCalls` does on CPU). The floor is the faster."""
    from concurrent.futures import ThreadPoolExecutor

    from fusionray.models.session import open_session

    cores = len(os.sched_getaffinity(0))
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((1, 512)).astype(np.float32)
    feeds = {"target": rng.random((1, 3, 128, 128), dtype=np.float32),
             "source": latent / np.linalg.norm(latent)}
    result: dict[str, float] = {"faces": faces}
    for label, threads, workers in (("threads", cores, 1), ("rows", 1, cores)):
        run = open_session(cache / "inswapper_128.onnx", providers=("cpu",), threads=threads,
                           graph_cache=cache / "ort-cpu").session.run
        run(None, feeds)  # Warm-up: first-call allocations.
        with ThreadPoolExecutor(workers) as pool:
            started = time.perf_counter()
            list(pool.map(lambda _, run=run: run(None, feeds), range(faces)))
            result[label] = time.perf_counter() - started
        del run
    result["seconds"] = min(result["threads"], result["rows"])
    return result


def timed_process(command: list[str], *, env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of a whole child process (which must succeed), and its stdout."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return seconds, result.stdout


def model_floor(cache: Path, *, faces: int, batch: int) -> dict[str, float | str]:
    """Seconds per face of the stand-in alone on every core: batch 1, and batched."""
    from fusionray.models.batch import open_batched_runner, plan_dynamic_batch
    from fusionray.models.loader import ModelOptions
    from fusionray.models.session import create_session

    threads = len(os.sched_getaffinity(0))
    started = time.perf_counter()
    plan = plan_dynamic_batch("inswapper_128", cache / "inswapper_128.onnx", cache_dir=cache,
                              threads=threads)
    # The graph ORT optimises for this CPU is kept in the model cache (`ort-cpu/`) by the
    # first session that opens it, as on a node that has rendered before.
    open_batched_runner("inswapper_128", ModelOptions(
        threads=threads, cache_dir=cache, shared_dirs=(), offline=True, allow_unverified=True))
    result: dict[str, float | str] = {"rewrite_seconds": time.perf_counter() - started,
                                      "batch_note": plan.note or ""}
    rng = np.random.default_rng(0)
    for label, path, size in (("batch1", cache / "inswapper_128.onnx", 1),
                              ("batched", plan.path, batch if plan.batchable else 1)):
        session, _ = create_session(path, providers=("cpu",), threads=threads)
        target = rng.random((size, 3, 128, 128), dtype=np.float32)
        latent = rng.standard_normal((size, 512)).astype(np.float32)
        latent /= np.linalg.norm(latent, axis=1, keepdims=True)
        feeds = {"target": target, "source": latent}
        session.run(None, feeds)  # Warm-up: first-call allocations.
        calls = max(1, -(-faces // size))
        started = time.perf_counter()
        for _ in range(calls):
            session.run(None, feeds)
        result[label] = (time.perf_counter() - started) / (calls * size)
        result[f"{label}_size"] = size
        del session
    # The identity score's cost: two recognizer passes a scored face (before and after).
    session, _ = create_session(cache / "arcface_w600k_r50.onnx", providers=("cpu",),
                                threads=threads)
    crops = {"input.1": rng.random((2, 3, 112, 112), dtype=np.float32)}
    session.run(None, crops)
    started = time.perf_counter()
    for _ in range(faces):
        session.run(None, crops)
    result["identity_pair"] = (time.perf_counter() - started) / faces
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48, help="clip length in frames")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (fusionray, loop)")
    parser.add_argument("--loop-threads", type=int, default=2, help="ORT threads of the loop")
    parser.add_argument("--floor-faces", type=int, default=8, help="faces timed for the floor")
    parser.add_argument("--batch", type=int, default=8, help="batch of the batched floor")
    parser.add_argument("--standin", type=Path, default=None,
                        help="an already built stand-in .onnx (default: build one)")
    parser.add_argument("--builder", type=Path, default=STANDIN, help="stand-in builder script")
    parser.add_argument("--recognizer", choices=["r50", "fixture"], default="r50",
                        help="the embedder: the ArcFace R50 cost stand-in, or the suite's "
                             "near-free contract fixture")
    parser.add_argument("--also", action="append", default=[], metavar="OVERRIDE",
                        help="another fusionray side with this Hydra override (repeatable), "
                             "e.g. --also identity_every=1")
    parser.add_argument("--worker", choices=["loop", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.worker == "loop":
        print(json.dumps(run_loop(args.overrides, args.loop_threads)))
        return
    if args.worker == "floor":
        print(json.dumps(run_floor(Path(args.overrides[0]), args.frames)))
        return

    import cv2
    import skimage.data

    from benchmarks.machine import machine_line

    print(machine_line())
    frames = args.frames
    with tempfile.TemporaryDirectory(prefix="fusionray-neural-") as scratch:
        folder = Path(scratch)
        cache, build_seconds = prepare_models(folder, args.standin, args.builder,
                                              recognizer=args.recognizer)
        video = folder / "clip.mp4"
        write_clip(video, frames=args.frames, width=args.width, height=args.height)
        source = folder / "source.png"
        cv2.imwrite(str(source), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
        floor = model_floor(cache, faces=args.floor_faces, batch=args.batch)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        extra = {f"fusionray {override}": override for override in args.also}
        times: dict[str, list[float]] = {name: [] for name in ("fusionray", *extra, "loop",
                                                                "floor")}
        run_json: dict[str, object] = {}
        this_file = str(Path(__file__).resolve())
        for round_index in range(args.repeats):
            for side, name in enumerate(times):
                output = folder / f"side{side}-{round_index}.mp4"
                overrides = render_overrides(video, source, cache, output)
                if name == "loop":
                    command = [sys.executable, this_file, "--worker", "loop", "--loop-threads",
                               str(args.loop_threads), "--", *overrides]
                elif name == "floor":
                    command = [sys.executable, this_file, "--worker", "floor", "--frames",
                               str(frames), "--", str(cache)]
                else:
                    command = [sys.executable, "-m", "fusionray.jobs.render", *overrides,
                               *([extra[name]] if name in extra else []),
                               f"hydra.run.dir={folder / f'hydra-{side}-{round_index}'}"]
                seconds, stdout = timed_process(command, env=env)
                detail = ""
                if name == "fusionray":
                    run_json = json.loads(output.with_suffix(".run.json").read_text())
                if name == "loop":
                    info = json.loads(stdout.strip().splitlines()[-1])
                    detail = (f" (load {info['load_seconds']:.1f} s, {info['swapped']}/"
                              f"{info['frames']} frames swapped)")
                if name == "floor":
                    # The floor is the model's own time: its process's start and the
                    # sessions' opening are not part of it.
                    info = json.loads(stdout.strip().splitlines()[-1])
                    detail = (f" (the faster of: {info['threads']:.1f} s one after another on "
                              f"{len(os.sched_getaffinity(0))} threads, {info['rows']:.1f} s "
                              f"several at once on one thread each)")
                    seconds = float(info["seconds"])
                times[name].append(seconds)
                print(f"round {round_index + 1} {name:24s} {seconds:7.1f} s{detail}",
                      flush=True)

    fusionray_s = statistics.median(times["fusionray"])
    loop_s = statistics.median(times["loop"])
    print()
    print(f"clip: {frames} frames {args.width}x{args.height}, one face; stand-in built in "
          f"{build_seconds:.1f} s; batch rewrite + check + CPU graph optimisation (once per model "
          f"file and machine) "
          f"{float(floor['rewrite_seconds']):.1f} s {floor['batch_note']}")
    print(f"{'path':44s} {'seconds':>9s} {'frames/s':>9s} {'vs loop':>8s}")
    rows = [("fusionray (whole process, median)", fusionray_s),
            *((f"{name} (median)", statistics.median(times[name])) for name in extra),
            (f"insightface loop, {args.loop_threads} ORT threads (median)", loop_s),
            ("model alone, all cores, batch 1 (median)", statistics.median(times["floor"])),
            (f"model alone, all cores, batch {floor['batched_size']} (once)",
             float(floor["batched"]) * frames)]
    for label, seconds in rows:
        print(f"{label:44s} {seconds:9.1f} {frames / seconds:9.2f} {loop_s / seconds:7.2f}x")
    if run_json:
        # Where fusionray's wall went (last round): stage seconds are busy seconds of steps
        # that overlap on the actor's threads, so they add up to more than the wall.
        stages = dict(run_json.get("stage_seconds", {}))  # type: ignore[call-overload]
        print(f"fusionray last round: wall {run_json['wall_seconds']} s in the job, actors "
              f"{run_json['actors']}, threads {run_json['actor_threads']}, notes "
              f"{run_json.get('notes') or 'none'}")
        print("fusionray stage seconds: " + ", ".join(
            f"{key} {float(value):.1f}" for key, value in sorted(stages.items())))
    pair = float(floor["identity_pair"])
    print(f"recognizer ({args.recognizer}): two embeddings (one identity-scored face) "
          f"{pair * 1000:.1f} ms, {pair / float(floor['batch1']):.1%} of a batch-1 swap")
    # The floor is timed in every round beside the renders: this VM's speed drifts by 10-15 %
    # over minutes, so a floor timed once at the start would skew the ratio.
    batched_gain = float(floor["batched"]) / float(floor["batch1"])
    for name in (name for name in times if name not in ("loop", "floor")):
        seconds = statistics.median(times[name])
        ratios = [run / floor_run
                  for run, floor_run in zip(times[name], times["floor"], strict=True)]
        print(f"{name} is {loop_s / seconds:.2f}x the loop and takes "
              f"{statistics.median(ratios):.3f}x the model-alone floor of its round (median; "
              f"rounds {', '.join(f'{ratio:.3f}' for ratio in ratios)})")
    print(f"batch {floor['batched_size']} costs {batched_gain:.3f}x batch 1 a face (timed once): "
          f"the floor is batch 1{'' if batched_gain >= 1 else ', although batching is faster'}")
    print("runs: " + "; ".join(f"{name} {[round(t, 1) for t in runs]}"
                               for name, runs in times.items()))


if __name__ == "__main__":
    main()
