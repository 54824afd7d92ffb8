"""NVDEC decoding through PyAV's hardware acceleration, where the build and the card offer it.

`choose_decoder` is the pure decision (table-tested); `probe_decoder_facts` reads what PyAV's
FFmpeg build and the codec offer; `verify_nvdec` decodes one frame on the device to prove the
card and driver really do. The decoder (`fusionray.media.decode`) passes
`decoder_open_options(choice)` to `av.open` and reports `choice.label` (run.json).

Frames decoded on NVDEC are downloaded to system memory (NV12, or P010 for 10-bit), so the
rest of the pipeline sees the same planes as from the CPU decoder; what NVDEC saves is the
CPU time of decoding itself, which on a GPU node is what bounds the frame rate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusionray.errors import ConfigError
from fusionray.models.device import DevicePlan

DECODE_CHOICES = ("auto", "cpu", "nvdec")


@dataclass(frozen=True)
class DecoderFacts:
    """What this process offers for decoding one stream."""

    codec: str
    """The stream's codec name, e.g. `h264`."""
    build_device_types: frozenset[str]
    """`av.codec.hwaccel.hwdevices_available()`: device types PyAV's FFmpeg was built with."""
    codec_device_types: frozenset[str]
    """Device types the codec's decoder has hardware configs for (e.g. {"cuda"} for h264)."""
    device: DevicePlan
    """The GPU this process may use (`fusionray.models.device.probe_device`)."""


@dataclass(frozen=True)
class DecodeChoice:
    """Where a stream is decoded, and why."""

    device: str
    """`nvdec` or `cpu`."""
    device_id: int | None = None
    """CUDA device ordinal (process-local) for NVDEC."""
    reason: str = ""
    """Why CPU when NVDEC was allowed (or asked); empty when the choice is the plain one."""

    @property
    def label(self) -> str:
        """For run.json, e.g. `nvdec (cuda device 0)` or `cpu (h264: no GPU assigned ...)`."""
        if self.device == "nvdec":
            return f"nvdec (cuda device {self.device_id})"
        return f"cpu ({self.reason})" if self.reason else "cpu"


def choose_decoder(requested: str, facts: DecoderFacts) -> DecodeChoice:
    """Pick NVDEC or CPU for one stream (pure).

    Args:
        requested: `gpu.decode`: auto (NVDEC when everything offers it), cpu, or nvdec
            (NVDEC or an error).
        facts: what the build, the codec and the process offer.

    Raises:
        ConfigError: an unknown choice, or `nvdec` asked where it cannot run (naming why).
    """
    if requested not in DECODE_CHOICES:
        raise ConfigError(f"Unknown gpu.decode {requested!r}. Choose one of: "
                          + ", ".join(DECODE_CHOICES))
    if requested == "cpu":
        return DecodeChoice(device="cpu")
    reason = _nvdec_blocker(facts)
    if reason is None:
        return DecodeChoice(device="nvdec", device_id=facts.device.device_id)
    if requested == "nvdec":
        raise ConfigError(f"Invalid gpu.decode='nvdec': {reason}. Use gpu.decode=auto to fall "
                          "back to the CPU decoder, or cpu")
    return DecodeChoice(device="cpu", reason=reason)


def _nvdec_blocker(facts: DecoderFacts) -> str | None:
    if "cuda" not in facts.build_device_types:
        return "PyAV's FFmpeg was built without CUDA"
    if facts.device.device_id is None:
        return facts.device.reason or "no GPU for this process"
    if "cuda" not in facts.codec_device_types:
        return f"{facts.codec} has no NVDEC decoder in this build"
    return None


def probe_decoder_facts(codec: str, device: DevicePlan) -> DecoderFacts:
    """What PyAV's build and `codec`'s decoder offer (cheap: no device is opened)."""
    import av
    from av.codec import hwaccel

    try:
        configs: Iterable[Any] = av.codec.Codec(codec, "r").hardware_configs
        codec_types = frozenset(config.device_type.name for config in configs)
    except Exception:  # An unknown codec name, or a build without hardware configs.
        codec_types = frozenset()
    return DecoderFacts(codec=codec, build_device_types=frozenset(hwaccel.hwdevices_available()),
                        codec_device_types=codec_types, device=device)


def decoder_open_options(choice: DecodeChoice) -> dict[str, Any]:
    """Keyword arguments for `av.open` that decode on the chosen device ({} for CPU).

    Software fallback stays allowed: FFmpeg then decodes a stream NVDEC rejects mid-way (e.g.
    an unsupported profile) on the CPU instead of failing the chunk.
    """
    if choice.device != "nvdec":
        return {}
    from av.codec.hwaccel import HWAccel

    return {"hwaccel": HWAccel(device_type="cuda", device=str(choice.device_id or 0),
                               allow_software_fallback=True)}


def verify_nvdec(path: Path | str, choice: DecodeChoice) -> DecodeChoice:
    """Decode the first frame of `path` with `choice`; a card or driver that cannot (no NVDEC
    engine, a driver too old) turns the choice into CPU with the reason.

    FFmpeg's software fallback is silent, so the frame itself is checked: NVDEC hands 8-bit
    4:2:0 pictures back as NV12 (10-bit as P010), where the software decoder gives yuv420p.
    """
    if choice.device != "nvdec":
        return choice
    import av

    try:
        with av.open(str(path), **decoder_open_options(choice)) as container:
            stream = container.streams.video[0]
            software = stream.codec_context.pix_fmt
            frame = next(iter(container.decode(stream)))
            frame.to_ndarray()
            produced = frame.format.name
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        return DecodeChoice(device="cpu", reason=f"NVDEC failed to decode ({first})")
    if software in ("yuv420p", "yuv420p10le") and produced == software:
        return DecodeChoice(device="cpu", reason=f"NVDEC fell back to software ({software} "
                                                 "frames came back, not NV12/P010)")
    return choice


def choose_for_video(path: Path | str, codec: str, requested: str,
                     device: DevicePlan | None = None) -> DecodeChoice:
    """The decode choice for one video in this process, verified on its first frame when it
    is NVDEC. `device` defaults to `probe_device()` (skipped when `requested` is cpu)."""
    if requested == "cpu":
        return choose_decoder("cpu", probe_decoder_facts(codec, DevicePlan(device_id=None)))
    if device is None:
        from fusionray.models.device import probe_device

        device = probe_device()
    choice = verify_nvdec(path, choose_decoder(requested, probe_decoder_facts(codec, device)))
    if requested == "nvdec" and choice.device != "nvdec":
        raise ConfigError(f"Invalid gpu.decode='nvdec': {choice.reason}. Use gpu.decode=auto to "
                          "fall back to the CPU decoder, or cpu")
    return choice
