"""NVDEC or CPU decoding: the pure choice, the probe, and (on a GPU) the real NVDEC path."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from fusionray.errors import ConfigError
from fusionray.media.hwaccel import (
    DecodeChoice,
    DecoderFacts,
    choose_decoder,
    choose_for_video,
    decoder_open_options,
    probe_decoder_facts,
    verify_nvdec,
)
from fusionray.models.device import NO_DEVICE_NOT_ASSIGNED, DevicePlan, probe_device
from fusionray.models.session import nvidia_device_visible
from tests.clips import write_clip

GPU = DevicePlan(device_id=0, fraction=0.5)
NONE = DevicePlan(device_id=None, reason=NO_DEVICE_NOT_ASSIGNED)
CUDA = frozenset({"cuda"})


def _facts(*, build: frozenset[str] = CUDA, codec: frozenset[str] = CUDA,
           device: DevicePlan = GPU, name: str = "h264") -> DecoderFacts:
    return DecoderFacts(codec=name, build_device_types=build, codec_device_types=codec,
                        device=device)


@pytest.mark.parametrize(("requested", "facts", "choice"), [
    ("auto", _facts(), DecodeChoice(device="nvdec", device_id=0)),
    ("nvdec", _facts(device=DevicePlan(device_id=1)), DecodeChoice(device="nvdec", device_id=1)),
    ("cpu", _facts(), DecodeChoice(device="cpu")),
    ("auto", _facts(device=NONE), DecodeChoice(device="cpu", reason=NO_DEVICE_NOT_ASSIGNED)),
    ("auto", _facts(build=frozenset({"vaapi"})),
     DecodeChoice(device="cpu", reason="PyAV's FFmpeg was built without CUDA")),
    ("auto", _facts(codec=frozenset(), name="ffv1"),
     DecodeChoice(device="cpu", reason="ffv1 has no NVDEC decoder in this build")),
])
def test_choose_decoder(requested: str, facts: DecoderFacts, choice: DecodeChoice) -> None:
    assert choose_decoder(requested, facts) == choice


def test_nvdec_required_but_impossible_is_an_error() -> None:
    expected = r"gpu\.decode='nvdec': " + re.escape(NO_DEVICE_NOT_ASSIGNED)
    with pytest.raises(ConfigError, match=expected):
        choose_decoder("nvdec", _facts(device=NONE))
    with pytest.raises(ConfigError, match=r"Unknown gpu\.decode 'gpu'"):
        choose_decoder("gpu", _facts())


def test_labels_and_open_options() -> None:
    assert DecodeChoice(device="nvdec", device_id=0).label == "nvdec (cuda device 0)"
    assert DecodeChoice(device="cpu", reason="x").label == "cpu (x)"
    assert DecodeChoice(device="cpu").label == "cpu"
    assert decoder_open_options(DecodeChoice(device="cpu")) == {}
    accel = decoder_open_options(DecodeChoice(device="nvdec", device_id=1))["hwaccel"]
    assert isinstance(accel, av.codec.hwaccel.HWAccel)


def test_probe_reads_the_build_and_the_codec() -> None:
    h264 = probe_decoder_facts("h264", GPU)
    assert h264.build_device_types == frozenset(av.codec.hwaccel.hwdevices_available())
    assert "cuda" in h264.codec_device_types or "cuda" not in h264.build_device_types
    assert probe_decoder_facts("ffv1", GPU).codec_device_types == frozenset()
    assert probe_decoder_facts("not-a-codec", GPU).codec_device_types == frozenset()


def test_nvdec_that_cannot_run_becomes_cpu_with_a_reason(tmp_path: Path) -> None:
    """Here no CUDA device exists: opening NVDEC fails or FFmpeg falls back to software; both
    are caught on the first frame and reported instead of claimed."""
    if nvidia_device_visible():
        pytest.skip("this machine has an NVIDIA GPU")
    clip = write_clip(tmp_path / "clip.mp4", frames=4, audio=False)
    choice = verify_nvdec(clip, DecodeChoice(device="nvdec", device_id=0))
    assert choice.device == "cpu" and choice.reason.startswith("NVDEC ")
    assert choose_for_video(clip, "h264", "auto").device == "cpu"
    with pytest.raises(ConfigError, match=r"gpu\.decode='nvdec'"):
        choose_for_video(clip, "h264", "nvdec", device=DevicePlan(device_id=0))


@pytest.mark.gpu
def test_nvdec_decodes_the_same_frames(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", width=320, height=192, frames=20, audio=False)
    choice = choose_for_video(clip, "h264", "nvdec", device=probe_device())
    assert choice.device == "nvdec", choice.label

    def frames(options: dict) -> list[np.ndarray]:
        with av.open(str(clip), **options) as container:
            return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]

    cpu, gpu = frames({}), frames(decoder_open_options(choice))
    assert len(gpu) == len(cpu) == 20
    # H.264 decoding is exact; only the NV12 -> BGR conversion path may differ by a code.
    assert max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(cpu, gpu,
                                                                                 strict=True)) <= 2
