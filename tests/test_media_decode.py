"""Frame-accurate decoding: any range equals the same frames of a full sequential decode."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import av
import cv2
import numpy as np
import pytest

from fusionray.errors import MediaError
from fusionray.media.decode import VideoReader, decode_frames, read_image_bgr
from fusionray.media.probe import probe_video
from fusionray.types import FrameBGR
from tests.clips import read_frame_counter, write_clip

CLIPS: dict[str, tuple[str, dict[str, Any]]] = {
    "mp4-bframes": ("clip.mp4", {"bframes": 3, "gop": 10}),
    "mkv": ("clip.mkv", {"gop": 10}),
    "vfr": ("clip.mp4", {"vfr": True, "gop": 10}),
    "odd-size": ("clip.mp4", {"width": 161, "height": 97, "pix_fmt": "yuv444p", "gop": 10}),
    "mov-rotated": ("clip.mov", {"rotation": 90, "gop": 10}),
}
RANGES = [(0, 1), (0, 36), (3, 8), (10, 11), (11, 25), (17, 36), (35, 36), (9, 21)]


def sequential_decode(path: Path) -> list[FrameBGR]:
    """Reference: every frame in presentation order, straight through, no seeking."""
    with av.open(str(path)) as container:
        return [cast(FrameBGR, frame.to_ndarray(format="bgr24"))
                for frame in container.decode(video=0)]


@pytest.fixture(scope="module", params=list(CLIPS))
def clip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    name, options = CLIPS[request.param]
    path = write_clip(tmp_path_factory.mktemp(request.param) / name, frames=36, **options)
    return probe_video(path), sequential_decode(path)


def test_reference_decode_is_in_counter_order(clip) -> None:
    info, reference = clip
    assert len(reference) == info.frame_count == 36
    assert [read_frame_counter(frame) for frame in reference] == list(range(36))


@pytest.mark.parametrize(("start", "stop"), RANGES)
def test_range_equals_sequential_decode(clip, start: int, stop: int) -> None:
    info, reference = clip
    got = list(decode_frames(info, start, stop))
    assert [index for index, _ in got] == list(range(start, stop))
    for index, frame in got:
        assert frame.dtype == np.uint8
        assert frame.shape == (info.height, info.width, 3)
        assert np.array_equal(frame, reference[index]), f"frame {index} differs"


def test_reader_serves_many_ranges_in_any_order(clip) -> None:
    info, reference = clip
    with VideoReader(info) as reader:
        for start, stop in [(30, 33), (2, 4), (12, 14), (0, 2)]:
            for index, frame in reader.frames(start, stop):
                assert np.array_equal(frame, reference[index])


def test_decode_is_a_generator(tmp_path: Path) -> None:
    info = probe_video(write_clip(tmp_path / "clip.mp4", frames=10, audio=False))
    frames = decode_frames(info, 2, 10)
    first_index, _ = next(frames)
    assert first_index == 2
    # Closing early releases the container without decoding the rest.
    frames.close()


@pytest.mark.parametrize(("start", "stop"), [(-1, 3), (3, 3), (5, 2), (0, 11)])
def test_out_of_range_is_rejected(tmp_path: Path, start: int, stop: int) -> None:
    info = probe_video(write_clip(tmp_path / "clip.mp4", frames=10, audio=False))
    with pytest.raises(ValueError, match=r"Frame range .* outside \[0, 10\)"):
        list(decode_frames(info, start, stop))


def test_missing_frames_raise_naming_range_and_path(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.mp4", frames=10, audio=False)
    info = probe_video(path)
    # Pretend the probe saw a frame the file does not hold (as after a truncated copy).
    step = info.frame_pts[1] - info.frame_pts[0]
    bogus = type(info)(
        **{**info.__dict__, "frame_pts": (*info.frame_pts, info.frame_pts[-1] + step)}
    )
    with pytest.raises(MediaError, match=r"Frames \[10, 11\) missing .*clip\.mp4"):
        list(decode_frames(bogus, 8, 11))


def test_read_image_bgr(tmp_path: Path) -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    cv2.imwrite(str(tmp_path / "blue.png"), image)
    got = read_image_bgr(tmp_path / "blue.png")
    assert got.shape == (20, 30, 3) and got.dtype == np.uint8
    assert np.array_equal(got, image)


def test_read_image_bgr_errors(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"Source image not found: '.*nope\.png'"):
        read_image_bgr(tmp_path / "nope.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(MediaError, match=r"Not a readable image: '.*bad\.jpg'"):
        read_image_bgr(tmp_path / "bad.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(MediaError, match=r"Not a readable image: '.*empty\.png'"):
        read_image_bgr(tmp_path / "empty.png")


class _OvershootingSeeks:
    """Wraps a container so its first seek lands too late, as a demuxer with a dts index can."""

    def __init__(self, container, late_pts: int) -> None:
        self._container, self._late_pts, self.seeks = container, late_pts, 0

    def seek(self, offset: int, **options) -> None:
        self.seeks += 1
        self._container.seek(self._late_pts if self.seeks == 1 else offset, **options)

    def __getattr__(self, name: str):
        return getattr(self._container, name)


def test_overshooting_seek_falls_back_to_an_earlier_keyframe(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.mp4", frames=36, gop=12, audio=False)
    info = probe_video(path)
    reference = sequential_decode(path)
    with VideoReader(info) as reader:
        wrapper = _OvershootingSeeks(reader._container, late_pts=info.frame_pts[24])
        reader._container = wrapper  # type: ignore[assignment]
        got = list(reader.frames(13, 16))
    assert wrapper.seeks == 2
    assert [i for i, _ in got] == [13, 14, 15]
    assert all(np.array_equal(frame, reference[i]) for i, frame in got)
