"""What the render path wires in from the media layer: damaged-frame concealment (issue 12 item
9), look-ahead segments at chunk joins (issue 12 item 10), the decoder choice (issue 10 item
5), and the swap engine's notes, from `RenderStage` / `DetectStage` / `passthrough_segment` to
`ChunkTotals` (run.json)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from fusionray.actors import render_stage
from fusionray.actors.render_stage import RenderStage
from fusionray.actors.stages import (
    ChunkResult,
    DetectStage,
    detector_from_config,
    passthrough_segment,
)
from fusionray.config import RenderConfig
from fusionray.errors import ConfigError, MediaError, RenderError
from fusionray.jobs.pipeline import build_source_identity
from fusionray.jobs.scheduler import ChunkTotals
from fusionray.media.demo import demo_source_image_path
from fusionray.media.plan import plan_chunks
from fusionray.media.probe import probe_video
from fusionray.swap.base import SourceIdentity
from fusionray.types import Chunk, VideoInfo
from tests.clips import read_frame_counter, write_clip
from tests.test_render import compose_config

FRAMES = 30
DAMAGED = 6
"""Presentation index of the frame whose packet is overwritten (one GOP: concealed to the end)."""
CONCEALED = list(range(DAMAGED, FRAMES))


def break_packet(clean: Path, broken: Path, index: int) -> Path:
    """`clean` with the packet of presentation frame `index` overwritten (undecodable)."""
    with av.open(str(clean)) as container:
        packets = sorted((p.pts, p.pos, p.size) for p in container.demux(video=0) if p.size)
    _, position, size = packets[index]
    assert position is not None  # a packet read from a file has its byte offset
    data = bytearray(clean.read_bytes())
    data[position:position + size] = b"\xff" * size
    broken.write_bytes(bytes(data))
    return broken


@pytest.fixture(scope="module")
def broken_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wiring")
    clean = write_clip(folder / "clean.mp4", frames=FRAMES, audio=False, gop=FRAMES,
                       width=256, height=144)
    return break_packet(clean, folder / "broken.mp4", DAMAGED)


def config_for(video: Path, *overrides: str, quality: str = "lossless") -> RenderConfig:
    return compose_config(
        f"+video={video}", f"+source={demo_source_image_path()}",
        f"output={video.with_suffix('.out.mp4')}", f"quality={quality}", "chunk.frames=10",
        "chunk.overlap=4", "progress=false", "preview_frames=0", *overrides)


def source_for(config: RenderConfig) -> SourceIdentity:
    source, _ = build_source_identity(config, [demo_source_image_path()],
                                      detector_from_config(config, threads=1))
    return source


def chunks_of(config: RenderConfig, info: VideoInfo) -> list[Chunk]:
    return plan_chunks(info.frame_count, chunk_frames=config.chunk.frames,
                       overlap=config.chunk.overlap)


def segment_frames(segment: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(segment), "r") as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def test_a_damaged_frame_is_concealed_through_the_render_stage(broken_clip: Path) -> None:
    # Lossless in the input's own YUV format (x264 crf 0 at 8 bits): the frames reach the
    # encoder unconverted, so a concealed frame must come out exactly as its stand-in.
    # (quality=lossless works in RGB, where a copy converts differently from the decoder's
    # own frame: measured up to 105 codes; reported to the lead.)
    config = config_for(broken_clip, "encode.crf=0", quality="standard")
    info = probe_video(broken_clip)
    stage, source = RenderStage(config), source_for(config)
    chunks = chunks_of(config, info)
    assert len(chunks) == 3 and chunks[1].read_start < chunks[1].start
    results = [stage(info, chunk, source) for chunk in chunks]
    written: list[np.ndarray] = []
    for chunk, result in zip(chunks, results, strict=True):
        # Owned frames only, although each chunk also decoded (and concealed) its overlap.
        assert list(result.concealed_frames) == [
            index for index in CONCEALED if chunk.start <= index < chunk.stop]
        frames = segment_frames(result.segment)
        assert len(frames) == chunk.owned_frames
        written += frames
    assert sorted(i for r in results for i in r.concealed_frames) == CONCEALED
    # Every concealed frame shows the last good frame (lossless output: exactly).
    assert [read_frame_counter(frame) for frame in written] == (
        list(range(DAMAGED)) + [DAMAGED - 1] * len(CONCEALED))
    assert all(np.array_equal(written[i], written[DAMAGED - 1]) for i in CONCEALED)


def test_strict_decoding_fails_the_chunk_naming_the_damaged_frame(broken_clip: Path) -> None:
    config = config_for(broken_clip, "media.strict_decode=true")
    info = probe_video(broken_clip)
    stage, source = RenderStage(config), source_for(config)
    first, second, _ = chunks_of(config, info)
    with pytest.raises(MediaError, match=rf"frames \[{DAMAGED}, {DAMAGED + 1}\) are damaged.*"
                                         r"media\.strict_decode=false conceals them"):
        stage(info, first, source)
    # A chunk whose own frames come after the loss decodes the GOP from its keyframe too.
    with pytest.raises(MediaError, match=rf"frames \[{DAMAGED}, {DAMAGED + 1}\) are damaged"):
        stage(info, second, source)


def test_detect_pass_and_passthrough_conceal_too(broken_clip: Path) -> None:
    config = config_for(broken_clip)
    info = probe_video(broken_clip)
    chunk = chunks_of(config, info)[1]
    detected = DetectStage(config)(info, chunk)
    assert list(detected.concealed_frames) == [
        index for index in CONCEALED if chunk.read_start <= index < chunk.read_stop]
    concealed: list[int] = []
    segment = passthrough_segment(config, info, chunk, concealed=concealed)
    assert concealed == [index for index in CONCEALED if chunk.start <= index < chunk.stop]
    assert len(segment_frames(segment)) == chunk.owned_frames
    strict = config_for(broken_clip, "media.strict_decode=true")
    with pytest.raises(MediaError, match=r"are damaged"):
        DetectStage(strict)(info, chunk)
    with pytest.raises(MediaError, match=r"are damaged"):
        passthrough_segment(strict, info, chunk)


class _EncodeSpy:
    """Wraps `encode_segment_bytes`, recording what each call got as look-ahead."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.real = render_stage.encode_segment_bytes

    def __call__(self, frames: Iterable[Any], *, lookahead: Iterable[Any] = (),
                 lookahead_pts: Any = (), **kwargs: Any) -> bytes:
        call: dict[str, Any] = {"lookahead_pts": tuple(lookahead_pts), "counters": []}
        self.calls.append(call)

        def counted(items: Iterable[Any]) -> Iterator[Any]:
            for item in items:
                call["counters"].append(read_frame_counter(item.to_ndarray(format="bgr24")))
                yield item

        return self.real(frames, lookahead=counted(lookahead), lookahead_pts=lookahead_pts,
                         **kwargs)


@pytest.fixture(scope="module")
def clean_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("ahead") / "clean.mp4", frames=FRAMES,
                      audio=False, gop=12, width=256, height=144)


@pytest.mark.parametrize(("codec", "ahead"), [("libx264rgb", True), ("ffv1", False)])
def test_segments_get_the_frames_after_their_owned_range_as_lookahead(
        clean_clip: Path, monkeypatch: pytest.MonkeyPatch, codec: str, ahead: bool) -> None:
    """The read range past the owned frames goes to the encoder as look-ahead (the decoded,
    unswapped frames, in order), except for intra-only codecs, where it would be ignored; the
    segment still holds exactly the owned frames, and the picture is the same either way."""
    config = config_for(clean_clip, f"encode.codec={codec}")
    info = probe_video(clean_clip)
    spy = _EncodeSpy()
    monkeypatch.setattr(render_stage, "encode_segment_bytes", spy)
    stage, source = RenderStage(config), source_for(config)
    chunks = chunks_of(config, info)
    written = []
    for chunk in chunks:
        result = stage(info, chunk, source)
        frames = segment_frames(result.segment)
        assert len(frames) == chunk.owned_frames
        written += frames
    for chunk, call in zip(chunks, spy.calls, strict=True):
        tail = range(chunk.stop, chunk.read_stop) if ahead else range(0)
        assert call["lookahead_pts"] == tuple(info.frame_pts[tail.start:tail.stop])
        assert call["counters"] == list(tail)
    assert any(chunk.read_stop > chunk.stop for chunk in chunks)
    assert [read_frame_counter(frame) for frame in written] == list(range(FRAMES))
    # Lossless either way: the look-ahead (and its forced IDR) changes no written pixel; the
    # whole clip as one chunk has none.
    monkeypatch.setattr(render_stage, "encode_segment_bytes", spy.real)
    whole = config_for(clean_clip, f"encode.codec={codec}", "chunk.frames=30")
    (only,) = chunks_of(whole, info)
    assert only.read_stop == only.stop
    plain = segment_frames(RenderStage(whole)(info, only, source).segment)
    assert all(np.array_equal(a, b) for a, b in zip(written, plain, strict=True))


def test_the_decoder_choice_is_cpu_here_and_reaches_the_chunk_providers(
        clean_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU for this process (what Ray gives an actor that reserved none).
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    info = probe_video(clean_clip)
    for requested, label in [("auto", "cpu ("), ("cpu", "cpu")]:
        config = config_for(clean_clip, f"gpu.decode={requested}")
        stage = RenderStage(config)
        choice = stage.decoder_for(info)
        assert choice.device == "cpu"
        assert choice.label.startswith(label)
        assert (choice.reason != "") == (requested == "auto")
        result = stage(info, chunks_of(config, info)[0], source_for(config))
        decode = [p for p in result.providers if p.startswith("decode:")]
        assert decode == [f"decode:{choice.label}"]
    stage = RenderStage(config_for(clean_clip, "gpu.decode=nvdec"))
    with pytest.raises(ConfigError, match=r"gpu\.decode='nvdec'"):
        stage(info, chunks_of(stage.config, info)[0], source_for(stage.config))


def test_engine_notes_reach_the_chunk_result(clean_clip: Path) -> None:
    config = config_for(clean_clip)
    info = probe_video(clean_clip)
    stage = RenderStage(config)
    note = "batch dimension fixed at 1 because the graph reshapes by a constant"
    object.__setattr__(stage.swapper, "notes", (note,))
    result = stage(info, chunks_of(config, info)[0], source_for(config))
    assert result.notes == (note,)


def test_chunk_totals_gather_concealed_frames_and_deduplicate_notes() -> None:
    def result(index: int, concealed: tuple[int, ...], notes: tuple[str, ...]) -> ChunkResult:
        return ChunkResult(chunk_index=index, segment=b"", frames=10, faces_swapped=0,
                           frames_with_faces=0, seconds={}, providers=("decode:cpu",),
                           concealed_frames=concealed, notes=notes)

    totals = ChunkTotals()
    totals.add(result(0, (6, 7, 8, 9), ("batch fixed at 1",)))
    totals.add(result(1, (10, 11), ("batch fixed at 1", "enhancer on CPU")))
    totals.add(result(2, (), ()))
    assert totals.concealed == [6, 7, 8, 9, 10, 11]
    assert totals.notes == ["batch fixed at 1", "enhancer on CPU"]
    assert totals.providers == {"decode:cpu"}


@pytest.mark.ray
def test_run_json_lists_the_concealed_frames(local_ray, broken_clip: Path,
                                             tmp_path: Path) -> None:
    """The driver end to end: the damaged clip renders, run.json names every concealed frame
    (and says so in its notes); with media.strict_decode=true the job fails naming the frame."""
    from fusionray.jobs.pipeline import render

    output = tmp_path / "out.mp4"
    config = compose_config(
        f"+video={broken_clip}", f"+source={demo_source_image_path()}", f"output={output}",
        "chunk.frames=10", "chunk.overlap=4", "progress=false", "preview_frames=0")
    summary = render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    assert summary.concealed_frames == CONCEALED
    assert any("damaged frame(s) were concealed" in note for note in summary.notes)
    run_json = json.loads(output.with_suffix(".run.json").read_text())
    assert run_json["concealed_frames"] == CONCEALED
    with av.open(str(output)) as container:
        assert sum(1 for _ in container.decode(video=0)) == FRAMES
    strict = compose_config(
        f"+video={broken_clip}", f"+source={demo_source_image_path()}",
        f"output={tmp_path / 'strict.mp4'}", "chunk.frames=10", "chunk.overlap=4",
        "progress=false", "preview_frames=0", "media.strict_decode=true",
        "cluster.chunk_retries=0")
    with pytest.raises(RenderError, match=rf"frames \[{DAMAGED}, {DAMAGED + 1}\) are damaged"):
        render(strict, run_dir=tmp_path, config_yaml="x: 1\n")


@pytest.mark.slow
def test_lookahead_through_the_render_stage_flattens_the_joins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard quality (x264 crf 18), 24-frame chunks, overlap 4 (so 4 look-ahead frames),
    nothing swapped (per-frame PSNR against the input measures the encode alone). Measured:
    the last 4 frames before a join 41.78 dB without look-ahead, 42.75 with (mean of the clip
    43.05 / 43.20); PSNR jump across a join 1.73 / 0.26 dB."""
    from tests.test_chunk_invariance import write_moving_face_clip

    clip = write_moving_face_clip(tmp_path / "clip.mp4", frames=96)
    info = probe_video(clip)
    source = source_for(config_for(clip))
    # A threshold no face reaches: every frame is re-encoded untouched.
    config = config_for(clip, "chunk.frames=24", "detector.score_threshold=0.99999",
                        quality="standard")
    with av.open(str(clip)) as container:
        reference = [f.to_ndarray(format="bgr24").astype(np.float64)
                     for f in container.decode(video=0)]
    real = render_stage.encode_segment_bytes

    def per_frame_psnr(ahead: bool) -> tuple[np.ndarray, list[int]]:
        def encode(frames: Iterable[Any], *, lookahead: Iterable[Any] = (),
                   lookahead_pts: Any = (), **kwargs: Any) -> bytes:
            return real(frames, lookahead=lookahead if ahead else (),
                        lookahead_pts=lookahead_pts if ahead else (), **kwargs)

        monkeypatch.setattr(render_stage, "encode_segment_bytes", encode)
        stage, chunks, written = RenderStage(config), chunks_of(config, info), []
        for chunk in chunks:
            result = stage(info, chunk, source)
            assert result.faces_swapped == 0
            written += [frame.astype(np.float64) for frame in segment_frames(result.segment)]
        values = [10 * np.log10(255**2 / np.mean((a - b) ** 2))
                  for a, b in zip(written, reference, strict=True)]
        return np.array(values), [chunk.stop for chunk in chunks[:-1]]

    without, joins = per_frame_psnr(False)
    with_lookahead, _ = per_frame_psnr(True)

    def before_joins(values: np.ndarray) -> float:
        return float(np.mean([values[j - 4:j].mean() for j in joins]))

    def jump(values: np.ndarray) -> float:
        return float(np.mean([abs(values[j] - values[j - 1]) for j in joins]))

    assert len(joins) == 3
    assert before_joins(with_lookahead) > before_joins(without) + 0.5
    assert jump(with_lookahead) < jump(without) - 0.8
    assert with_lookahead.mean() >= without.mean()
