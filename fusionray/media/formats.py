"""The one vocabulary of output codecs, pixel formats and profiles (no PyAV import).

`fusionray.config` validates `encode.*` against these tuples and `fusionray.media.encode`
resolves them, so a value the config accepts is a value the encoder knows, and the other way
round. `auto` everywhere means "answer the input in kind" (see `media.encode`).
"""

from __future__ import annotations

CODECS = ("auto", "libx264", "libx264rgb", "libx265", "prores_ks", "dnxhd", "ffv1")
"""Output video encoders. auto: the input's own family (H.264 -> libx264, HEVC -> libx265,
ProRes -> prores_ks, DNxHD/DNxHR -> dnxhd, FFV1 -> ffv1), anything else -> libx264 (libx265
above 10 bits)."""

PIX_FMTS = (
    "auto",
    "yuv420p", "yuv422p", "yuv444p",
    "yuv420p10le", "yuv422p10le", "yuv444p10le",
    "yuv420p12le", "yuv422p12le", "yuv444p12le",
    "yuva444p10le",
)
"""Output pixel formats the config accepts; auto: the input's chroma layout and bit depth, as
near as the chosen encoder allows."""

PRORES_PROFILES = ("proxy", "lt", "standard", "hq", "4444", "4444xq")
"""prores_ks profiles, lightest first; 4444 and 4444xq code 4:4:4 (with alpha when the input has
it), the others 4:2:2 10-bit."""
DNXHR_PROFILES = ("dnxhr_lb", "dnxhr_sq", "dnxhr_hq", "dnxhr_hqx", "dnxhr_444")
"""dnxhd encoder profiles (DNxHR: any frame size). lb/sq/hq: 4:2:2 8-bit; hqx: 4:2:2 10-bit;
444: 4:4:4 10-bit."""
PROFILES = ("auto", *PRORES_PROFILES, *DNXHR_PROFILES)
"""`encode.profile` values; auto: the input's profile when it is coded in the same family."""

INTRA_CODECS = frozenset({"prores_ks", "dnxhd", "ffv1"})
"""Encoders whose every frame is a keyframe: segment joins are invisible by construction."""
MOV_ONLY_CODECS = frozenset({"prores_ks", "dnxhd"})
"""Encoders whose output belongs in QuickTime (.mov) or Matroska, never in .mp4."""
NOT_FOR_PLAYERS_CODECS: dict[str, str] = {"libx264rgb": ".mov", "ffv1": ".mkv"}
"""Encoders .mp4 may hold but common players (QuickTime, browsers, most editors) do not open
from it (RGB H.264, High 4:4:4 Predictive; FFV1) -> their default output container instead of
.mp4: .mov for RGB H.264 (a mezzanine container; exact time base and timecode), Matroska for
FFV1 (its archival home; FFmpeg's QuickTime muxer does not take it)."""

SEQUENCE_CODECS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".dpx": "dpx", ".exr": "exr"}
"""Image-sequence frame files by extension (lower case) -> the image codec that reads and
writes them (`fusionray.media.sequence`): FFmpeg's for PNG, TIFF and DPX; OpenEXR's own
library for `exr` (`fusionray.media.exr`, linear frames shown through
`fusionray.media.display`)."""
SEQUENCE_PIX_FMTS = {
    "png": ("rgb24", "rgb48be"),
    "tiff": ("rgb24", "rgb48le"),
    "dpx": ("rgb24", "rgb48le", "rgb48be", "gbrp10le", "gbrp10be", "gbrp12le", "gbrp12be"),
    "exr": ("rgbf16le", "rgbaf16le", "rgbf32le", "rgbaf32le"),
}
"""Frame pixel formats a sequence keeps bit for bit, per codec: frames are written back in the
input's own format. For `exr` the names say the R/G/B sample type (f16 = HALF, f32 = FLOAT)
and whether an A channel rides along (kept untouched). (Alpha and grey frames of the other
codecs are not among them yet.)"""
