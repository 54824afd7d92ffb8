"""OpenEXR frames of an image sequence: read, shown as a display image, written back.

Files are read and written with OpenEXR's own Python package (`OpenEXR`), which keeps half
floats as half and every header attribute. A frame must be one part, with channels R, G, B
(and optionally A), R/G/B all HALF or all FLOAT, no subsampling; anything else is refused by
name. Its pixel format in `VideoInfo` says the RGB type and alpha (`EXR_PIX_FMTS`).

The render sees the display image of `fusionray.media.display` (linear -> clip [0, 1] -> sRGB
OETF -> 16 bits) as an `rgb48le` frame. On output (`encode_display_frame`) the original file is
read again and only the pixels whose display value the swap changed get the inverse curve;
every other sample keeps its bits. A frame with no changed pixel is the original file's bytes.
A changed frame is written with the original header (channel names, types, windows, line
order, attributes) and compression, except that a lossy compression (`LOSSY_COMPRESSIONS`) is
replaced by ZIP: recompressing would alter the untouched pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import OpenEXR

from fusionray.errors import MediaError
from fusionray.media.display import merge_display, to_display
from fusionray.media.formats import SEQUENCE_PIX_FMTS

EXR_PIX_FMTS = {("half", False): "rgbf16le", ("half", True): "rgbaf16le",
                ("float", False): "rgbf32le", ("float", True): "rgbaf32le"}
"""(RGB sample type, has alpha) -> the pixel format name a probe reports (the FFmpeg names of
those layouts); `SEQUENCE_PIX_FMTS["exr"]` lists the same names."""
assert set(EXR_PIX_FMTS.values()) == set(SEQUENCE_PIX_FMTS["exr"])
_TYPES = {np.dtype(np.float16): "half", np.dtype(np.float32): "float"}
LOSSY_COMPRESSIONS = frozenset(
    getattr(OpenEXR, name) for name in ("B44_COMPRESSION", "B44A_COMPRESSION",
                                        "DWAA_COMPRESSION", "DWAB_COMPRESSION",
                                        "PXR24_COMPRESSION") if hasattr(OpenEXR, name))
"""Compressions that do not keep every float bit; changed frames are written with ZIP instead."""


@dataclass(frozen=True)
class ExrFrame:
    """One EXR file's pixels and what is needed to write it back."""

    rgb: npt.NDArray[np.floating]
    """(height, width, 3) linear R, G, B as stored (float16 or float32)."""
    alpha: npt.NDArray[np.floating] | None
    """(height, width) alpha in its own type (it may differ from RGB's), or None."""
    header: dict[str, Any]
    """The file's header attributes, as `OpenEXR.File.header()` gives them."""

    @property
    def pix_fmt(self) -> str:
        return EXR_PIX_FMTS[(_TYPES[self.rgb.dtype], self.alpha is not None)]


def read_exr(path: Path) -> ExrFrame:
    """Read one EXR frame.

    Raises:
        MediaError: the file is missing or not EXR, has several parts, or its channels are not
            R, G, B(, A) with R/G/B all half or all float and no subsampling.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise MediaError(f"Cannot read frame {str(path)!r}: {error.strerror or error}") from None
    try:
        file = OpenEXR.File(io.BytesIO(data), separate_channels=True)
        if len(file.parts) != 1:
            raise MediaError(f"{str(path)!r} has {len(file.parts)} parts; OpenEXR sequences "
                             "support single-part files only")
        header = dict(file.header())
        channels = file.channels()
    except MediaError:
        raise
    except Exception as error:  # OpenEXR raises plain exceptions for damaged files
        raise MediaError(f"Cannot decode frame {str(path)!r} as OpenEXR ({error})") from None
    names = sorted(channels)
    if names not in (["B", "G", "R"], ["A", "B", "G", "R"]):
        raise MediaError(f"Unsupported OpenEXR channels {names} in {str(path)!r}; supported: "
                         "R, G, B or R, G, B, A (one layer, no prefix)")
    rgb = [np.asarray(channels[name].pixels) for name in "RGB"]
    types = {array.dtype for array in rgb}
    if len(types) != 1 or next(iter(types)) not in _TYPES or any(
            channels[n].xSampling != 1 or channels[n].ySampling != 1 for n in names):
        found = ", ".join(f"{n}={channels[n].type().name}" for n in "RGB")
        raise MediaError(f"Unsupported OpenEXR pixel types ({found}) in {str(path)!r}; "
                         "supported: R, G, B all HALF or all FLOAT, without subsampling")
    alpha = np.asarray(channels["A"].pixels) if "A" in channels else None
    return ExrFrame(rgb=np.stack(rgb, axis=-1), alpha=alpha, header=header)


def display_frame(frame: ExrFrame) -> av.VideoFrame:
    """The frame's display image (`fusionray.media.display.to_display`) as an `rgb48le`
    `av.VideoFrame`, tagged full range."""
    video = av.VideoFrame.from_ndarray(np.ascontiguousarray(to_display(frame.rgb)),
                                       format="rgb48le")
    video.color_range = 2
    return video


def encode_display_frame(rendered: av.VideoFrame, original_path: Path) -> bytes:
    """The output file of one frame: `rendered` (its display image after the swap, any RGB
    working format) written back into the original file at `original_path`.

    Returns the original file's bytes when no pixel's display value changed; otherwise an EXR
    with the original header, channel names and sample types, in which only the changed
    pixels' R, G, B differ (`merge_display`).

    Raises:
        MediaError: the original cannot be read, or its size is not the rendered frame's.
    """
    original = read_exr(original_path)
    display = np.asarray(rendered.to_ndarray(format="rgb48le"), np.uint16)
    if display.shape != original.rgb.shape:
        raise MediaError(f"Rendered frame {display.shape[1]}x{display.shape[0]} does not match "
                         f"{str(original_path)!r} ({original.rgb.shape[1]}x"
                         f"{original.rgb.shape[0]})")
    merged, changed = merge_display(original.rgb, display)
    if not changed:
        return original_path.read_bytes()
    channels = {name: np.ascontiguousarray(merged[..., i]) for i, name in enumerate("RGB")}
    if original.alpha is not None:
        channels["A"] = original.alpha
    return write_exr(original.header, channels)


def write_exr(header: dict[str, Any], channels: dict[str, npt.NDArray[np.floating]]) -> bytes:
    """An EXR file's bytes: `channels` (name -> (h, w) array, its dtype the sample type) with
    `header`'s attributes; a lossy compression becomes ZIP (see module docstring).

    Raises:
        MediaError: OpenEXR refuses the header or pixels.
    """
    header = {key: value for key, value in header.items() if key != "channels"}
    if header.get("compression") in LOSSY_COMPRESSIONS:
        header["compression"] = OpenEXR.ZIP_COMPRESSION
    buffer = io.BytesIO()
    try:
        OpenEXR.File(header, channels).write(buffer)
    except Exception as error:  # OpenEXR raises plain exceptions
        raise MediaError(f"Cannot encode an OpenEXR frame ({error})") from None
    return buffer.getvalue()
