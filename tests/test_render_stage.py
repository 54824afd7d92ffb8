"""RenderStage: one decode per chunk, and the picture outside the faces comes back as it went in.

DESIGN.md invariant 7 through the real render path (decode, detect, track, swap, encode; no
Ray): for 8-bit 4:2:0 BT.709 (limited and full range) and 10-bit 4:2:0 BT.2020 PQ inputs, YUV
in and YUV out at the input's own format, the luma outside the swapped faces' regions is
identical with a lossless encode (x264 crf 0) and within +-0.1 8-bit code on average with the
default encode, and the colour tags (range, matrix, primaries, transfer) are the input's.
Decode cost: frames decoded per frame written, counted by the decoder itself, on a clip with a
250-frame GOP.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import cv2
import numpy as np
import pytest

from fusionray.actors.render_stage import RenderStage
from fusionray.actors.stages import DetectStage, detector_from_config
from fusionray.config import RenderConfig
from fusionray.jobs.pipeline import build_source_identity
from fusionray.media.decode import VideoReader
from fusionray.media.demo import demo_source_image_path, render_demo_frames
from fusionray.media.encode import SegmentFrame
from fusionray.media.frame import SWS_ACCURATE, PlaneFrame, face_regions
from fusionray.media.plan import plan_chunks
from fusionray.media.probe import probe_video
from fusionray.swap.base import FaceJob, SourceIdentity
from fusionray.types import Face, FrameBGR, VideoInfo
from tests.test_render import compose_config

BT709, BT2020, PQ = 1, 9, 16


def write_tagged_clip(path: Path, *, frames: int, pix_fmt: str, colorspace: int,
                      color_range: int, primaries: int, trc: int, gop: int = 12,
                      width: int = 320, height: int = 180, rotation: int = 0) -> Path:
    """The demo's moving astronaut, converted to `pix_fmt` with the given matrix and range
    (accurate rounding) and tagged with them, x264 at crf 10. With `rotation`, the frames are
    coded turned so that the display rotation stands the face upright again."""
    turns = round(rotation / 90) % 4
    if turns % 2:
        width, height = height, width
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        context = stream.codec_context
        context.colorspace, context.color_range = colorspace, color_range
        context.color_primaries, context.color_trc = primaries, trc
        stream.options = {"crf": "10", "g": str(gop), "preset": "veryfast", "threads": "1"}
        if rotation:
            stream.set_display_rotation(rotation)
        upright = (height, width) if turns % 2 else (width, height)
        for index, image in enumerate(render_demo_frames(frames / 25)):
            # A uint8 BGR image resized stays uint8 BGR.
            small = cast(FrameBGR, cv2.resize(image, upright, interpolation=cv2.INTER_AREA))
            small = np.ascontiguousarray(np.rot90(small, -turns))
            frame = av.VideoFrame.from_ndarray(small, format="bgr24").reformat(
                format=pix_fmt, dst_colorspace=colorspace, interpolation=SWS_ACCURATE,
                src_color_range=2, dst_color_range=color_range)
            frame.colorspace, frame.color_range = colorspace, color_range
            frame.pts, frame.time_base = index, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def luma_planes(data: bytes | Path) -> tuple[list[np.ndarray], dict[str, object]]:
    """Every frame's luma plane at its own depth, and the stream's format and colour tags."""
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with av.open(source, "r") as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        planes: list[np.ndarray] = []
        formats: set[str] = set()
        for frame in container.decode(video=0):
            # FFmpeg's H.264 decoder names full-range 4:2:0 `yuvj420p`: the range is the tag.
            formats.add(frame.format.name.replace("yuvj", "yuv"))
            planes.append(PlaneFrame(frame).planes[0].astype(np.float64))
        tags: dict[str, object] = {
            "pix_fmt": formats.pop() if len(formats) == 1 else formats,
            "range": context.color_range, "matrix": context.colorspace,
            "primaries": context.color_primaries, "trc": context.color_trc}
    return planes, tags


def render_clip(video: Path, *overrides: str, chunk_frames: int = 24,
                prepass: bool = False) -> tuple[list[bytes], list[tuple[int, Face]], int, int]:
    """Render every chunk with RenderStage; the segments, the swapped faces, frames decoded
    and frames written."""
    config = compose_config(f"+video={video}", f"+source={demo_source_image_path()}",
                            f"output={video.with_name('out.mp4')}", "progress=false",
                            "preview_frames=0", f"chunk.frames={chunk_frames}", *overrides)
    info = probe_video(video)
    stage = RenderStage(config)
    detect = DetectStage(config) if prepass else None
    source, _ = build_source_identity(config, [demo_source_image_path()],
                                      detector_from_config(config, threads=1))
    segments, swapped, decoded, written = [], [], 0, 0
    for chunk in plan_chunks(info.frame_count, chunk_frames=config.chunk.frames,
                             overlap=config.chunk.overlap, keyframes=info.keyframe_indices):
        result = stage(info, chunk, source,
                       detected=detect(info, chunk) if detect is not None else None)
        segments.append(result.segment)
        decoded += result.frames_decoded
        written += result.frames
        assert result.face_tracks is not None
        for row in result.face_tracks.to_pylist():
            if row["swapped"]:
                swapped.append((row["frame"], Face(
                    bbox=np.array(row["bbox"]), layout=row["landmarks_layout"],
                    keypoints=np.array(row["landmarks"]).reshape(-1, 2), score=row["score"])))
    return segments, swapped, decoded, written


CASES = {
    "8-bit BT.709 limited": dict(pix_fmt="yuv420p", colorspace=BT709, color_range=1,
                                 primaries=BT709, trc=BT709),
    "8-bit BT.709 full": dict(pix_fmt="yuv420p", colorspace=BT709, color_range=2,
                              primaries=BT709, trc=BT709),
    "10-bit BT.2020 PQ": dict(pix_fmt="yuv420p10le", colorspace=BT2020, color_range=1,
                              primaries=BT2020, trc=PQ),
}


@pytest.mark.parametrize("crf", [0, 18])
@pytest.mark.parametrize("case", list(CASES))
def test_outside_the_faces_the_picture_comes_back_as_it_went_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, crf: int,
) -> None:
    """crf 0: the frames handed to the encoder, and (8-bit, where x264 crf 0 is lossless) the
    decoded output, equal the input outside the face regions; crf 18: the mean shift."""
    import fusionray.actors.render_stage as render_stage

    encoded: list[np.ndarray] = []
    encode = render_stage.encode_segment_bytes

    def recording_encode(frames: Iterable[av.VideoFrame], **kwargs: Any) -> bytes:
        def record(items: Iterable[av.VideoFrame]) -> Iterator[av.VideoFrame]:
            for frame in items:
                encoded.append(PlaneFrame(frame).planes[0].astype(np.float64))
                yield frame
        return encode(record(frames), **kwargs)

    monkeypatch.setattr(render_stage, "encode_segment_bytes", recording_encode)
    tags = CASES[case]
    video = write_tagged_clip(tmp_path / "in.mp4", frames=12, **tags)  # type: ignore[arg-type]
    segments, swapped, _, _ = render_clip(video, f"encode.pix_fmt={tags['pix_fmt']}",
                                          f"encode.crf={crf}")
    before, input_tags = luma_planes(video)
    decoded, output_tags = luma_planes(segments[0])
    # x264 is lossless at crf 0 only for 8-bit (10-bit needs qp 0, which the config does not
    # offer): there the check is on what the encoder was given.
    after = decoded if crf or tags["pix_fmt"] == "yuv420p" else encoded
    assert output_tags == input_tags == {
        "pix_fmt": tags["pix_fmt"], "range": tags["color_range"], "matrix": tags["colorspace"],
        "primaries": tags["primaries"], "trc": tags["trc"]}
    assert len(after) == len(before) == 12
    frames_swapped = {index for index, _ in swapped}
    assert frames_swapped == set(range(12)), "the face is swapped in every frame"
    step = 2.0 ** (8 if tags["pix_fmt"] == "yuv420p" else 10) / 256  # codes per 8-bit code
    shifts, inside_changes = [], []
    for index, (a, b) in enumerate(zip(before, after, strict=True)):
        outside = np.ones(a.shape, bool)
        faces = [face for frame, face in swapped if frame == index]
        for (x0, y0, x1, y1), _ in face_regions(faces, a.shape[1], a.shape[0]):
            outside[y0:y1, x0:x1] = False
            inside_changes.append(np.abs(b[y0:y1, x0:x1] - a[y0:y1, x0:x1]).mean() / step)
        assert outside.mean() > 0.3  # a close-up: the face region is large
        shifts.append((b[outside] - a[outside]).mean() / step)
        if crf == 0:
            assert np.array_equal(a[outside], b[outside]), (
                f"frame {index} changed outside: max {np.abs(a - b)[outside].max()} codes, "
                f"{np.count_nonzero((a != b) & outside)} samples")
    assert abs(float(np.mean(shifts))) <= 0.1, f"mean luma shift {np.mean(shifts):.3f} codes"
    # Single frames carry the encoder's noise (about 0.1 code at crf 18); the old path shifted
    # every frame by about -1.6.
    assert max(abs(s) for s in shifts) <= 0.25
    print(f"{case} crf {crf}: mean luma shift outside the faces {np.mean(shifts):+.4f} codes")
    assert min(inside_changes) > 1.0, "the faces themselves did change"


def test_frames_decoded_per_frame_written_at_a_250_frame_gop(tmp_path: Path) -> None:
    """Through the real decode path (the decoder counts every frame it produces): a 300-frame
    clip with a 250-frame GOP, 48-frame chunks, overlap 4, decoded once per chunk."""
    video = write_tagged_clip(tmp_path / "gop.mp4", frames=300, gop=250, width=96, height=54,
                              pix_fmt="yuv420p", colorspace=BT709, color_range=1,
                              primaries=BT709, trc=BT709)
    info = probe_video(video)
    assert info.keyframe_indices == (0, 250)
    _, _, decoded, written = render_clip(video, "chunk.overlap=4", "selection.min_face_size=0",
                                         chunk_frames=48)
    assert written == 300
    # Chunks [0, 254) and [254, 300): read ranges [0, 258) and [250, 300).
    assert decoded == 258 + 50
    assert decoded / written <= 1.25
    # The plain plan with a detect pass and a second decode for the swap (the old path):
    plain = plan_chunks(300, chunk_frames=48, overlap=4)
    old = sum(c.read_stop - info.keyframe_at_or_before(c.read_start)
              + c.stop - info.keyframe_at_or_before(c.start) for c in plain)
    assert old / written > 5.0


def test_a_prepass_is_not_detected_again_and_its_decode_is_counted(tmp_path: Path) -> None:
    video = write_tagged_clip(tmp_path / "in.mp4", frames=12, pix_fmt="yuv420p",
                              colorspace=BT709, color_range=1, primaries=BT709, trc=BT709)
    # Lossless, compared as decoded pictures: lossy x264 at 320 px wide is not byte-stable
    # from run to run (its lookahead reads uninitialised memory), whatever fed it.
    once, faces_once, decoded_once, _ = render_clip(video, "encode.lossless=true")
    twice, faces_twice, decoded_twice, _ = render_clip(video, "encode.lossless=true",
                                                       prepass=True)
    # The render decodes its frames once either way; the pre-pass's own decodes are counted
    # once, by the scheduler (tests/test_faults.py, frames_decoded of a shot-selection job).
    assert decoded_once == decoded_twice == 12
    assert len(faces_once) == len(faces_twice) == 12
    pictures_once = [frame for segment in once for frame in decoded_pictures(segment)]
    pictures_twice = [frame for segment in twice for frame in decoded_pictures(segment)]
    assert len(pictures_once) == len(pictures_twice) == 12
    for first, second in zip(pictures_once, pictures_twice, strict=True):
        np.testing.assert_array_equal(first, second)


def tagged_chunk_setup(tmp_path: Path, *, frames: int, overrides: tuple[str, ...] = ()
                       ) -> tuple[RenderConfig, VideoInfo, SourceIdentity]:
    """A `frames`-frame BT.709 yuv420p clip with one face, the config rendering it (plus
    `overrides`), its probe and the demo source identity."""
    video = write_tagged_clip(tmp_path / "in.mp4", frames=frames, pix_fmt="yuv420p",
                              colorspace=BT709, color_range=1, primaries=BT709, trc=BT709)
    config = compose_config(f"+video={video}", f"+source={demo_source_image_path()}",
                            f"output={tmp_path / 'out.mp4'}", "progress=false",
                            "preview_frames=0", *overrides)
    source, _ = build_source_identity(config, [demo_source_image_path()],
                                      detector_from_config(config, threads=1))
    return config, probe_video(video), source


def decoded_pictures(segment: bytes) -> list[np.ndarray]:
    """Every frame of an encoded segment, all planes, as decoded."""
    with av.open(io.BytesIO(segment), "r") as container:
        return [frame.to_ndarray() for frame in container.decode(video=0)]


class PhasedClassic:
    """The classic engine behind the phased interface (PLAN decision 3), recording how many
    jobs each `forward` call got: `prepare` keeps the faces, `forward` is the (trivial) model
    step, `paste` composites with the engine's own `swap`."""

    name = "classic"

    def __init__(self, engine: object) -> None:
        self.engine = engine
        self.forward_sizes: list[int] = []

    def prepare(self, frame_bgr: np.ndarray, faces: list[Face], source: object) -> list[tuple]:
        return [(face, source) for face in faces]

    def forward(self, jobs: list[tuple], source: object) -> list[tuple]:
        self.forward_sizes.append(len(jobs))
        return list(jobs)

    def paste(self, frame_bgr: np.ndarray, jobs: list[tuple]) -> np.ndarray:
        return self.engine.swap(frame_bgr, [face for face, _ in jobs], jobs[0][1])  # type: ignore[attr-defined]


def test_a_phased_engine_gets_the_faces_of_several_frames_in_one_forward(tmp_path: Path) -> None:
    config, info, source = tagged_chunk_setup(tmp_path, frames=20, overrides=("quality=lossless",))
    chunk = plan_chunks(info.frame_count, chunk_frames=20, overlap=config.chunk.overlap)[0]
    plain = RenderStage(config)
    expected = plain(info, chunk, source)
    phased = RenderStage(config)
    recorder = PhasedClassic(phased.swapper)
    phased.swapper = recorder  # type: ignore[assignment]
    phased.phases = type(phased.phases)(recorder)  # type: ignore[arg-type]
    assert phased.phases.phased
    result = phased(info, chunk, source)
    assert result.faces_swapped == expected.faces_swapped == 20
    # 20 frames with one face each, FORWARD_FRAMES (8) frames per call.
    assert recorder.forward_sizes == [8, 8, 4]
    assert result.segment == expected.segment


@pytest.mark.parametrize("threads", [1, 2])
def test_an_error_in_the_swap_is_the_chunks_error_and_no_thread_is_left(
    tmp_path: Path, threads: int,
) -> None:
    """threads=2: the steps on their own threads (`run_steps`); 1: chained in the caller's
    thread (`chain_steps`)."""
    import threading

    config, info, source = tagged_chunk_setup(tmp_path, frames=12)
    stage = RenderStage(config, threads=threads)
    calls = []

    # The classic engine is phased (prepare/forward/paste): paste runs once per swapped frame,
    # on its own thread when threads > 1, so failing it on the fifth frame fails mid-chunk
    # with threads running.
    real_paste = stage.swapper.paste

    def failing_paste(frame_bgr: np.ndarray, jobs: Sequence[FaceJob]) -> FrameBGR:
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("swap failed on its fifth frame")
        return real_paste(frame_bgr, jobs)

    stage.swapper.paste = failing_paste  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="fifth frame"):
        stage(info, plan_chunks(12, chunk_frames=12, overlap=4)[0], source)
    assert [t.name for t in threading.enumerate() if t.name.startswith("fusionray-")] == []


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_in_the_encoder_leaves_no_thread_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int, error: type[BaseException],
) -> None:
    """The encoder runs in the caller's thread, between the frames the steps hand it: an error
    there (or Ctrl-C, which lands wherever the main thread is) is raised outside the stream.
    The steps must still be stopped and joined before it leaves the call; the exception's
    traceback would otherwise keep the stream alive and its threads running, and a process
    exiting then aborted when one came back from ONNX Runtime or the codec."""
    import threading

    from fusionray.actors import render_stage

    config, info, source = tagged_chunk_setup(tmp_path, frames=12)
    stage = RenderStage(config, threads=threads)

    def failing_encoder(frames: Iterable[SegmentFrame], **_: object) -> bytes:
        for index, _frame in enumerate(frames):
            if index == 3:
                raise error("the encoder failed on its fourth frame")
        return b""

    monkeypatch.setattr(render_stage, "encode_segment_bytes", failing_encoder)
    with pytest.raises(error, match="fourth frame") as caught:
        stage(info, plan_chunks(12, chunk_frames=12, overlap=4)[0], source)
    assert caught.value.__traceback__ is not None  # held, as an interrupted job holds it
    assert [t.name for t in threading.enumerate() if t.name.startswith("fusionray-")] == []


@pytest.mark.parametrize("threads", [1, 2])
def test_frames_in_flight_are_bounded_by_the_window_not_the_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int,
) -> None:
    """A 96-frame chunk never holds more than the temporal window plus the queues' frames
    (counted when each frame is decoded: frames inside the steps still holding pixels), with
    the steps on threads (2) or chained (1)."""
    import gc
    import weakref

    import fusionray.actors.render_stage as render_stage

    video = write_tagged_clip(tmp_path / "in.mp4", frames=96, width=96, height=54,
                              pix_fmt="yuv420p", colorspace=BT709, color_range=1,
                              primaries=BT709, trc=BT709)
    config = compose_config(f"+video={video}", f"+source={demo_source_image_path()}",
                            f"output={tmp_path / 'out.mp4'}", "progress=false",
                            "preview_frames=0", "selection.min_face_size=0")
    alive: list[weakref.ref[render_stage._Frame]] = []
    peak = [0]
    frame_class = render_stage._Frame

    class CountedFrame(frame_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            alive.append(weakref.ref(self))
            gc.collect(0)
            frames = [f for f in (ref() for ref in alive) if f is not None]
            holding = [f for f in frames if f.decoded is not None or f.output is not None]
            peak[0] = max(peak[0], len(holding))

    monkeypatch.setattr(render_stage, "_Frame", CountedFrame)
    info = probe_video(video)
    source, _ = build_source_identity(config, [demo_source_image_path()],
                                      detector_from_config(config, threads=1))
    chunk = plan_chunks(96, chunk_frames=96, overlap=config.chunk.overlap)[0]
    result = RenderStage(config, threads=threads)(info, chunk, source)
    assert result.frames == 96
    reach, depth, queues = config.temporal.reach, render_stage.QUEUE_DEPTH, 7
    bound = 2 * reach + 1 + queues * depth + render_stage.FORWARD_FRAMES + 4
    print(f"peak frames in flight {peak[0]} (bound {bound})")
    assert 0 < peak[0] <= bound < 96


@pytest.mark.parametrize("rotation", [90, 270])
def test_a_rotated_video_is_swapped_upright_and_exact_outside_the_faces(
    tmp_path: Path, rotation: int,
) -> None:
    """Phone footage: the face stands upright only in display orientation. Every frame is
    swapped, and in coded orientation the luma outside the (rotated) face regions is exact."""
    video = write_tagged_clip(tmp_path / "in.mp4", frames=8, pix_fmt="yuv420p",
                              colorspace=BT709, color_range=1, primaries=BT709, trc=BT709,
                              rotation=rotation)
    info = probe_video(video)
    assert info.rotation == rotation and (info.width, info.height) == (180, 320)
    segments, swapped, _, _ = render_clip(video, "encode.crf=0")
    assert {index for index, _ in swapped} == set(range(8))
    before, _ = luma_planes(video)
    after, _ = luma_planes(segments[0])
    turns = rotation // 90
    for index, (a, b) in enumerate(zip(before, after, strict=True)):
        display_outside = np.ones((180, 320), bool)  # display orientation: 320 x 180
        faces = [face for frame, face in swapped if frame == index]
        for (x0, y0, x1, y1), _ in face_regions(faces, 320, 180):
            display_outside[y0:y1, x0:x1] = False
        outside = np.rot90(display_outside, -turns)
        assert outside.shape == a.shape
        assert np.array_equal(a[outside], b[outside]), f"frame {index} changed outside"
        assert np.abs(a[~outside] - b[~outside]).mean() > 1.0, f"frame {index}: no swap"


def test_decoder_and_encoder_threads_follow_the_actor(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An actor's decoder and encoder use the cores it was given (issue 10: they used to size
    themselves to the whole machine, or to a fixed 4 encoder threads)."""
    import fusionray.actors.render_stage as render_stage_module

    video = write_tagged_clip(tmp_path / "in.mp4", frames=6, pix_fmt="yuv420p",
                              colorspace=BT709, color_range=1, primaries=BT709, trc=BT709)
    config = compose_config(f"+video={video}", f"+source={demo_source_image_path()}",
                            f"output={tmp_path / 'out.mp4'}", "progress=false",
                            "preview_frames=0")
    info = probe_video(video)
    seen: dict[str, int] = {}
    open_reader, encoder_settings = (render_stage_module.open_reader,
                                     render_stage_module.encoder_settings_for)

    def recording_reader(*args: object, threads: int = 0, **kwargs: object) -> object:
        reader = open_reader(*args, threads=threads, **kwargs)  # type: ignore[arg-type]
        assert isinstance(reader, VideoReader)  # the input is a video file
        seen["decoder"] = reader._stream.codec_context.thread_count
        return reader

    def recording_settings(*args: object, threads: int | None = None) -> object:
        settings = encoder_settings(*args, threads=threads)  # type: ignore[arg-type]
        seen["encoder"] = settings.threads
        return settings

    monkeypatch.setattr(render_stage_module, "open_reader", recording_reader)
    monkeypatch.setattr(render_stage_module, "encoder_settings_for", recording_settings)
    stage = RenderStage(config, threads=3)
    source, _ = build_source_identity(config, [demo_source_image_path()],
                                      detector_from_config(config, threads=1))
    chunk = plan_chunks(info.frame_count, chunk_frames=6, overlap=0)[0]
    result = stage(info, chunk, source)
    assert result.frames == 6
    assert seen == {"decoder": 3, "encoder": 3}


def test_chained_and_threaded_steps_render_the_same_frames(tmp_path: Path) -> None:
    """A one-core actor chains its steps, a larger one runs them on threads: the same chunk
    comes back with the same pictures and faces either way (lossless; what reaches the model
    in one call depends on the frames, never on timing)."""
    config, info, source = tagged_chunk_setup(tmp_path, frames=20, overrides=("quality=lossless",))
    chunk = plan_chunks(info.frame_count, chunk_frames=20, overlap=config.chunk.overlap)[0]
    chained = RenderStage(config, threads=1)(info, chunk, source)
    threaded = RenderStage(config, threads=2)(info, chunk, source)
    assert chained.faces_swapped == threaded.faces_swapped == 20
    assert set(chained.seconds) == set(threaded.seconds)
    pictures = decoded_pictures(chained.segment)
    assert len(pictures) == 20
    for index, (a, b) in enumerate(zip(pictures, decoded_pictures(threaded.segment),
                                       strict=True)):
        assert np.array_equal(a, b), f"frame {index} differs between chained and threaded"
