"""The render pipeline end to end: in-process on a local Ray, on a two-node cluster with
logical GPUs, and the demo command as a user runs it."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import ray
from hydra import compose, initialize_config_dir

from fusionray.config import RenderConfig, register_configs, to_render_config
from fusionray.jobs.pipeline import OutputPaths, render
from fusionray.media.demo import demo_source_image_path
from fusionray.media.frame import working_frame
from fusionray.media.plan import plan_chunks
from fusionray.media.probe import probe_video
from tests.clips import write_clip

ROOT = Path(__file__).resolve().parents[1]
register_configs()


def compose_config(*overrides: str) -> RenderConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_render_config(compose(config_name="config", overrides=list(overrides)))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def video_pts_seconds(path: Path) -> list[Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None  # a stream read from a file has its time base
        pts = [p.pts for p in container.demux(stream) if p.pts is not None]
        return [Fraction(p) * stream.time_base for p in sorted(pts)]


def audio_payloads(path: Path) -> list[list[bytes]]:
    with av.open(str(path)) as container:
        streams = list(container.streams.audio)
        if not streams:
            return []
        payloads: list[list[bytes]] = [[] for _ in streams]
        index = {s.index: i for i, s in enumerate(streams)}
        for packet in container.demux(*streams):
            if packet.size:
                payloads[index[packet.stream.index]].append(bytes(packet))
        return payloads


def decoded_frames(path: Path) -> list[np.ndarray]:
    """BGR frames converted as fusionray converts a YUV input for an RGB output (its own
    matrix and range, accurate rounding), so untouched pixels compare exactly."""
    with av.open(str(path)) as container:
        return [working_frame(f, "bgr24", writable=False).to_ndarray(format="bgr24")
                for f in container.decode(video=0)]



@pytest.mark.ray
@pytest.mark.parametrize(
    "clip",
    [
        {"audio": True},
        {"audio": False},
        {"width": 161, "height": 97, "audio": True, "pix_fmt": "yuv444p"},
        {"vfr": True, "audio": True},
        {"audio": True, "audio_streams": 2},
    ],
    ids=["audio", "no-audio", "odd-size", "vfr", "two-audio-streams"],
)
def test_render_keeps_frames_pts_and_audio(local_ray, tmp_path: Path, clip: dict) -> None:
    source = write_clip(tmp_path / "in.mp4", frames=30, **clip)
    before = sha256(source)
    output = tmp_path / "out" / "result.mp4"
    config = compose_config(
        f"+video={source}", f"+source={demo_source_image_path()}", f"output={output}",
        "chunk.frames=7", "chunk.overlap=4", "progress=false", "preview_frames=2",
    )
    summary = render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    # Invariant 1: frame count, order and pts. Chunk edges sit at keyframe + overlap.
    planned = plan_chunks(30, chunk_frames=7, overlap=4,
                          keyframes=probe_video(source).keyframe_indices)
    assert summary.frames == 30 and summary.chunks == len(planned) > 1
    assert video_pts_seconds(output) == video_pts_seconds(source)
    assert len(decoded_frames(output)) == 30
    # Invariant 2: audio packets bit-exact, every stream.
    assert audio_payloads(output) == audio_payloads(source)
    # Invariant 4: input untouched; the work folder is gone; sidecars are there.
    assert sha256(source) == before
    paths = OutputPaths.for_video(output)
    assert not paths.work.exists()
    assert paths.preview.exists() and paths.config.exists()
    assert sorted(p.name for p in output.parent.iterdir()) == sorted(
        [output.name, paths.run_json.name, paths.preview.name, paths.config.name,
         paths.faces.name])


@pytest.mark.ray
def test_render_swaps_the_face_in_a_real_photo_clip(local_ray, tmp_path: Path) -> None:
    output = tmp_path / "demo.mp4"
    config = compose_config("+video=demo", f"output={output}", "progress=false",
                            "chunk.frames=25", "quality=lossless")
    summary = render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    assert summary.frames == 100
    # BlazeFace should find the astronaut in nearly every frame.
    assert summary.frames_with_faces >= 95
    run = json.loads(OutputPaths.for_video(output).run_json.read_text())
    assert run["faces_swapped"] == summary.faces_swapped
    assert set(run["stage_seconds"]) >= {"probe", "decode", "detect", "forward", "paste",
                                        "encode", "assemble"}
    assert any(p.startswith("blazeface:") for p in run["providers"])
    original, swapped = decoded_frames(Path(summary.input)), decoded_frames(output)
    # The face region (centre of the frame, where the camera keeps the face) changed a lot;
    # with lossless output the corners (background, far from any face) are bit-identical to
    # the decoded input.
    face = (slice(90, 230), slice(250, 390))
    corner = (slice(0, 60), slice(0, 60))
    face_change = np.mean([np.abs(a[face].astype(int) - b[face].astype(int)).mean()
                           for a, b in zip(original, swapped, strict=True)])
    corner_change = np.mean([np.abs(a[corner].astype(int) - b[corner].astype(int)).mean()
                             for a, b in zip(original, swapped, strict=True)])
    assert face_change > 8.0
    assert corner_change == 0.0


@pytest.mark.ray
@pytest.mark.slow
def test_render_on_a_two_node_cluster_with_fractional_gpus(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 2, "num_gpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2, num_gpus=2)
    try:
        ray.init(address=cluster.address, logging_level=logging.WARNING)
        source = write_clip(tmp_path / "in.mp4", frames=40, audio=True)
        output = tmp_path / "out.mp4"
        config = compose_config(
            f"+video={source}", f"+source={demo_source_image_path()}", f"output={output}",
            # Eight chunks of 5 (not keyframe-aligned): enough work for the four actors, as
            # pools start no more actors than there are chunks.
            "chunk.frames=5", "chunk.keyframe_aligned=false", "progress=false",
            "preview_frames=0", "cluster.detect.replicas=2", "cluster.detect.num_gpus=0.25",
            "cluster.swap.replicas=4", "cluster.swap.num_gpus=0.5",
            "cluster.max_chunks_in_flight=4",
        )
        summary = render(config, run_dir=tmp_path, config_yaml="x: 1\n")
        # No shot pre-pass (selection.mode=many): no detection actors, one call per chunk.
        assert summary.actors == {"detect": 0, "render": 4}
        assert summary.nodes == 2, "four 1-CPU actors on two 2-CPU nodes must use both nodes"
        assert video_pts_seconds(output) == video_pts_seconds(source)
        assert audio_payloads(output) == audio_payloads(source)
    finally:
        ray.shutdown()
        cluster.shutdown()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fusionray.jobs.render", *args, "progress=false",
         f"hydra.run.dir={cwd / 'hydra'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.ray
@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path: Path) -> None:
    result = run_cli("+video=demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = list((tmp_path / "hydra").glob("*.swapped.mp4"))
    assert len(outputs) == 1
    paths = OutputPaths.for_video(outputs[0])
    run = json.loads(paths.run_json.read_text())
    assert run["frames"] == 100 and run["faces_swapped"] >= 95
    assert run["frames_per_second"] > 0 and run["wall_seconds"] > 0
    assert paths.preview.exists() and paths.config.exists()
    assert "wrote" in result.stdout


@pytest.mark.parametrize(("video", "expected"), [
    ("/shots/a.mp4", "a.swapped.mp4"), ("/shots/b.MKV", "b.swapped.mkv"),
    ("/shots/c.mov", "c.swapped.mov"), ("/shots/d.avi", "d.swapped.mp4"),
    ("/shots/e.webm", "e.swapped.mp4"),
])
def test_default_output_keeps_a_container_fusionray_writes(video: str, expected: str) -> None:
    from fusionray.jobs.pipeline import default_output

    assert default_output(Path(video), Path("/runs/1")) == Path("/runs/1") / expected
