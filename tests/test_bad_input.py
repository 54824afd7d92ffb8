"""Bad input: a one-line error naming the problem and the path, a non-zero exit, the input
untouched and nothing at the output path. Each case fails before Ray starts.

A truncated MP4 fails (it is not rendered in part): cut with its index at the end, it is not a
readable file; cut with its index at the front (faststart), the index names frames the file no
longer holds. Unusual inputs that do render are in `tests/test_input_corpus.py`."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data

from fusionray.media.demo import demo_source_image_path
from tests.clips import write_clip

ROOT = Path(__file__).resolve().parents[1]


def run_render(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fusionray.jobs.render", *args, "progress=false",
         f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000, layout="mono")
        for index in range(20):
            samples = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, index * 1024, Fraction(1, 48000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def remux(source: Path, target: Path, **options: str) -> Path:
    with av.open(str(source)) as inp, av.open(str(target), "w", options=options) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return target


def blank_image(path: Path) -> Path:
    cv2.imwrite(str(path), np.full((256, 256, 3), 128, np.uint8))
    return path


def _case(tmp_path: Path, name: str) -> tuple[list[str], str, Path]:
    """(arguments, expected message fragment, the path the message must name)."""
    good_video = tmp_path / "good.mp4"
    face = str(demo_source_image_path())
    output = tmp_path / "out" / "result.mp4"
    if name == "missing-video":
        path = tmp_path / "nope.mp4"
        return [f"+video={path}", f"+source={face}", f"output={output}"], "not found", path
    if name == "not-a-video":
        path = tmp_path / "random.mp4"
        path.write_bytes(np.random.default_rng(0).bytes(50_000))
        return [f"+video={path}", f"+source={face}", f"output={output}"], "video", path
    if name == "no-video-stream":
        path = write_audio_only(tmp_path / "sound.m4a")
        return [f"+video={path}", f"+source={face}", f"output={output}"], "No video stream", path
    if name == "zero-byte":
        path = tmp_path / "empty.mp4"
        path.write_bytes(b"")
        return [f"+video={path}", f"+source={face}", f"output={output}"], "video", path
    if name == "still-image":
        path = blank_image(tmp_path / "picture.png")
        return [f"+video={path}", f"+source={face}", f"output={output}"], "still image", path
    write_clip(good_video, frames=10)
    if name in ("truncated-mp4", "truncated-faststart-mp4"):
        full = write_clip(tmp_path / "full.mp4", frames=60)
        if name == "truncated-faststart-mp4":
            full = remux(full, tmp_path / "faststart.mp4", movflags="faststart")
        data = full.read_bytes()
        path = tmp_path / "cut.mp4"
        path.write_bytes(data[: len(data) // 2])
        fragment = "truncated" if "faststart" in name else "Not a readable video"
        return [f"+video={path}", f"+source={face}", f"output={output}"], fragment, path
    if name == "source-without-face":
        path = blank_image(tmp_path / "wall.png")
        return [f"+video={good_video}", f"+source={path}", f"output={output}"], "No face", path
    if name == "source-is-a-cat":
        # skimage's cat: BlazeFace calls its head a face; the source gate must refuse it.
        path = tmp_path / "chelsea.png"
        cv2.imwrite(str(path), cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
        return ([f"+video={good_video}", f"+source={path}", f"output={output}"],
                "No usable human face", path)
    if name == "missing-source":
        path = tmp_path / "ghost.jpg"
        return [f"+video={good_video}", f"+source={path}", f"output={output}"], "not found", path
    if name == "unwritable-output-folder":
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where a folder should be")
        path = blocker / "renders"
        output = path / "result.mp4"
        return ([f"+video={good_video}", f"+source={face}", f"output={output}"],
                "not writable", path)
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name",
    ["missing-video", "not-a-video", "zero-byte", "still-image", "truncated-mp4",
     "truncated-faststart-mp4", "no-video-stream", "source-without-face", "source-is-a-cat",
     "missing-source", "unwritable-output-folder"],
)
def test_bad_input_fails_cleanly(tmp_path: Path, name: str) -> None:
    args, fragment, named = _case(tmp_path, name)
    inputs = {p: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in tmp_path.iterdir() if p.is_file()}
    result = run_render(tmp_path, *args)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("fusionray: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert fragment.lower() in lines[0].lower() and str(named) in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    for path, digest in inputs.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    output = Path(next(a for a in args if a.startswith("output=")).split("=", 1)[1])
    assert not output.exists()
    leftovers = list(output.parent.glob("*")) if output.parent.is_dir() else []
    assert leftovers == []


def test_config_error_exits_before_ray(tmp_path: Path) -> None:
    result = run_render(tmp_path, "+video=demo", "encode.crf=99")
    assert result.returncode == 2
    assert "fusionray: error: Invalid encode.crf=99: must be in [0, 51]" in result.stderr


def _ray_running_here(grace_seconds: float = 15.0) -> bool:
    """Whether a Ray's GCS or raylet runs on this machine (`auto` finds either by process
    scan), after waiting up to `grace_seconds` for one that another test is stopping: a raylet
    that outlives its GCS by a moment once sent `auto` to a dead GCS, retried for minutes."""
    import psutil

    deadline = time.monotonic() + grace_seconds
    while any(name in (p.info["name"] or "") for p in psutil.process_iter(["name"])
              for name in ("gcs_server", "raylet")):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.2)
    return False


def test_no_running_cluster_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `auto` with no Ray running here (and no RAY_ADDRESS) must fail fast and clearly.
    if _ray_running_here():  # checked now, not at collection: other tests start Rays
        pytest.skip("a Ray instance runs on this machine: `auto` would join it (Ray finds it "
                    "by process scan)")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = run_render(tmp_path, "+video=demo", "cluster.address=auto",
                        f"output={tmp_path / 'out.mp4'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "fusionray: error: Cannot join the Ray cluster at 'auto'" in result.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_missing_model_fails_before_ray(tmp_path: Path) -> None:
    """`quality=master` with the learned engine needs GFPGAN; offline and not cached, that is
    one line naming the model and the cache, before any actor tries to load it."""
    import tests.onnx_fixtures as fx
    from tests.faces_fixtures import copy_blazeface_models

    cache = fx.import_fixtures(tmp_path / "models", inswapper_128=fx.build_identity_swapper(),
                               arcface_w600k_r50=fx.build_arcface_fixture())
    # The detector and the gate's verifier honour models.offline too: give them their (real)
    # models, so GFPGAN is missing.
    copy_blazeface_models(cache)
    output = tmp_path / "out" / "demo.mp4"
    result = run_render(tmp_path, "+video=demo", "quality=master", "swapper=inswapper",
                        "swapper.providers=[cpu]", f"models.cache_dir={cache}",
                        "models.offline=true", f"output={output}")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("fusionray: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "'gfpgan_1.4' is not in the cache" in lines[0] and str(cache) in lines[0]
    assert "fusionray models pull gfpgan_1.4" in lines[0]
    assert "Traceback" not in result.stderr and "SwapActor" not in result.stderr
    assert not output.exists()


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_unreachable_cluster_address_is_one_line_at_once(tmp_path: Path, scheme: str) -> None:
    """An explicit address nothing listens on: Ray itself would retry for minutes."""
    from tests.ports import free_port

    address = f"{scheme}127.0.0.1:{free_port()}"
    output = tmp_path / "out.mp4"
    started = time.monotonic()
    result = run_render(tmp_path, "+video=demo", f"cluster.address={address}",
                        f"output={output}")
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("fusionray: error:")]
    assert len(lines) == 1 and f"Cannot join the Ray cluster at '{address}'" in lines[0], (
        result.stderr[-2000:])
    assert "Traceback" not in result.stderr and not output.exists()
    assert seconds < 60, f"took {seconds:.0f} s"


def test_auto_finding_a_crashed_heads_address_is_one_line_at_once(tmp_path: Path) -> None:
    """`auto` where the last `ray start` head crashed: its address stays recorded in Ray's
    temp folder, and `ray.init` would retry that dead GCS for minutes."""
    from tests.ports import free_port

    dead = f"127.0.0.1:{free_port()}"
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(dead)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    output = tmp_path / "out.mp4"
    started = time.monotonic()
    result = run_render(tmp_path, "+video=demo", "cluster.address=auto", f"output={output}",
                        env={**env, "RAY_TMPDIR": str(tmp_path)})
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("fusionray: error:")]
    assert lines == [f"fusionray: error: Cannot join the Ray cluster at 'auto': nothing answers "
                     f"at {dead} (Connection refused) (start one with `ray start --head`, or "
                     f"drop cluster.address to run locally)"], result.stderr[-2000:]
    assert not output.exists() and seconds < 60, f"took {seconds:.0f} s"
