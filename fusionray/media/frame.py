"""Decoded frames kept in their own planes: only the faces' regions go to BGR and back.

A render used to convert every frame to full-size BGR24 and back to YUV for the encoder: two
full-frame colour conversions (each rounding, FFmpeg's default one about half a code low per
direction), up to two rotations, and copies, for a change that covers a few percent of the
picture. Here a frame stays an `av.VideoFrame` in the encoder's pixel format (`PlaneFrame`).
For each face region (`face_regions`) the planes are converted to BGR with the frame's own
matrix (BT.601 / 709 / 2020 ...) and range (limited / full), in float32 with round-to-nearest
(`PlaneFrame.read_bgr`); the swap engine works on that small BGR image, and only the samples
the swap changed are written back (`PlaneFrame.write_bgr`): a pixel whose BGR value came back
unchanged keeps its samples exactly, and a chroma sample changes only where a pixel of its 2x2
(4:2:0) or 2x1 (4:2:2) cell did. So everything outside the swapped faces comes back bit for
bit, at any bit depth.

Bit depth. Swap engines take uint8 BGR. For 10/12/16-bit YUV the region is converted in float32
and rounded to uint8 for the engine; the pixels the engine changed are converted back from its
uint8 result at the frame's own depth (so the swapped face has the engine's 8-bit precision,
exactly represented), and every pixel it did not change keeps its full-precision samples.
(Carrying the original's sub-8-bit residual into changed pixels was measured: no better on
average, since how much of the original a blended pixel keeps is unknown.)

Detector input. `small_bgr` has swscale produce a BGR image already at the detector's input
size from the planes, instead of a full-size BGR frame that the detector then shrinks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import av
import cv2
import numpy as np
import numpy.typing as npt
from av.video.reformatter import Interpolation

from fusionray.errors import MediaError
from fusionray.faces.align import face_to_template_matrix, warp_template_matrix
from fusionray.types import Face, FrameBGR

Rect = tuple[int, int, int, int]
"""(x0, y0, x1, y1) pixel rectangle, half-open."""

_YUV = re.compile(r"^yuvj?(420|422|444)p(?:(9|10|12|14|16)le)?$")
_PACKED = {"bgr24": ("bgr", 3), "rgb24": ("rgb", 3), "bgr0": ("bgr", 4), "bgra": ("bgr", 4)}
# 16 bits per sample, native (little-endian) order: image sequences deeper than 8 bits.
_PACKED16 = {"rgb48le": ("rgb", 3), "bgr48le": ("bgr", 3)}
SUPPORTED_PIX_FMTS = ("yuv420p", "yuv422p", "yuv444p", "yuvj420p", "yuvj422p", "yuvj444p",
                      "yuv4xxp10le / 12le / 16le", *_PACKED, *_PACKED16)
"""Pixel formats a `PlaneFrame` can hold (for error messages; the YUV family by pattern)."""

# Kr, Kb per FFmpeg AVColorSpace. Unspecified (2) and reserved decode as BT.601, which is what
# FFmpeg's own converters assume, so an untagged input is read the way every player reads it.
_MATRICES: dict[int, tuple[float, float]] = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG (BT.601 625)
    6: (0.299, 0.114),  # SMPTE 170M (BT.601 525)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
    10: (0.2627, 0.0593),  # BT.2020 constant luminance: approximated by the NCL matrix
}
_RGB_MATRIX, _YCGCO_MATRIX = 0, 8
RANGE_LIMITED, RANGE_FULL = 1, 2
"""FFmpeg AVColorRange values (0 is unspecified)."""
# Accurate rounding, bit-exact, full chroma interpolation: FFmpeg's fast default paths round
# yuv <-> rgb about half a code low each way (the 1.6-code darkening the old path showed).
_SWS = Interpolation
SWS_ACCURATE = (_SWS.BICUBIC | _SWS.ACCURATE_RND | _SWS.BITEXACT | _SWS.FULL_CHR_H_INT
                | _SWS.FULL_CHR_H_INP)
# The detector's image: plain area averaging on swscale's SIMD path (measured at 640x360:
# 0.24 ms, against 1.6 ms with the accurate flags and 0.41 ms for a full-size bgr24 frame);
# detection does not need exact rounding, and the result is still deterministic per machine.
SWS_SHRINK = _SWS.AREA


@dataclass(frozen=True)
class PixelLayout:
    """How a pixel format stores its samples."""

    pix_fmt: str
    kind: Literal["yuv", "bgr", "rgb"]
    bits: int
    """Bits per sample (8, 9, 10, 12, 14 or 16)."""
    chroma_shift: tuple[int, int] = (0, 0)
    """log2 of the chroma subsampling (x, y): (1, 1) 4:2:0, (1, 0) 4:2:2, (0, 0) 4:4:4."""
    pixel_bytes: int = 1
    """Samples per pixel of a packed RGB format (3 or 4; bytes at 8 bits), 1 for planar."""

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        return np.dtype("<u2") if self.bits > 8 else np.dtype(np.uint8)


def pixel_layout(pix_fmt: str) -> PixelLayout:
    """The layout of `pix_fmt`.

    Raises:
        MediaError: a format a `PlaneFrame` cannot hold, naming the ones it can.
    """
    match = _YUV.match(pix_fmt)
    if match:
        shift = {"420": (1, 1), "422": (1, 0), "444": (0, 0)}[match.group(1)]
        return PixelLayout(pix_fmt, "yuv", int(match.group(2) or 8), shift)
    if pix_fmt in _PACKED:
        kind, size = _PACKED[pix_fmt]
        return PixelLayout(pix_fmt, kind, 8, pixel_bytes=size)  # type: ignore[arg-type]
    if pix_fmt in _PACKED16:
        kind, size = _PACKED16[pix_fmt]
        return PixelLayout(pix_fmt, kind, 16, pixel_bytes=size)  # type: ignore[arg-type]
    raise MediaError(f"Unsupported working pixel format {pix_fmt!r}. Choose one of: "
                     + ", ".join(SUPPORTED_PIX_FMTS))


@dataclass(frozen=True)
class YuvMatrix:
    """Y'CbCr <-> R'G'B' for one matrix, range and bit depth (ITU-T H.273 equations).

    BGR is in 8-bit units (0..255 float) whatever the YUV depth, because swap engines work on
    uint8 BGR.
    """

    kr: float
    kb: float
    full_range: bool
    bits: int

    @property
    def _scales(self) -> tuple[float, float, float]:
        """(luma offset, luma scale, chroma scale) in codes; chroma is centred on 2^(bits-1)."""
        if self.full_range:
            peak = float(2**self.bits - 1)
            return 0.0, peak, peak
        step = float(2 ** (self.bits - 8))
        return 16.0 * step, 219.0 * step, 224.0 * step

    def to_bgr(self, y: npt.NDArray[np.floating], cb: npt.NDArray[np.floating],
               cr: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """Codes (same shapes) -> (..., 3) float64 BGR in 0..255 (not clipped)."""
        offset, luma_scale, chroma_scale = self._scales
        centre = float(2 ** (self.bits - 1))
        luma = (np.asarray(y, np.float64) - offset) / luma_scale
        pb = (np.asarray(cb, np.float64) - centre) / chroma_scale
        pr = (np.asarray(cr, np.float64) - centre) / chroma_scale
        kr, kb = self.kr, self.kb
        red = luma + 2.0 * (1.0 - kr) * pr
        blue = luma + 2.0 * (1.0 - kb) * pb
        green = (luma - kr * red - kb * blue) / (1.0 - kr - kb)
        return np.stack((blue, green, red), axis=-1) * 255.0

    def to_yuv(self, bgr: npt.NDArray[np.floating]) -> tuple[npt.NDArray[np.float64], ...]:
        """(..., 3) BGR in 0..255 -> (y, cb, cr) codes, float64, not rounded or clipped."""
        offset, luma_scale, chroma_scale = self._scales
        centre = float(2 ** (self.bits - 1))
        values = np.asarray(bgr, np.float64) / 255.0
        blue, green, red = values[..., 0], values[..., 1], values[..., 2]
        kr, kb = self.kr, self.kb
        luma = kr * red + (1.0 - kr - kb) * green + kb * blue
        pb = (blue - luma) / (2.0 * (1.0 - kb))
        pr = (red - luma) / (2.0 * (1.0 - kr))
        return (offset + luma_scale * luma, centre + chroma_scale * pb,
                centre + chroma_scale * pr)

    @property
    def bgr_affine(self) -> npt.NDArray[np.float32]:
        """(3, 4) float32 `[A | t]` with BGR = A @ (Y, Cb, Cr) + t: `to_bgr` for `cv2.transform`
        (vectorised float32; the float64 methods are the reference the tests pin)."""
        origin = self.to_bgr(*(np.zeros(1),) * 3)[0]
        columns = [self.to_bgr(*(np.eye(3)[i, j:j + 1] for j in range(3)))[0] - origin
                   for i in range(3)]
        return np.column_stack([*columns, origin]).astype(np.float32)

    @property
    def yuv_delta_linear(self) -> npt.NDArray[np.float32]:
        """(3, 3) float32 mapping a BGR change to the (Y, Cb, Cr) code change."""
        columns = [np.array([c[0] for c in self.delta_to_yuv(np.eye(3)[i][None, :])])
                   for i in range(3)]
        return np.column_stack(columns).astype(np.float32)

    def delta_to_yuv(self, delta_bgr: npt.NDArray[np.floating]) -> tuple[
            npt.NDArray[np.float64], ...]:
        """The code change of a BGR change (the linear part of `to_yuv`, no offsets)."""
        offset, _, _ = self._scales
        centre = float(2 ** (self.bits - 1))
        y, cb, cr = self.to_yuv(delta_bgr)
        return y - offset, cb - centre, cr - centre


def frame_range(frame: av.VideoFrame) -> int:
    """The frame's colour range, `RANGE_FULL` or `RANGE_LIMITED` (unspecified: full for the
    `yuvj` formats, limited otherwise, as FFmpeg reads them)."""
    value = int(frame.color_range)
    if value in (RANGE_LIMITED, RANGE_FULL):
        return value
    return RANGE_FULL if frame.format.name.startswith("yuvj") else RANGE_LIMITED


def frame_matrix(frame: av.VideoFrame, layout: PixelLayout) -> YuvMatrix:
    """The `YuvMatrix` of a YUV frame, from its own tags.

    Raises:
        MediaError: the frame is tagged RGB or YCgCo, which are not Y'CbCr matrices.
    """
    colorspace = int(frame.colorspace)
    if colorspace in (_RGB_MATRIX, _YCGCO_MATRIX):
        raise MediaError(f"Unsupported YUV matrix {colorspace} (AVColorSpace) in a "
                         f"{layout.pix_fmt} frame; supported: BT.601, BT.709, BT.2020, FCC, "
                         "SMPTE 240M")
    kr, kb = _MATRICES.get(colorspace, _MATRICES[6])
    return YuvMatrix(kr, kb, frame_range(frame) == RANGE_FULL, layout.bits)


def working_frame(decoded: av.VideoFrame, pix_fmt: str, *, writable: bool = True
                  ) -> av.VideoFrame:
    """The frame to render into (or, with `writable=False`, to encode untouched), in the
    encoder's `pix_fmt`.

    Same format: the decoded frame itself, made writable when asked (FFmpeg copies its buffers
    only when the decoder still references them, e.g. as a reference picture; writing into
    those would corrupt later frames). Another format: one swscale conversion with accurate
    rounding, from the frame's own matrix and range; a YUV target keeps them, an RGB target is
    full range.
    """
    if decoded.format.name == pix_fmt:
        if writable:
            decoded.make_writable()
        return decoded
    target = pixel_layout(pix_fmt)
    source_range = frame_range(decoded)
    converted = decoded.reformat(
        format=pix_fmt, interpolation=SWS_ACCURATE,
        src_color_range=source_range,
        dst_color_range=source_range if target.kind == "yuv" else RANGE_FULL,
    )
    converted.color_range = source_range if target.kind == "yuv" else RANGE_FULL
    return converted


class PlaneFrame:
    """A frame being rendered: an `av.VideoFrame` in the output pixel format, and numpy views
    on its planes. Face regions are read as BGR (`read_bgr`) and written back (`write_bgr`);
    nothing else is converted. Not thread-safe; one owner at a time."""

    def __init__(self, frame: av.VideoFrame) -> None:
        self.frame = frame
        self.layout = pixel_layout(frame.format.name)
        self.width, self.height = frame.width, frame.height
        layout = self.layout
        if layout.kind == "yuv":
            self.matrix: YuvMatrix | None = frame_matrix(frame, layout)
            self.planes = [self._plane(i) for i in range(3)]
            self._bgr_affine = _affine_of(self.matrix)
            self._yuv_delta = _delta_of(self.matrix)
        else:
            self.matrix = None
            packed = self._plane(0)
            self.planes = [packed.reshape(self.height, self.width, layout.pixel_bytes)]

    def _plane(self, index: int) -> npt.NDArray:
        plane = self.frame.planes[index]
        dtype = self.layout.dtype
        rows = np.frombuffer(memoryview(plane), dtype=dtype).reshape(plane.height,
                                                         plane.line_size // dtype.itemsize)
        samples = plane.width * (self.layout.pixel_bytes if self.layout.kind != "yuv" else 1)
        return rows[:, :samples]

    def align_rect(self, rect: Rect) -> Rect:
        """`rect` clipped to the frame and grown to whole chroma cells (2x2 for 4:2:0)."""
        x0, y0, x1, y1 = rect
        sx, sy = self.layout.chroma_shift
        mx, my = (1 << sx) - 1, (1 << sy) - 1
        x0, y0 = max(0, x0) & ~mx, max(0, y0) & ~my
        x1 = min(self.width, (min(self.width, x1) + mx) & ~mx)
        y1 = min(self.height, (min(self.height, y1) + my) & ~my)
        return x0, y0, x1, y1

    def read_bgr(self, rect: Rect) -> tuple[FrameBGR, npt.NDArray[np.float32] | None]:
        """The pixels of `rect` (from `align_rect`) as uint8 BGR, and the exact float BGR they
        were rounded from (None for 8-bit RGB frames, where the uint8 values are exact)."""
        x0, y0, x1, y1 = rect
        if self.matrix is None:
            packed = self.planes[0][y0:y1, x0:x1]
            bgr = packed[..., :3] if self.layout.kind == "bgr" else packed[..., 2::-1]
            if self.layout.bits == 8:
                return np.ascontiguousarray(bgr), None
            # 16-bit RGB: 65535 / 255 = 257 codes per 8-bit step, exactly.
            exact = np.asarray(bgr, np.float32) / np.float32(257.0)
            return np.rint(exact).astype(np.uint8), exact
        yuv = cv2.merge([np.asarray(p, np.float32) for p in self._yuv_full(rect)])
        exact = np.asarray(cv2.transform(yuv, self._bgr_affine), dtype=np.float32)
        rounded = np.rint(np.clip(exact, 0.0, 255.0))
        return rounded.astype(np.uint8), exact

    def _yuv_full(self, rect: Rect) -> tuple[npt.NDArray, npt.NDArray, npt.NDArray]:
        """Y, Cb, Cr of `rect` at luma resolution (chroma repeated over its cell, which is the
        exact inverse of the cell mean `write_bgr` takes)."""
        x0, y0, x1, y1 = rect
        sx, sy = self.layout.chroma_shift
        cells = (slice(y0 >> sy, (y1 + (1 << sy) - 1) >> sy),
                 slice(x0 >> sx, (x1 + (1 << sx) - 1) >> sx))
        height, width = y1 - y0, x1 - x0
        chroma = []
        for plane in self.planes[1:]:
            values = plane[cells]
            if sy:
                values = np.repeat(values, 2, axis=0)
            if sx:
                values = np.repeat(values, 2, axis=1)
            chroma.append(values[:height, :width])
        return self.planes[0][y0:y1, x0:x1], chroma[0], chroma[1]

    def write_bgr(self, rect: Rect, bgr: FrameBGR, original: FrameBGR,
                  exact: npt.NDArray[np.float32] | None) -> int:
        """Write the changed pixels of a swapped region back into the planes.

        Args:
            rect: the region, as given to `read_bgr`.
            bgr: (h, w, 3) uint8 BGR after the swap.
            original: the uint8 BGR `read_bgr` returned (unmodified).
            exact: the float BGR `read_bgr` returned.

        Returns:
            How many pixels changed.
        """
        x0, y0, x1, y1 = rect
        # Per-pixel sum of absolute channel differences, saturated: > 0 where any changed.
        changed = cv2.transform(cv2.absdiff(bgr, original), _ONES) > 0
        count = int(np.count_nonzero(changed))
        if not count:
            return 0
        if self.matrix is None:
            packed = self.planes[0][y0:y1, x0:x1]
            target = packed[..., :3] if self.layout.kind == "bgr" else packed[..., 2::-1]
            scale = 257 if self.layout.bits == 16 else 1  # the engine's 8-bit value, exactly
            target[changed] = bgr[changed].astype(target.dtype) * scale
            return count
        assert exact is not None
        # The BGR change from the exact original, zero where nothing changed: changed pixels
        # become exactly the engine's value, and the rest get a change of exactly 0.0 (as does
        # every chroma cell with no changed pixel), so their integer samples come back as they
        # were without masking (float32 holds every code up to 2^24 exactly).
        delta = bgr.astype(np.float32) - exact
        delta *= changed[..., None]
        change = cv2.transform(delta, self._yuv_delta)
        peak = float(2**self.layout.bits - 1)
        luma = self.planes[0][y0:y1, x0:x1]
        luma[...] = np.clip(np.rint(luma + change[..., 0]), 0.0, peak)
        sx, sy = self.layout.chroma_shift
        cells = (slice(y0 >> sy, (y1 + (1 << sy) - 1) >> sy),
                 slice(x0 >> sx, (x1 + (1 << sx) - 1) >> sx))
        for plane, channel in zip(self.planes[1:], (1, 2), strict=True):
            target = plane[cells]
            mean = _cell_mean(np.ascontiguousarray(change[..., channel]), sx, sy)
            target[...] = np.clip(np.rint(target + mean), 0.0, peak)
        return count


_ONES = np.ones((1, 3), np.float32)


@functools.lru_cache(maxsize=64)
def _affine_of(matrix: YuvMatrix) -> npt.NDArray[np.float32]:
    return matrix.bgr_affine


@functools.lru_cache(maxsize=64)
def _delta_of(matrix: YuvMatrix) -> npt.NDArray[np.float32]:
    return matrix.yuv_delta_linear


def _cell_mean(values: npt.NDArray[np.float32], sx: int, sy: int) -> npt.NDArray[np.float32]:
    """Mean over chroma cells (2x2 for 4:2:0, 2x1 for 4:2:2). A cell cut by the frame edge
    averages in zeros for the pixels it lacks: they do not exist, so they never changed."""
    if not sx and not sy:
        return values
    height, width = values.shape
    pad_y, pad_x = (-height) % (1 << sy), (-width) % (1 << sx)
    if pad_y or pad_x:
        values = np.pad(values, ((0, pad_y), (0, pad_x)))
    # INTER_AREA at an integer factor is the exact box mean.
    return np.asarray(cv2.resize(values, ((width + pad_x) >> sx, (height + pad_y) >> sy),
                                 interpolation=cv2.INTER_AREA), dtype=np.float32)


def small_bgr(frame: av.VideoFrame, longest_side: int) -> tuple[FrameBGR, float, float]:
    """A BGR image at most `longest_side` pixels on its longer side, made by swscale from the
    planes (area averaging), for a detector; and the (x, y) factors from its pixels to the
    frame's. A frame already that small is converted at its own size.

    Returns:
        (h, w, 3) uint8 BGR in coded orientation, scale_x, scale_y.
    """
    width, height = frame.width, frame.height
    factor = min(1.0, longest_side / max(width, height))
    small_w, small_h = max(1, round(width * factor)), max(1, round(height * factor))
    converted = frame.reformat(width=small_w, height=small_h, format="bgr24",
                               interpolation=SWS_SHRINK,
                               src_color_range=frame_range(frame), dst_color_range=RANGE_FULL)
    image = cast(FrameBGR, converted.to_ndarray(format="bgr24"))
    return image, width / small_w, height / small_h


def scale_face(face: Face, scale_x: float, scale_y: float) -> Face:
    """`face` with its box and keypoints multiplied per axis: the same mapping the detectors
    use from their resized input back to the frame, so a detection on a small image lands
    where one on the full frame does (measured: within 0.1 px on a 1280 x 720 frame)."""
    factors = np.array([scale_x, scale_y], np.float32)
    bbox = (face.bbox.reshape(2, 2) * factors).reshape(4)
    keypoints = face.keypoints * factors
    return _moved(face, bbox, keypoints)


def shift_face(face: Face, dx: float, dy: float) -> Face:
    """`face` translated by (dx, dy) pixels."""
    offset = np.array([dx, dy], np.float32)
    return _moved(face, face.bbox + np.tile(offset, 2), face.keypoints + offset)


def _moved(face: Face, bbox: npt.NDArray, keypoints: npt.NDArray) -> Face:
    return Face(bbox=bbox, keypoints=keypoints, score=face.score, layout=face.layout,
                embedding=face.embedding, pose=face.pose)


REGION_MARGIN_PIXELS = 8
"""Extra pixels around a face's footprint: resampling kernels (cubic: 2 px) and blurs at its
edge read a little past it."""
REGION_MARGIN_FRACTION = 0.1
"""Extra margin as a fraction of the footprint's side, for engines whose crops reach a little
further than the two templates below."""


def face_footprint(face: Face) -> tuple[float, float, float, float]:
    """Frame pixels a swap of `face` may read or write: the union of the back-projected ArcFace
    crop (swap, paste, mask, blend) and FFHQ crop (enhancer), in float pixels."""
    unit = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]], np.float64)
    points = []
    # Both ArcFace template families (multiples of 112, and the 128 one) and FFHQ.
    for matrix, size in ((face_to_template_matrix(face, 128), 128),
                         (face_to_template_matrix(face, 112), 112),
                         (warp_template_matrix(face, "ffhq_512", 512), 512)):
        corners = unit * np.array([size, size, 1.0])
        points.append(corners @ cv2.invertAffineTransform(matrix).T)
    stacked = np.concatenate(points)
    x0, y0 = stacked.min(axis=0)
    x1, y1 = stacked.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def face_regions(faces: Sequence[Face], width: int, height: int) -> list[tuple[Rect, list[int]]]:
    """Rectangles covering each face's footprint (with margins), merged where they overlap, and
    the indices of the faces in each, in the faces' order.

    Faces in separate rectangles are independent (neither reads what the other writes), so
    swapping each rectangle alone gives what swapping the whole frame in face order gives.
    """
    regions: list[tuple[list[float], list[int]]] = []
    for index, face in enumerate(faces):
        x0, y0, x1, y1 = face_footprint(face)
        margin_x = REGION_MARGIN_PIXELS + REGION_MARGIN_FRACTION * (x1 - x0)
        margin_y = REGION_MARGIN_PIXELS + REGION_MARGIN_FRACTION * (y1 - y0)
        regions.append(([x0 - margin_x, y0 - margin_y, x1 + margin_x, y1 + margin_y], [index]))
    merged = True
    while merged:
        merged = False
        for i in range(len(regions)):
            for j in range(i + 1, len(regions)):
                a, b = regions[i][0], regions[j][0]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    box = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    regions[i] = (box, sorted(regions[i][1] + regions[j][1]))
                    del regions[j]
                    merged = True
                    break
            if merged:
                break
    result = []
    for box, members in regions:
        rect = (max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1]))),
                min(width, int(np.ceil(box[2])) + 1), min(height, int(np.ceil(box[3])) + 1))
        if rect[2] - rect[0] >= 2 and rect[3] - rect[1] >= 2:
            result.append((rect, members))
    return result


def rotate_rect(rect: Rect, turns: int, width: int, height: int) -> Rect:
    """Where `rect` of a (height, width) image lands after `np.rot90(image, turns)`."""
    x0, y0, x1, y1 = rect
    for _ in range(turns % 4):
        # One counter-clockwise turn: pixel (x, y) goes to (y, width - 1 - x).
        x0, y0, x1, y1 = y0, width - x1, y1, width - x0
        width, height = height, width
    return x0, y0, x1, y1
