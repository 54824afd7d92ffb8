"""Encoder settings (pure) and segment encoding.

A segment is the owned frames of one chunk, encoded by a fresh encoder (so it starts with an
IDR frame and references nothing outside itself) into a small MP4 (QuickTime .mov for ProRes
and DNxHR, which MP4 cannot hold) whose packets carry the SOURCE pts in the source time base.
Assembly then copies packets and pts as they are.

Why MP4/MOV for segments (measured with FFmpeg 8 via PyAV 18):
- MP4 keeps pts exactly: its track timescale is the stream's time-base denominator, doubled
  until >= 10000, so every source tick maps to a whole number of MP4 ticks. The movie timescale
  (edit lists: a start pts > 0, the B-frame delay) is 1/1000 by default, which moved a 29.97 fps
  stream starting at pts 1001 in 1/30000 to 0.033 s; `mp4_muxer_options` sets it to the track's.
- Matroska rounds to 1 ms, which breaks pts equality for 1/25 or 1/30000 sources.
- NUT shifts x264 streams to make dts non-negative (first pts 0 became 5120), loses the first
  dts values and rewrites durations, so pts would have to be repaired afterwards.
MP4 needs a seekable output to write its index, which files and `io.BytesIO` both are.

"auto" settings answer the input in kind (`resolve_*` below, table-tested): the input's codec
family, profile, chroma layout, bit depth and colour description. 8-bit input stays on the
8-bit fast path.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

import av
import av.error
import numpy as np
from av.video.reformatter import Interpolation

from fusionray.errors import ConfigError, MediaError, choices_message
from fusionray.media.formats import (
    CODECS as CONFIG_CODECS,
)
from fusionray.media.formats import (
    DNXHR_PROFILES,
    INTRA_CODECS,
    MOV_ONLY_CODECS,
    PIX_FMTS,
    PROFILES,
    PRORES_PROFILES,
)
from fusionray.types import VideoInfo

if TYPE_CHECKING:
    from fusionray.config import EncodeConfig

CODECS = tuple(codec for codec in CONFIG_CODECS if codec != "auto")
"""Segment video encoders fusionray knows how to configure (`auto` resolves to one of them)."""
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
ENCODER_PIX_FMTS: dict[str, tuple[str, ...]] = {
    "libx264": ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le"),
    "libx265": ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le",
                "yuv420p12le", "yuv422p12le", "yuv444p12le"),
    "prores_ks": ("yuv422p10le", "yuv444p10le", "yuva444p10le"),
    "dnxhd": ("yuv422p", "yuv422p10le", "yuv444p10le"),
    "ffv1": ("bgr0", "yuv420p", "yuv422p", "yuv444p", "yuva444p", "yuv420p10le", "yuv422p10le",
             "yuv444p10le", "yuv420p12le", "yuv422p12le", "yuv444p12le", "yuva444p10le"),
    "libx264rgb": ("bgr24",),
}
"""Pixel formats fusionray asks of each encoder (a subset of what FFmpeg's encoder lists)."""
X264_PIX_FMTS = ENCODER_PIX_FMTS["libx264"]
# H.264/HEVC code chroma in 2-pixel units for 4:2:0 (both axes) and 4:2:2 (horizontally); an odd
# frame size cannot be represented, so such formats switch to their 4:4:4 sibling.
_FULL_CHROMA = {
    "yuv420p": "yuv444p",
    "yuv422p": "yuv444p",
    "yuv420p10le": "yuv444p10le",
    "yuv422p10le": "yuv444p10le",
    "yuv420p12le": "yuv444p12le",
    "yuv422p12le": "yuv444p12le",
}
SEGMENT_FORMAT = "mp4"
"""Segment container of every encoder but those in `MOV_ONLY_CODECS` (see `segment_format`)."""
DEFAULT_ENCODER_THREADS = 4
"""x264 is deterministic for a FIXED thread count (its `deterministic` option is on by default),
but the bitstream depends on the count, so it is pinned instead of `auto` (= core count).

Measured exception (x264 core 165 in PyAV 18): at some frame widths (160, 176, 192, 224 and
320 px seen; 256 and 640 px stable) the lookahead's assembly reads uninitialised memory and the
lossy bitstream varies from run to run even with one thread; `asm=0` or `mbtree=0` make it
stable, but mbtree off costs about 14 % more bytes at the same CRF on the demo, so it stays on.
Lossless output (libx264rgb qp 0, ffv1) decodes identically whatever the bitstream."""
DNXHR_MIN_SIZE = (256, 120)
"""Smallest frame FFmpeg's DNxHR encoder accepts (measured with FFmpeg 8: 248x144 and 256x112
are refused, 256x120 and 260x144 accepted)."""

# FFmpeg's AVColor* codes used here.
UNSPECIFIED = 2
"""AVCOL_SPC/PRI/TRC_UNSPECIFIED."""
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2
"""AVColorRange: unspecified (decoded as limited), tv/limited, pc/full."""
MATRIX_RGB = 0
"""AVCOL_SPC_RGB: the identity matrix, for RGB-coded output (libx264rgb, ffv1 bgr0)."""

_PRORES_BY_DECODER_PROFILE = {
    "Proxy": "proxy", "LT": "lt", "Standard": "standard", "HQ": "hq", "4444": "4444",
    "XQ": "4444xq",
}
_DNXHR_BY_DECODER_PROFILE = {
    "DNXHR LB": "dnxhr_lb", "DNXHR SQ": "dnxhr_sq", "DNXHR HQ": "dnxhr_hq",
    "DNXHR HQX": "dnxhr_hqx", "DNXHR 444": "dnxhr_444",
}
_DNXHR_PIX_FMT = {"dnxhr_lb": "yuv422p", "dnxhr_sq": "yuv422p", "dnxhr_hq": "yuv422p",
                  "dnxhr_hqx": "yuv422p10le", "dnxhr_444": "yuv444p10le"}
_FAMILY_ENCODER = {"h264": "libx264", "hevc": "libx265", "prores": "prores_ks",
                   "dnxhd": "dnxhd", "ffv1": "ffv1"}
"""Decoder name of the input -> the encoder that answers it in kind (codec `auto`)."""

Chroma = Literal["420", "422", "444"]


@dataclass(frozen=True)
class PixelLayout:
    """What a pixel format holds: chroma layout, bits per sample, alpha, RGB or YUV."""

    chroma: Chroma
    bits: int
    alpha: bool = False
    rgb: bool = False

    @classmethod
    def of(cls, pix_fmt: str) -> PixelLayout:
        """Facts of an FFmpeg pixel format name (nv12 -> 4:2:0 8-bit, p010le -> 4:2:0 10-bit).

        4:1:1 and 4:1:0 map to the next layout that holds all their chroma (4:2:2, 4:2:0), 4:4:0
        to 4:4:4.

        Raises:
            ConfigError: FFmpeg knows no such pixel format.
        """
        try:
            video_format = av.VideoFormat(pix_fmt)
        except (ValueError, av.error.FFmpegError):
            raise ConfigError(f"Unknown pixel format {pix_fmt!r}") from None
        components = video_format.components
        horizontal = video_format.chroma_width(16) < 16
        vertical = video_format.chroma_height(16) < 16
        chroma: Chroma = "420" if horizontal and vertical else "422" if horizontal else "444"
        return cls(
            chroma=chroma,
            bits=max(component.bits for component in components),
            alpha=any(component.is_alpha for component in components),
            rgb=bool(video_format.is_rgb),
        )


@dataclass(frozen=True)
class SourceFormat:
    """What the input is coded as: the facts `auto` settings follow."""

    codec_name: str = ""
    """Decoder name (h264, hevc, prores, dnxhd, ffv1, vp9, ...); empty when unknown."""
    profile: str = ""
    """Decoder's profile name (ProRes `HQ`, `4444`; DNxHR `DNXHR HQX`); empty when none."""
    pix_fmt: str = ""
    """Decoded pixel format; empty when unknown (then 8-bit 4:2:0 is assumed)."""

    @classmethod
    def of(cls, info: VideoInfo) -> SourceFormat:
        return cls(codec_name=info.codec_name, profile=info.profile, pix_fmt=info.pix_fmt)

    @property
    def layout(self) -> PixelLayout:
        return PixelLayout.of(self.pix_fmt) if self.pix_fmt else PixelLayout("420", 8)


@dataclass(frozen=True)
class ColourTags:
    """A stream's colour description, as FFmpeg's AVColor* integer codes."""

    range: int = RANGE_UNSPECIFIED
    """AVColorRange: 0 unspecified, 1 limited (tv), 2 full (pc)."""
    matrix: int = UNSPECIFIED
    """AVColorSpace (1 BT.709, 5/6 BT.601, 9 BT.2020 NCL, 2 unspecified, 0 RGB)."""
    primaries: int = UNSPECIFIED
    """AVColorPrimaries (1 BT.709, 9 BT.2020, 2 unspecified)."""
    transfer: int = UNSPECIFIED
    """AVColorTransferCharacteristic (1 BT.709, 16 PQ, 18 HLG, 2 unspecified)."""

    @classmethod
    def of(cls, info: VideoInfo) -> ColourTags:
        return cls(range=info.color_range, matrix=info.colorspace,
                   primaries=info.color_primaries, transfer=info.color_trc)


def output_colour_tags(source: ColourTags, *, pix_fmt: str) -> ColourTags:
    """The colour description to code and tag for `pix_fmt` output of a `source` input (pure).

    YUV output keeps every tag of the source, each on its own (a `tv` range survives with the
    rest unspecified): the frames were decoded with the source's matrix and range, so encoding
    with the same ones is neutral. RGB output has no matrix (AVCOL_SPC_RGB) and is full range by
    definition; primaries and transfer still describe its light.
    """
    if PixelLayout.of(pix_fmt).rgb:
        return ColourTags(range=RANGE_FULL, matrix=MATRIX_RGB, primaries=source.primaries,
                          transfer=source.transfer)
    matrix = source.matrix if source.matrix != MATRIX_RGB else UNSPECIFIED
    return ColourTags(range=source.range, matrix=matrix, primaries=source.primaries,
                      transfer=source.transfer)


@dataclass(frozen=True)
class EncoderSettings:
    """How segments are encoded; identical for every chunk of a job so segments concatenate."""

    codec: str
    """FFmpeg encoder name, one of `CODECS`."""
    pix_fmt: str
    """Pixel format the encoder codes (the format `av.VideoFrame` input should come in)."""
    options: tuple[tuple[str, str], ...] = ()
    """Encoder private options, e.g. (("crf", "18"), ("preset", "medium"))."""
    threads: int = DEFAULT_ENCODER_THREADS
    """Encoder threads; fixed so that output bytes do not depend on the machine."""
    lossless: bool = False
    """True when decoded output equals the encoder's input frames bit for bit."""
    note: str = ""
    """Why the settings differ from what was asked (empty when they do not)."""
    codec_tag: str = ""
    """Container fourcc to force (hvc1: HEVC that Apple players open); empty = the muxer's."""

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ConfigError(choices_message("codec", self.codec, CODECS))
        if self.threads < 1:
            raise ConfigError(f"Encoder threads must be >= 1, got {self.threads}")

    @property
    def segment_format(self) -> str:
        """The container segments are written in: mov for ProRes and DNxHR, else mp4."""
        return "mov" if self.codec in MOV_ONLY_CODECS else SEGMENT_FORMAT

    @property
    def profile(self) -> str:
        """The ProRes/DNxHR profile among the options; empty for other encoders."""
        return dict(self.options).get("profile", "")


def resolve_codec(codec: str, *, lossless: bool, source: SourceFormat) -> str:
    """The encoder for `codec` (pure): `auto` answers the input in kind.

    H.264 -> libx264, HEVC -> libx265, ProRes -> prores_ks, DNxHD/DNxHR -> dnxhd, FFV1 -> ffv1;
    anything else (VP9, AV1, MPEG-4, ...) -> libx264, or libx265 above 10 bits (x264 stops at
    10). `auto` or libx264 with `lossless` take the lossless RGB path (libx264rgb), auto takes
    ffv1 for FFV1 input.
    """
    if codec == "libx264" and lossless:
        return "libx264rgb"
    if codec != "auto":
        return codec
    family = _FAMILY_ENCODER.get(source.codec_name)
    if lossless:
        return "ffv1" if family == "ffv1" else "libx264rgb"
    if family is not None:
        return family
    return "libx265" if source.layout.bits > 10 else "libx264"


def nearest_pix_fmt(layout: PixelLayout, allowed: Sequence[str]) -> str:
    """The format of `allowed` nearest to `layout` (pure): same chroma and at least its depth if
    possible, never less chroma than asked when a larger layout exists; alpha only if asked.

    The order of preference: an exact (chroma, bits) match; the shallowest deeper format with
    the same chroma; the deepest shallower one; then the same search for a larger chroma layout,
    then a smaller one.
    """
    layouts = {name: PixelLayout.of(name) for name in allowed}
    candidates = [name for name, facts in layouts.items()
                  if not facts.rgb and facts.alpha == layout.alpha] or [
        name for name, facts in layouts.items() if not facts.rgb]
    order: tuple[Chroma, ...] = ("420", "422", "444")
    wanted = order.index(layout.chroma)
    for chroma in (*order[wanted:], *order[:wanted][::-1]):
        same = [name for name in candidates if layouts[name].chroma == chroma]
        deeper = sorted((n for n in same if layouts[n].bits >= layout.bits),
                        key=lambda n: layouts[n].bits)
        shallower = sorted((n for n in same if layouts[n].bits < layout.bits),
                           key=lambda n: -layouts[n].bits)
        if deeper or shallower:
            return (deeper or shallower)[0]
    raise ConfigError(f"No pixel format among {', '.join(allowed)} for {layout}")


def resolve_profile(codec: str, profile: str, *, source: SourceFormat) -> str:
    """The ProRes/DNxHR profile (pure); empty for encoders without profiles.

    `auto`: the input's own profile when it is coded in the same family (ProRes 422 HQ stays HQ,
    DNxHR HQX stays HQX); DNxHD (the fixed-size, pre-HR family) becomes DNxHR HQ at 8 bits or
    HQX at 10. From another codec: ProRes 4444 (4:4:4 or alpha input) or 422 HQ; DNxHR 444
    (4:4:4), HQX (more than 8 bits) or HQ.

    Raises:
        ConfigError: the profile is unknown or belongs to the other encoder.
    """
    if profile not in PROFILES:
        raise ConfigError(choices_message("encode.profile", profile, PROFILES))
    layout = source.layout
    if codec == "prores_ks":
        if profile == "auto":
            if source.codec_name == "prores" and source.profile in _PRORES_BY_DECODER_PROFILE:
                return _PRORES_BY_DECODER_PROFILE[source.profile]
            return "4444" if layout.chroma == "444" or layout.alpha else "hq"
        if profile not in PRORES_PROFILES:
            raise ConfigError(choices_message("encode.profile for prores_ks", profile,
                                              PRORES_PROFILES))
        return profile
    if codec == "dnxhd":
        if profile == "auto":
            if source.codec_name == "dnxhd" and source.profile in _DNXHR_BY_DECODER_PROFILE:
                return _DNXHR_BY_DECODER_PROFILE[source.profile]
            if layout.chroma == "444":
                return "dnxhr_444"
            return "dnxhr_hqx" if layout.bits > 8 else "dnxhr_hq"
        if profile not in DNXHR_PROFILES:
            raise ConfigError(choices_message("encode.profile for dnxhd", profile,
                                              DNXHR_PROFILES))
        return profile
    if profile != "auto":
        raise ConfigError(f"encode.profile={profile!r} applies to prores_ks and dnxhd only, "
                          f"not to {codec}; leave it at auto")
    return ""


def build_encoder_settings(
    *,
    codec: str,
    crf: int,
    preset: str,
    pix_fmt: str,
    lossless: bool,
    width: int,
    height: int,
    threads: int = DEFAULT_ENCODER_THREADS,
    profile: str = "auto",
    source: SourceFormat | None = None,
) -> EncoderSettings:
    """Choose segment encoder settings for a job (pure).

    Args:
        codec: Requested encoder, one of `formats.CODECS` (`auto`: see `resolve_codec`).
        crf: x264/x265 constant rate factor, 0..51 (lower is better; 18 is visually lossless).
            Intra mezzanine codecs (ProRes, DNxHR) have fixed-quality profiles instead.
        preset: x264/x265 speed preset, one of `X264_PRESETS`.
        pix_fmt: Requested pixel format, one of `formats.PIX_FMTS` (`auto`: the input's chroma
            and depth, as near as the encoder allows: `nearest_pix_fmt`).
        lossless: Decoded output must equal the encoder's input frames exactly: libx264rgb at
            qp 0 (BGR frames: no chroma subsampling, no colour conversion), or FFV1 when
            `codec` is ffv1 (BGR0 for 8-bit input, the input's YUV layout above 8 bits).
        width: Frame width in pixels.
        height: Frame height in pixels.
        threads: Encoder threads (fixed, for determinism).
        profile: ProRes/DNxHR profile, one of `formats.PROFILES` (`auto`: `resolve_profile`).
        source: How the input is coded (None: unknown, 8-bit 4:2:0 H.264 assumed).

    Raises:
        ConfigError: A value is unknown, out of range or impossible for this frame size; the
            message lists the allowed ones.
    """
    source = source or SourceFormat()
    if codec not in CONFIG_CODECS:
        raise ConfigError(choices_message("codec", codec, CONFIG_CODECS))
    if preset not in X264_PRESETS:
        raise ConfigError(choices_message("x264 preset", preset, X264_PRESETS))
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ConfigError(f"crf must be an integer in 0..51, got {crf!r}")
    if width < 1 or height < 1:
        raise ConfigError(f"Frame size must be positive, got {width}x{height}")
    if pix_fmt not in PIX_FMTS:
        raise ConfigError(choices_message("pix_fmt", pix_fmt, PIX_FMTS))
    chosen = resolve_codec(codec, lossless=lossless, source=source)
    chosen_profile = resolve_profile(chosen, profile, source=source)
    notes: list[str] = []
    if codec == "auto" and chosen != "libx264":
        notes.append(f"codec auto: {chosen} for {source.codec_name or 'the'} input")

    if chosen == "ffv1":
        if not lossless:
            notes.append("ffv1 is always lossless; crf and preset do not apply")
        # FFV1 level 3 codes slices independently (threads) with CRCs; the output is still
        # a pure function of the input. bgr0 is BGR24 with a padding byte: no colour conversion
        # of 8-bit BGR frames; deeper input keeps its YUV layout and depth.
        if pix_fmt != "auto":
            ffv1_format = _require_supported("ffv1", pix_fmt)
        elif source.layout.bits > 8 or (source.codec_name == "ffv1" and not source.layout.rgb):
            ffv1_format = nearest_pix_fmt(source.layout, ENCODER_PIX_FMTS["ffv1"][1:])
        else:
            ffv1_format = "bgr0"
        return EncoderSettings(codec="ffv1", pix_fmt=ffv1_format,
                               options=(("level", "3"), ("slicecrc", "1")), threads=threads,
                               lossless=True, note="; ".join(notes))

    if chosen == "libx264rgb":
        if codec in ("libx264", "auto") and lossless:
            notes.append("lossless: libx264rgb at qp 0 (yuv would lose precision converting)")
        rate = (("qp", "0"),) if lossless else (("crf", str(crf)),)
        return EncoderSettings(codec="libx264rgb", pix_fmt="bgr24",
                               options=(*rate, ("preset", preset)), threads=threads,
                               lossless=lossless, note="; ".join(notes))

    if lossless:
        raise ConfigError(f"encode.lossless=true needs codec auto, libx264, libx264rgb or ffv1, "
                          f"not {chosen}")

    if chosen == "prores_ks":
        wanted = ("yuva444p10le" if source.layout.alpha else "yuv444p10le") \
            if chosen_profile in ("4444", "4444xq") else "yuv422p10le"
        prores_format = _explicit_or(pix_fmt, wanted, chosen, chosen_profile)
        # vendor apl0: Final Cut and other Apple tools read the stream as their own.
        return EncoderSettings(codec="prores_ks", pix_fmt=prores_format,
                               options=(("profile", chosen_profile), ("vendor", "apl0")),
                               threads=threads, note="; ".join(notes))

    if chosen == "dnxhd":
        if width < DNXHR_MIN_SIZE[0] or height < DNXHR_MIN_SIZE[1]:
            raise ConfigError(f"DNxHR needs frames of at least {DNXHR_MIN_SIZE[0]}x"
                              f"{DNXHR_MIN_SIZE[1]}, got {width}x{height}; choose "
                              "encode.codec=prores_ks or ffv1")
        dnx_format = _explicit_or(pix_fmt, _DNXHR_PIX_FMT[chosen_profile], chosen, chosen_profile)
        return EncoderSettings(codec="dnxhd", pix_fmt=dnx_format,
                               options=(("profile", chosen_profile),), threads=threads,
                               note="; ".join(notes))

    # libx264 / libx265
    if pix_fmt == "auto":
        chosen_pix_fmt = nearest_pix_fmt(source.layout, ENCODER_PIX_FMTS[chosen])
        if PixelLayout.of(chosen_pix_fmt).bits < source.layout.bits:
            notes.append(f"{chosen} codes at most {PixelLayout.of(chosen_pix_fmt).bits} bits: "
                         f"{chosen_pix_fmt} for {source.pix_fmt} input (libx265 keeps 12)")
    else:
        chosen_pix_fmt = _require_supported(chosen, pix_fmt)
    if (width % 2 or height % 2) and chosen_pix_fmt in _FULL_CHROMA:
        asked = chosen_pix_fmt
        chosen_pix_fmt = _FULL_CHROMA[asked]
        notes.append(f"{width}x{height} is odd and {chosen} {asked} needs even sizes: using "
                     f"{chosen_pix_fmt}")
    options: tuple[tuple[str, str], ...] = (("crf", str(crf)), ("preset", preset))
    codec_tag = ""
    if chosen == "libx265":
        # x265 logs every frame's statistics on stderr otherwise. hvc1 (parameter sets in the
        # sample description) is the HEVC tag Apple players and browsers open.
        options = (*options, ("x265-params", "log-level=error"))
        codec_tag = "hvc1"
    return EncoderSettings(codec=chosen, pix_fmt=chosen_pix_fmt, options=options,
                           threads=threads, lossless=False, note="; ".join(notes),
                           codec_tag=codec_tag)


def _require_supported(codec: str, pix_fmt: str) -> str:
    allowed = ENCODER_PIX_FMTS[codec]
    if pix_fmt not in allowed:
        raise ConfigError(choices_message(f"pix_fmt for {codec}", pix_fmt, allowed))
    return pix_fmt


def _explicit_or(pix_fmt: str, wanted: str, codec: str, profile: str) -> str:
    """The profile's own pixel format, or an explicit one that has the same chroma layout."""
    if pix_fmt == "auto":
        return wanted
    explicit = _require_supported(codec, pix_fmt)
    if PixelLayout.of(explicit).chroma != PixelLayout.of(wanted).chroma:
        raise ConfigError(f"encode.pix_fmt={pix_fmt!r} does not fit {codec} profile {profile} "
                          f"(which codes {wanted}); set encode.pix_fmt=auto or another profile")
    return explicit


def settings_for_video(encode: EncodeConfig, info: VideoInfo, *, threads: int | None = None
                       ) -> EncoderSettings:
    """`build_encoder_settings` for a job: the config's `encode` section over `info`'s input."""
    return build_encoder_settings(
        codec=encode.codec,
        crf=encode.crf,
        preset=encode.preset,
        pix_fmt=encode.pix_fmt,
        lossless=encode.lossless,
        profile=encode.profile,
        width=info.width,
        height=info.height,
        threads=threads or DEFAULT_ENCODER_THREADS,
        source=SourceFormat.of(info),
    )


def mp4_muxer_options(format_name: str, time_bases: Iterable[Fraction]) -> dict[str, str]:
    """Muxer options that keep every start time exact in MP4/MOV (pure); {} for others.

    The movie timescale counts the edit lists' durations (a start pts > 0, the B-frame delay):
    the least common multiple of the streams' track timescales (each time-base denominator
    doubled until >= 10000, as the muxer does), so every edit is a whole number of ticks.
    Falls back to the first stream's alone when the multiple does not fit 31 bits.
    """
    if format_name not in ("mp4", "mov"):
        return {}
    scales = [_track_timescale(Fraction(time_base)) for time_base in time_bases]
    if not scales:
        return {}
    scale = math.lcm(*scales)
    if scale >= 2**31:
        scale = scales[0]
    return {"movie_timescale": str(scale)}


def _track_timescale(time_base: Fraction) -> int:
    scale = time_base.denominator
    while scale < 10000:
        scale *= 2
    return scale


@dataclass(frozen=True)
class SegmentInfo:
    """What `encode_segment` wrote."""

    frame_count: int
    byte_size: int
    sha256: str
    """Hex digest of the segment file."""
    first_pts: int
    """Source pts of the first frame, in the source time base."""
    last_pts: int


SegmentFrame = np.ndarray | av.VideoFrame
"""A frame for `encode_segment`: BGR ndarray (uint8 for 8-bit, uint16 full-scale for deeper
input), or an `av.VideoFrame`, ideally already in the settings' pix_fmt (then no conversion)."""


def encode_segment(
    frames: Iterable[SegmentFrame],
    *,
    pts: Sequence[int],
    info: VideoInfo,
    settings: EncoderSettings,
    path: str | os.PathLike[str],
    lookahead: Iterable[SegmentFrame] = (),
    lookahead_pts: Sequence[int] = (),
) -> SegmentInfo:
    """Encode the owned frames of one chunk into a self-contained segment file.

    The file appears at `path` only when complete (written under a temporary name, then
    renamed), so a crashed worker never leaves a truncated segment that looks finished.

    Args:
        frames: Frames in presentation order (see `SegmentFrame`), each (info.height,
            info.width); consumed one at a time.
        pts: Source pts of each frame, strictly increasing, in `info.time_base` units.
        info: Probe result of the source (size, time base, colour description).
        settings: From `build_encoder_settings`; the same for every segment of a job.
        path: Where to write the segment.
        lookahead: Frames that follow the segment (the next chunk's first frames, which the
            chunk's read range holds anyway), with `lookahead_pts`. The encoder sees them, so
            rate control treats the segment's last frames as it would mid-stream, then they
            start a new closed GOP and their packets are dropped (measurements: the comment
            above `_encode_into`).
            Ignored by intra-only encoders.
        lookahead_pts: Their source pts, each above the last of `pts`.

    Raises:
        ValueError: A frame has the wrong shape, dtype or size, or frames and pts differ in
            count.
        MediaError: The encoder or muxer failed.
    """
    final_path = Path(path)
    # Per thread too: a driver thread left behind on a hung chunk may still be writing the
    # same segment when its retry writes it on another (`fusionray.jobs.inline`).
    temporary_path = final_path.with_name(
        f".{final_path.name}.partial-{os.getpid()}-{threading.get_native_id()}")
    try:
        with open(temporary_path, "wb") as file:
            _encode_into(file, frames, pts=pts, info=info, settings=settings,
                         lookahead=lookahead, lookahead_pts=lookahead_pts)
        digest = hashlib.sha256()
        with open(temporary_path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        os.replace(temporary_path, final_path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
    return SegmentInfo(
        frame_count=len(pts),
        byte_size=final_path.stat().st_size,
        sha256=digest.hexdigest(),
        first_pts=int(pts[0]),
        last_pts=int(pts[-1]),
    )


def encode_segment_bytes(
    frames: Iterable[SegmentFrame],
    *,
    pts: Sequence[int],
    info: VideoInfo,
    settings: EncoderSettings,
    lookahead: Iterable[SegmentFrame] = (),
    lookahead_pts: Sequence[int] = (),
) -> bytes:
    """Like `encode_segment`, returning the segment file's bytes (for Ray to ship)."""
    buffer = io.BytesIO()
    _encode_into(buffer, frames, pts=pts, info=info, settings=settings, lookahead=lookahead,
                 lookahead_pts=lookahead_pts)
    return buffer.getvalue()


_ROUNDED = Interpolation.AREA | Interpolation.ACCURATE_RND
"""swscale with correct rounding and box-filtered chroma. Its default truncates: BGR -> yuv420p
came out 0.50 luma codes dark on average (random 8-bit BGR, BT.709 limited), ACCURATE_RND 0.01.
For the chroma, AREA keeps the most detail of the choices measured on the test clips' BGR round
trip (PSNR: AREA 33.4 dB, default fast path 32.5, BICUBIC 32.3, BILINEAR 31.0)."""


class _FrameConverter:
    """Turns `SegmentFrame`s into encoder input in the settings' format and colour."""

    def __init__(self, info: VideoInfo, settings: EncoderSettings, colour: ColourTags) -> None:
        self.shape = (info.height, info.width)
        self.pix_fmt = settings.pix_fmt
        self.colour = colour
        yuv = not PixelLayout.of(settings.pix_fmt).rgb
        # Convert with the source's matrix and range: decoding used them (PyAV honours the
        # frame's tags), so the BGR round trip is neutral. Unspecified stays unspecified, which
        # swscale reads as BT.601 limited on both sides.
        self.matrix = colour.matrix if yuv and colour.matrix != UNSPECIFIED else None
        self.range = colour.range if yuv and colour.range != RANGE_UNSPECIFIED else None

    def __call__(self, frame: SegmentFrame, number: int) -> av.VideoFrame:
        if isinstance(frame, av.VideoFrame):
            if (frame.height, frame.width) != self.shape:
                raise ValueError(f"Frame {number} of the segment is {frame.width}x{frame.height}"
                                 f", expected {self.shape[1]}x{self.shape[0]}")
            if frame.format.name != self.pix_fmt:
                frame = frame.reformat(format=self.pix_fmt, dst_colorspace=self.matrix,
                                       src_color_range=frame.color_range or None,
                                       dst_color_range=self.range, interpolation=_ROUNDED)
        else:
            expected = (*self.shape, 3)
            if frame.shape != expected or frame.dtype not in (np.uint8, np.uint16):
                raise ValueError(
                    f"Frame {number} of the segment is {frame.dtype} {frame.shape}, "
                    f"expected uint8 or uint16 {expected}"
                )
            layout = "bgr24" if frame.dtype == np.uint8 else "bgr48le"
            frame = av.VideoFrame.from_ndarray(frame, format=layout)
            if self.pix_fmt != layout:
                frame = frame.reformat(format=self.pix_fmt, dst_colorspace=self.matrix,
                                       dst_color_range=self.range, interpolation=_ROUNDED)
        # Encoders read some tags from the frame, others from the codec context: set both.
        frame.color_range = self.colour.range
        if self.matrix is not None:
            frame.colorspace = self.matrix
        frame.color_primaries = self.colour.primaries
        frame.color_trc = self.colour.transfer
        return frame


# Why segments take look-ahead frames (measured: libx264 crf 18 medium, 640x360 face clip,
# 48-frame chunks, per-frame PSNR against the input). A fresh encoder per chunk codes the IDR
# at a join as well as a one-pass encode does (39.05 vs 39.23 dB), but the last ~4 frames
# before each join lose about 1.5 dB (37.57 vs 39.13): with no future frames, rate control and
# mb-tree treat them as the end of the stream. The dip before a join against the one-pass
# encode: no look-ahead 1.52 dB, 8 frames 0.79 dB (tests/test_media_fidelity.py). Jump of
# per-frame PSNR at the joins (typical frame-to-frame jump 0.15 dB): none 1.48 dB, 4 frames
# 0.95, 8 frames 0.77, 16 frames 0.54; mb-tree off shrinks it too (0.87) at ~14 % more bytes.


def _encode_into(
    target: IO[bytes],
    frames: Iterable[SegmentFrame],
    *,
    pts: Sequence[int],
    info: VideoInfo,
    settings: EncoderSettings,
    lookahead: Iterable[SegmentFrame] = (),
    lookahead_pts: Sequence[int] = (),
) -> None:
    if not pts:
        raise ValueError("A segment needs at least one frame; pts is empty")
    for previous, current in itertools.pairwise([*pts, *lookahead_pts]):
        if current <= previous:
            raise ValueError(f"Segment pts must increase strictly, got {previous} then {current}")
    if settings.codec in INTRA_CODECS:
        lookahead_pts = ()  # every frame is a keyframe: nothing to gain
    stop_pts = lookahead_pts[0] if lookahead_pts else None

    all_pts = [*pts, *lookahead_pts]
    span = all_pts[-1] - all_pts[0] + 1
    last_dts: list[int] = []

    def owned(packets: list[av.Packet]) -> list[av.Packet]:
        kept = [p for p in packets if stop_pts is None or p.pts is None or p.pts < stop_pts]
        for packet in kept:
            dts, packet_pts = packet.dts, packet.pts
            if dts is None or packet_pts is None:
                continue
            # libx265 gives a 2-3 frame segment's first packet an uninitialised dts now and
            # then (measured: about 1 in 10 runs, e.g. -1.2e17), which the MP4 muxer refuses.
            # A dts is sane when it is not after its pts, increases, and lies within the
            # segment's span before the first pts (the reorder delay).
            previous = last_dts[-1] if last_dts else None
            if dts > packet_pts or (previous is None and dts < all_pts[0] - span) or (
                    previous is not None and dts <= previous):
                packet.dts = dts = packet_pts if previous is None else min(packet_pts,
                                                                           previous + 1)
            last_dts[:] = [dts]
        return kept

    time_base = Fraction(info.time_base)
    colour = output_colour_tags(ColourTags.of(info), pix_fmt=settings.pix_fmt)
    convert = _FrameConverter(info, settings, colour)
    target_name = getattr(target, "name", "<memory>")
    muxer_options = mp4_muxer_options(settings.segment_format, [time_base])
    try:
        with av.open(target, mode="w", format=settings.segment_format,
                     options=muxer_options) as container:
            stream = container.add_stream(settings.codec, rate=info.average_rate or Fraction(25))
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height = info.width, info.height
            stream.pix_fmt = settings.pix_fmt
            if settings.codec_tag:
                stream.codec_tag = settings.codec_tag
            # The source time base end to end: frame pts go in unchanged and MP4 stores them
            # exactly (see the module docstring).
            stream.time_base = time_base
            context = stream.codec_context
            context.time_base = time_base
            context.thread_count = settings.threads
            options = dict(settings.options)
            if stop_pts is not None:
                # The first look-ahead frame is forced to an IDR (not an open-GOP I/CRA), so
                # no owned frame can reference the frames whose packets are dropped. Forcing
                # changes no header: segments with and without look-ahead still concatenate.
                options["forced-idr"] = "1"
            context.options = options
            context.color_range = colour.range
            context.color_primaries = colour.primaries
            context.color_trc = colour.transfer
            if colour.matrix != UNSPECIFIED:
                context.colorspace = colour.matrix
            count = 0
            for item in frames:
                if count == len(pts):
                    raise ValueError(f"More frames than pts ({len(pts)}) for this segment")
                frame = convert(item, count)
                frame.pts = int(pts[count])
                frame.time_base = time_base
                container.mux(owned(stream.encode(frame)))
                count += 1
            if count != len(pts):
                raise ValueError(f"Got {count} frames for {len(pts)} pts in this segment")
            if stop_pts is not None:
                extra = 0
                for item in lookahead:
                    if extra == len(lookahead_pts):
                        raise ValueError(f"More look-ahead frames than lookahead_pts "
                                         f"({len(lookahead_pts)})")
                    frame = convert(item, count + extra)
                    frame.pts = int(lookahead_pts[extra])
                    frame.time_base = time_base
                    if extra == 0:
                        frame.pict_type = av.video.frame.PictureType.I
                    container.mux(owned(stream.encode(frame)))
                    extra += 1
                if extra != len(lookahead_pts):
                    raise ValueError(f"Got {extra} look-ahead frames for {len(lookahead_pts)} "
                                     "lookahead_pts")
            container.mux(owned(stream.encode(None)))
    except av.error.FFmpegError as error:
        raise MediaError(f"Cannot encode segment {target_name!r} ({error})") from error

