"""DESIGN.md invariant 3: chunking is invisible.

A real face (the astronaut, found by BlazeFace) moves through a short clip and across every
chunk boundary; with lossless output the decoded frames must be identical whatever the chunk
size, at a fixed overlap that covers the smoother's reach. The default test runs the same
stages the Ray actors run (`RenderStage`, which decodes each chunk once, alone or after a
`DetectStage` pre-pass; assembly) in this process; the slow one runs the full Ray render.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np
import pytest

from fusionray.actors.render_stage import RenderStage
from fusionray.actors.stages import DetectStage, detector_from_config
from fusionray.config import RenderConfig
from fusionray.jobs.pipeline import build_source_identity
from fusionray.media.assemble import assemble_video
from fusionray.media.demo import demo_source_image_path, render_demo_frames
from fusionray.media.plan import plan_chunks
from fusionray.media.probe import probe_video
from fusionray.types import FrameBGR
from tests.test_render import compose_config, decoded_frames

OVERLAP = 4


def write_moving_face_clip(path: Path, *, frames: int, width: int = 320,
                           height: int = 180) -> Path:
    """The demo's camera path (pan, zoom, roll over the astronaut) squeezed into `frames`
    frames and scaled to `width` x `height`: the face moves several pixels per frame."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "g": "12", "preset": "veryfast", "threads": "1"}
        for index, image in enumerate(render_demo_frames(frames / 25)):
            # A uint8 BGR image resized stays uint8 BGR.
            small = cast(FrameBGR, cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
            frame = av.VideoFrame.from_ndarray(small, format="bgr24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def render_in_process(config: RenderConfig, video: Path, output: Path, *,
                      prepass: bool = False, keyframes: bool = False) -> list[np.ndarray]:
    """The actors' work without Ray: render every chunk (after a detection pre-pass when
    `prepass`; on a keyframe-aware plan when `keyframes`), assemble, decode."""
    info = probe_video(video)
    render = RenderStage(config)
    detect = DetectStage(config) if prepass else None
    source, _ = build_source_identity(config, [demo_source_image_path()],
                                      detector_from_config(config, threads=1))
    segments = []
    for chunk in plan_chunks(info.frame_count, chunk_frames=config.chunk.frames,
                             overlap=config.chunk.overlap,
                             keyframes=info.keyframe_indices if keyframes else None):
        result = render(info, chunk, source,
                        detected=detect(info, chunk) if detect is not None else None)
        segment = output.with_name(f"{output.stem}-{chunk.index:04d}.segment")
        segment.write_bytes(result.segment)
        segments.append(segment)
    assemble_video(info, segments, output)
    return decoded_frames(output)


def lossless_config(video: Path, output: Path, chunk_frames: int) -> RenderConfig:
    return compose_config(
        f"+video={video}", f"+source={demo_source_image_path()}", f"output={output}",
        "quality=lossless", f"chunk.frames={chunk_frames}", f"chunk.overlap={OVERLAP}",
        "progress=false", "preview_frames=0",
    )


def assert_same_frames(expected: list[np.ndarray], actual: list[np.ndarray], label: str) -> None:
    assert len(actual) == len(expected), label
    for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
        differing = int(np.count_nonzero(a != b))
        assert differing == 0, f"{label}: frame {index} differs in {differing} values"


@pytest.fixture(scope="module")
def moving_face_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_moving_face_clip(tmp_path_factory.mktemp("invariance") / "face.mp4", frames=24)


@pytest.fixture(scope="module")
def whole_clip_frames(moving_face_clip: Path) -> list[np.ndarray]:
    output = moving_face_clip.with_name("whole.mp4")
    return render_in_process(lossless_config(moving_face_clip, output, 24), moving_face_clip,
                             output)


def test_the_clip_has_a_moving_face_that_gets_swapped(moving_face_clip: Path,
                                                      whole_clip_frames: list[np.ndarray]) -> None:
    config = lossless_config(moving_face_clip, moving_face_clip, 24)
    detector = detector_from_config(config, threads=1)
    original = decoded_frames(moving_face_clip)
    centres = []
    for frame in original:
        faces = detector.detect(frame)
        assert faces, "BlazeFace must find the astronaut in every frame of the clip"
        centres.append(faces[0].keypoints.mean(axis=0))
    path = np.linalg.norm(np.diff(np.array(centres), axis=0), axis=1)
    assert path.mean() > 1.0, "the face must move (pixels per frame) across chunk boundaries"
    changed = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in
               zip(original, whole_clip_frames, strict=True)]
    assert min(changed) > 0.5, "every frame's face is swapped"


@pytest.mark.parametrize(("chunk_frames", "prepass", "keyframes"),
                         [(1, False, False), (3, False, False), (7, False, False),
                          (3, True, False), (5, False, True)])
def test_decoded_frames_do_not_depend_on_chunk_size(
    tmp_path: Path, moving_face_clip: Path, whole_clip_frames: list[np.ndarray],
    chunk_frames: int, prepass: bool, keyframes: bool,
) -> None:
    output = tmp_path / f"chunks{chunk_frames}.mp4"
    frames = render_in_process(lossless_config(moving_face_clip, output, chunk_frames),
                               moving_face_clip, output, prepass=prepass, keyframes=keyframes)
    assert_same_frames(whole_clip_frames, frames,
                       f"chunk.frames={chunk_frames} prepass={prepass} keyframes={keyframes}")


@pytest.mark.slow
@pytest.mark.ray
def test_ray_render_is_chunk_invariant(tmp_path: Path) -> None:
    """The full Ray render on a 60-frame clip: chunk sizes 1, 3, 7, 50 and the whole clip."""
    import ray

    from fusionray.jobs.pipeline import render

    clip = write_moving_face_clip(tmp_path / "face60.mp4", frames=60)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 logging_level=logging.WARNING)
    try:
        results = {}
        for chunk_frames in (60, 1, 3, 7, 50):
            output = tmp_path / f"ray{chunk_frames}.mp4"
            render(lossless_config(clip, output, chunk_frames), run_dir=tmp_path,
                   config_yaml="x: 1\n")
            results[chunk_frames] = decoded_frames(output)
        for chunk_frames in (1, 3, 7, 50):
            assert_same_frames(results[60], results[chunk_frames], f"chunk.frames={chunk_frames}")
    finally:
        if started_here:
            ray.shutdown()
