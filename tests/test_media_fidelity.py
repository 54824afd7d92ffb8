"""Studio inputs through encode + assemble: codec, profile, pixel format, bit depth, colour tags,
time base, start pts, timecode and audio come back as they went in (issue 12, container side).

Frames are fed the way the YUV hot path feeds them: decoded `av.VideoFrame`s in the output
pixel format (no conversion), and also as BGR ndarrays (8 and 16 bits per channel).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from fusionray.config import EncodeConfig
from fusionray.errors import OutputError
from fusionray.media.assemble import assemble_video, output_extension
from fusionray.media.decode import decode_frames
from fusionray.media.encode import (
    EncoderSettings,
    PixelLayout,
    encode_segment,
    settings_for_video,
)
from fusionray.media.formats import MOV_ONLY_CODECS, NOT_FOR_PLAYERS_CODECS
from fusionray.media.probe import probe_video
from fusionray.types import VideoInfo
from tests.clips import audio_packet_payloads
from tests.studio_clips import STUDIO_CLIPS, StudioClip, studio_frame, write_studio_clip

FAST = EncodeConfig(preset="veryfast")
"""The standard preset's encode section (codec, pix_fmt and profile auto), faster."""


def decoded_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(container.streams.video[0]))


def luma(frame: av.VideoFrame) -> np.ndarray:
    """The Y plane as float, in 8-bit codes whatever the depth."""
    bits = PixelLayout.of(frame.format.name).bits
    plane = frame.reformat(format="gray16le" if bits > 8 else "gray",
                           src_color_range=frame.color_range or None,
                           dst_color_range=frame.color_range or None).to_ndarray()
    return plane.astype(np.float64) / (257.0 if bits > 8 else 1.0)


def encode_chunks(info: VideoInfo, frames: list, settings: EncoderSettings, folder: Path,
                  *, chunk_frames: int = 5) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for number, start in enumerate(range(0, info.frame_count, chunk_frames)):
        stop = min(start + chunk_frames, info.frame_count)
        path = folder / f"segment-{number}.{settings.segment_format}"
        encode_segment(frames[start:stop], pts=info.frame_pts[start:stop], info=info,
                       settings=settings, path=path)
        paths.append(path)
    return paths


def colour(info: VideoInfo) -> tuple[int, int, int, int]:
    return info.color_range, info.colorspace, info.color_primaries, info.color_trc


@pytest.mark.parametrize("name", list(STUDIO_CLIPS))
def test_studio_input_comes_back_as_it_went_in(tmp_path: Path, name: str) -> None:
    file_name, clip = STUDIO_CLIPS[name]
    source = write_studio_clip(tmp_path / file_name, clip)
    info = probe_video(source)
    settings = settings_for_video(FAST, info)
    frames = decoded_frames(source)
    segments = encode_chunks(info, frames, settings, tmp_path / "work")
    output = tmp_path / f"out{output_extension(source.suffix, settings.codec)}"

    report = assemble_video(info, segments, output)

    written = probe_video(output)
    assert (written.codec_name, written.profile, written.pix_fmt) == (
        info.codec_name, info.profile, info.pix_fmt)
    assert colour(written) == colour(info) == (
        clip.color_range, clip.colorspace, clip.color_primaries, clip.color_trc)
    # Exact time base and pts: same ticks, not merely the same seconds.
    assert written.time_base == info.time_base
    assert written.frame_pts == info.frame_pts
    assert info.frame_pts[0] * info.time_base == clip.start_pts * clip.time_base
    assert written.timecode == report.timecode == info.timecode == clip.timecode
    assert audio_packet_payloads(output) == audio_packet_payloads(source)
    # The picture: no level shift (over the clip: each frame's lossy coding drifts a little
    # either way), close to the input at its own depth.
    shifts = []
    for before, after in zip(frames, decoded_frames(output), strict=True):
        shifts.append(luma(after).mean() - luma(before).mean())
        assert abs(shifts[-1]) < 0.25, f"mean luma moved by {shifts[-1]:.3f} codes"
        assert np.abs(luma(after) - luma(before)).mean() < 1.5  # crf 18 coding noise
    assert abs(np.mean(shifts)) < 0.1


def test_ten_bit_bgr48_frames_keep_their_depth(tmp_path: Path) -> None:
    """16-bit BGR frames (what the hot path gives for >8-bit input) are coded at 10 bits:
    the sub-8-bit ramp of the input survives, which an 8-bit path would flatten."""
    clip = StudioClip(codec="libx265", pix_fmt="yuv420p10le", frames=4,
                      options={"preset": "ultrafast", "x265-params": "log-level=error"},
                      colorspace=9, color_primaries=9, color_trc=16, color_range=1)
    source = write_studio_clip(tmp_path / "in.mp4", clip)
    info = probe_video(source)
    settings = settings_for_video(EncodeConfig(preset="veryfast", crf=4), info)
    assert (settings.codec, settings.pix_fmt) == ("libx265", "yuv420p10le")
    frames = [studio_frame(i, width=clip.width, height=clip.height) for i in range(clip.frames)]
    segments = encode_chunks(info, frames, settings, tmp_path / "work")
    output = tmp_path / "out.mp4"
    assemble_video(info, segments, output)

    written = probe_video(output)
    assert written.pix_fmt == "yuv420p10le" and colour(written) == (1, 9, 9, 16)
    y10 = decoded_frames(output)[0].reformat(format="gray10le").to_ndarray().astype(np.int64)
    # A flat row segment of the 8-bit picture holds the 10-bit ramp: more distinct 10-bit
    # codes than 8-bit steps would give.
    assert len(np.unique(y10 % 4)) == 4


def test_full_range_bgr_frames_keep_their_levels(tmp_path: Path) -> None:
    """BGR frames decoded from full-range BT.709 are coded full range: black stays at code 0
    and white at 255 instead of being squeezed into 16..235."""
    clip = StudioClip(pix_fmt="yuv444p", options={"preset": "veryfast", "qp": "0"}, frames=3,
                      colorspace=1, color_primaries=1, color_trc=1, color_range=2)
    source = write_studio_clip(tmp_path / "in.mp4", clip)
    info = probe_video(source)
    settings = settings_for_video(FAST, info)
    frames = [frame for _, frame in decode_frames(info, 0, info.frame_count)]
    segments = encode_chunks(info, frames, settings, tmp_path / "work")
    output = tmp_path / "out.mp4"
    assemble_video(info, segments, output)

    assert colour(probe_video(output)) == (2, 1, 1, 1)
    for before, after in zip(decoded_frames(source), decoded_frames(output), strict=True):
        y_before, y_after = luma(before), luma(after)
        assert y_after.min() == y_before.min() < 16
        assert y_after.max() == y_before.max() > 235
        assert abs(y_after.mean() - y_before.mean()) < 0.5


def test_mezzanine_output_refuses_mp4(tmp_path: Path) -> None:
    file_name, clip = STUDIO_CLIPS["dnxhr-hqx"]
    source = write_studio_clip(tmp_path / file_name, StudioClip(**{**clip.__dict__, "frames": 2}))
    info = probe_video(source)
    settings = settings_for_video(FAST, info)
    segments = encode_chunks(info, decoded_frames(source), settings, tmp_path / "work")
    with pytest.raises(OutputError, match=r"dnxhd cannot be stored in \.mp4 .*out\.mov"):
        assemble_video(info, segments, tmp_path / "out.mp4")
    assert not list(tmp_path.glob("*out*"))


@pytest.mark.parametrize("extension", [".mov", ".mkv"])
def test_ntsc_start_pts_survives_other_containers(tmp_path: Path, extension: str) -> None:
    _, clip = STUDIO_CLIPS["ntsc-bframes-start-1001"]
    source = write_studio_clip(tmp_path / "in.mp4", clip)
    info = probe_video(source)
    settings = settings_for_video(FAST, info)
    segments = encode_chunks(info, decoded_frames(source), settings, tmp_path / "work",
                             chunk_frames=7)
    output = tmp_path / f"out{extension}"
    report = assemble_video(info, segments, output)
    written = probe_video(output)
    written_seconds = [Fraction(p) * written.time_base for p in written.frame_pts]
    if extension == ".mkv":
        # Matroska counts milliseconds (each pts rounds to the nearest) and cannot start below
        # 0, so the AAC priming before 0 shifts every stream alike.
        assert written.time_base == Fraction(1, 1000)
        shift = Fraction(report.start_shift_seconds).limit_denominator(48000)
        seconds = [Fraction(p) * info.time_base + shift for p in info.frame_pts]
        assert all(abs(a - b) <= Fraction(1, 1000) for a, b in zip(seconds, written_seconds,
                                                                  strict=True))
    else:
        assert written.frame_pts == info.frame_pts and written.time_base == info.time_base
    assert written.timecode == clip.timecode


@pytest.mark.slow
def test_lookahead_flattens_the_quality_dip_before_chunk_joins(tmp_path: Path) -> None:
    """Per-frame PSNR against the input around chunk joins (issue 12 item 10): the last frames
    of a segment coded without a future lose about 1 dB; with look-ahead frames the joins come
    closer to a one-pass encode. Measured numbers: the comment above `encode._encode_into`."""
    from tests.clips import psnr, write_face_clip

    source = write_face_clip(tmp_path / "face.mp4", frames=96)
    info = probe_video(source)
    frames = [frame for _, frame in decode_frames(info, 0, info.frame_count)]
    settings = settings_for_video(EncodeConfig(codec="libx264", preset="medium"), info)

    def per_frame_psnr(chunk_frames: int, lookahead: int) -> np.ndarray:
        decoded: list[np.ndarray] = []
        for start in range(0, len(frames), chunk_frames):
            stop = min(start + chunk_frames, len(frames))
            ahead = slice(stop, min(stop + lookahead, len(frames)))
            path = tmp_path / f"s{start}-{lookahead}.mp4"
            encode_segment(frames[start:stop], pts=info.frame_pts[start:stop], info=info,
                           settings=settings, path=path, lookahead=frames[ahead],
                           lookahead_pts=info.frame_pts[ahead])
            decoded += [f.to_ndarray(format="bgr24") for f in decoded_frames(path)]
        return np.array([psnr(a, b) for a, b in zip(frames, decoded, strict=True)])

    one_pass = per_frame_psnr(len(frames), 0)
    joins = [48]
    def dip(values: np.ndarray) -> float:  # how far the frames before a join fall below
        return max(float(np.max(one_pass[j - 4:j] - values[j - 4:j])) for j in joins)
    without, with_lookahead = per_frame_psnr(48, 0), per_frame_psnr(48, 8)
    assert dip(without) > 0.5
    assert dip(with_lookahead) < dip(without) - 0.2


@pytest.mark.parametrize(
    ("suffix", "codec", "extension"),
    [(".mp4", "libx264", ".mp4"), (".MOV", "libx264", ".mov"), (".mkv", "prores_ks", ".mkv"),
     (".mxf", "prores_ks", ".mov"), (".mxf", "dnxhd", ".mov"), (".mp4", "dnxhd", ".mov"),
     (".avi", "libx265", ".mp4"), (".webm", "ffv1", ".mkv"), (".mp4", "libx264rgb", ".mov"),
     (".mkv", "libx264rgb", ".mkv"), (".mp4", "ffv1", ".mkv"), (".mov", "ffv1", ".mov")],
)
def test_output_extension_table(suffix: str, codec: str, extension: str) -> None:
    assert output_extension(suffix, codec) == extension


def test_a_failed_verification_says_what_to_change_not_to_rerun(tmp_path: Path) -> None:
    import dataclasses

    from fusionray.media.assemble import VerificationError

    _, clip = STUDIO_CLIPS["ntsc-bframes-start-1001"]
    source = write_studio_clip(tmp_path / "in.mp4", StudioClip(**{**clip.__dict__,
                                                                  "frames": 6}))
    info = probe_video(source)
    segments = encode_chunks(info, decoded_frames(source), settings_for_video(FAST, info),
                             tmp_path / "work")
    # Claim a source one tick later than the segments are: the written pts cannot match.
    moved = dataclasses.replace(info, frame_pts=tuple(p + 1 for p in info.frame_pts))
    with pytest.raises(VerificationError) as caught:
        assemble_video(moved, segments, tmp_path / "out.mov")
    message = str(caught.value)
    assert "frame 0 is at 0.033367 s, source at 0.033400 s" in message
    assert "output time base 1/30000, source 1/30000" in message
    assert message.endswith("Rerunning the same command would fail the same way.")
    assert "resume" not in message and VerificationError.resumable is False
    assert not (tmp_path / "out.mov").exists()


PLAYER_INPUTS = {
    "h264 8-bit .mp4": (".mp4", "h264", "yuv420p", ""),
    "h264 full range .mp4": (".mp4", "h264", "yuvj420p", ""),
    "hevc 10-bit .mp4": (".mp4", "hevc", "yuv420p10le", "Main 10"),
    "vp9 .webm": (".webm", "vp9", "yuv420p", "Profile 0"),
    "prores hq .mov": (".mov", "prores", "yuv422p10le", "HQ"),
    "dnxhr hqx .mov": (".mov", "dnxhd", "yuv422p10le", "DNXHR HQX"),
}
"""Input -> (suffix, codec, pix_fmt, profile) for the playable-presets table."""
FAMILY = {"libx264": "h264", "libx265": "hevc", "prores_ks": "prores", "dnxhd": "dnxhd"}


@pytest.mark.parametrize("preset", ["draft", "standard", "master", "lossless"])
@pytest.mark.parametrize("name", list(PLAYER_INPUTS))
def test_every_preset_plays_or_says_what_it_is(preset: str, name: str) -> None:
    """Issue 12 item 8: a preset's default output plays in the players that open 8-bit 4:2:0
    H.264 .mp4, or wherever its input plays (same family, layout, depth and container), or is a
    mezzanine in .mov/.mkv; never RGB H.264 or FFV1 in an .mp4 (which players refuse)."""
    from tests.test_render import compose_config

    suffix, codec_name, pix_fmt, profile = PLAYER_INPUTS[name]
    info = VideoInfo(path=f"in{suffix}", format_name="", codec_name=codec_name, width=640,
                     height=360, pix_fmt=pix_fmt, time_base=Fraction(1, 25),
                     average_rate=Fraction(25), frame_pts=(0,), keyframe_indices=(0,),
                     profile=profile)
    settings = settings_for_video(compose_config("+video=demo", f"quality={preset}").encode,
                                  info)
    extension = output_extension(suffix, settings.codec)
    universal = (settings.codec, settings.pix_fmt) == ("libx264", "yuv420p") and extension in (
        ".mp4", ".mov")
    in_kind = (FAMILY.get(settings.codec) == codec_name
               and settings.pix_fmt == pix_fmt.replace("yuvj", "yuv") and extension == suffix)
    mezzanine = (settings.codec in MOV_ONLY_CODECS | set(NOT_FOR_PLAYERS_CODECS)
                 and extension in (".mov", ".mkv"))
    assert universal or in_kind or mezzanine, (
        f"quality={preset} on {name}: {settings.codec} {settings.pix_fmt} in {extension}")


@pytest.mark.parametrize(("codec", "extension"), [("libx264rgb", ".mov"), ("ffv1", ".mkv")])
def test_lossless_output_in_its_default_container_is_exact(tmp_path: Path, codec: str,
                                                           extension: str) -> None:
    """The lossless codecs' default containers hold them with every frame bit-exact; .mov also
    keeps the NTSC start pts and time base exactly (Matroska counts milliseconds)."""
    file_name, clip = STUDIO_CLIPS["ntsc-bframes-start-1001"]
    source = write_studio_clip(tmp_path / file_name, clip)
    info = probe_video(source)
    settings = settings_for_video(EncodeConfig(codec=codec, lossless=True, preset="veryfast"),
                                  info)
    frames = [frame.to_ndarray(format="bgr24") for frame in decoded_frames(source)]
    segments = encode_chunks(info, frames, settings, tmp_path / "work")
    output = tmp_path / f"out{output_extension(source.suffix, settings.codec)}"
    assert output.suffix == extension
    assemble_video(info, segments, output)
    written = probe_video(output)
    if extension == ".mov":
        assert (written.time_base, written.frame_pts) == (info.time_base, info.frame_pts)
    for index, (before, after) in enumerate(zip(frames, decoded_frames(output), strict=True)):
        assert np.array_equal(before, after.to_ndarray(format="bgr24")), f"frame {index}"
