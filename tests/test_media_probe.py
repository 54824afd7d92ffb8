"""Probe: exact frame counts and pts from packets, and one-line errors for bad inputs."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from fusionray.errors import MediaError
from fusionray.media.probe import probe_video
from tests.clips import VFR_DELTAS_MS, write_clip


def test_probe_constant_rate_mp4(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "cfr.mp4", frames=30, fps=25, gop=12)
    info = probe_video(path)
    assert info.frame_count == 30
    assert (info.width, info.height, info.pix_fmt, info.codec_name) == (160, 96, "yuv420p", "h264")
    assert info.average_rate == 25
    # Seconds, not ticks: MP4 rescales 1/25 to a >= 10000 timescale.
    assert [pts * info.time_base for pts in info.frame_pts] == [Fraction(i, 25) for i in range(30)]
    assert info.keyframe_indices == (0, 12, 24)
    assert info.rotation == 0
    assert [(a.codec_name, a.packet_count > 0) for a in info.audio_streams] == [("aac", True)]
    assert info.duration_seconds == pytest.approx(30 / 25)


def test_probe_vfr_keeps_every_pts(tmp_path: Path) -> None:
    info = probe_video(write_clip(tmp_path / "vfr.mp4", frames=20, vfr=True))
    seconds = [pts * info.time_base for pts in info.frame_pts]
    deltas_ms = [(b - a) * 1000 for a, b in itertools.pairwise(seconds)]
    assert deltas_ms == [VFR_DELTAS_MS[i % len(VFR_DELTAS_MS)] for i in range(19)]


def test_probe_counts_packets_where_stream_frames_is_absent(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.mkv", frames=37)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska has no frame count
    info = probe_video(path)
    assert info.frame_count == 37
    assert info.format_name.startswith("matroska")
    assert list(info.frame_pts) == sorted(set(info.frame_pts))


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_probe_reads_rotation(tmp_path: Path, rotation: int) -> None:
    info = probe_video(write_clip(tmp_path / "rot.mp4", frames=5, rotation=rotation))
    assert info.rotation == rotation
    assert (info.width, info.height) == (160, 96)  # coded size, not display size


def test_probe_lists_every_audio_stream(tmp_path: Path) -> None:
    info = probe_video(write_clip(tmp_path / "two.mp4", frames=10, audio_streams=2))
    assert [a.index for a in info.audio_streams] == [1, 2]
    assert all(a.packet_count > 0 for a in info.audio_streams)


def test_probe_without_audio(tmp_path: Path) -> None:
    assert probe_video(write_clip(tmp_path / "mute.mp4", frames=5, audio=False)).audio_streams == ()


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000, layout="mono")
        for start in range(0, 48000, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 48000, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _image(path: Path) -> Path:
    """A real still image; cv2 picks PNG or JPEG from the extension."""
    cv2.imwrite(str(path), np.full((32, 48, 3), 128, np.uint8))
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", r"Input video not found: '.*missing\.mp4'"),
        (lambda d: _bytes(d / "empty.mp4", b""), r"Not a readable video file: '.*empty\.mp4' \("),
        (
            lambda d: _bytes(d / "noise.mp4", np.random.default_rng(0).bytes(4096)),
            r"Not a readable video file: '.*noise\.mp4' \(",
        ),
        (lambda d: _audio_only(d / "song.m4a"), r"No video stream in '.*song\.m4a'"),
        (lambda d: _image(d / "face.png"), r"'.*face\.png' is a still image"),
        (lambda d: _image(d / "face.jpg"), r"'.*face\.jpg' is a still image"),
    ],
    ids=["missing", "zero-bytes", "random-bytes", "audio-only", "png", "jpg"],
)
def test_probe_bad_inputs_fail_with_one_line(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(MediaError, match=message) as caught:
        probe_video(path)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, OSError)


def test_probe_accepts_pathlike_and_str(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.mp4", frames=3, audio=False)
    assert probe_video(str(path)) == probe_video(path)
