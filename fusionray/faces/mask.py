"""Soft face masks in aligned-crop (template) space. Pure."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from fusionray.errors import ConfigError, choices_message
from fusionray.faces.align import arcface_template
from fusionray.types import FloatArray

FACE_OUTLINE_112 = np.array(
    [
        [20.0, 34.0], [36.0, 27.0], [56.0, 25.0], [76.0, 27.0], [92.0, 34.0],
        [95.0, 55.0], [93.0, 75.0], [86.0, 92.0], [74.0, 104.0], [56.0, 110.0],
        [38.0, 104.0], [26.0, 92.0], [19.0, 75.0], [17.0, 55.0],
    ],
    dtype=np.float64,
)
"""Face outline on the ArcFace 112 template (pixels): brows and upper forehead, cheeks, a jaw
that narrows to the chin. Symmetric about x = 56, the template's centre line. An ellipse reaches
past the jaw of a slightly turned source and pastes its backdrop onto the target's chin; this
egg shape does not."""


def face_outline(crop_size: int) -> npt.NDArray[np.float64]:
    """`FACE_OUTLINE_112` placed on a `crop_size` crop the way `arcface_template` is, (14, 2)."""
    if crop_size % 112 == 0:
        return FACE_OUTLINE_112 * (crop_size / 112)
    return (FACE_OUTLINE_112 + np.array([8.0, 0.0])) * (crop_size / 128)


def build_face_mask(crop_size: int, *, padding: float = 0.0, blur: float = 0.3) -> FloatArray:
    """A feathered face-shaped mask for an aligned crop.

    The outline (`FACE_OUTLINE_112`, placed like the ArcFace template so it fits any crop
    size) is grown (`padding` > 0) or shrunk (< 0) about its centre by `padding` × crop size.
    The feather is a Gaussian with sigma = blur × face size / 6 (face size = the outline's
    height), so `blur` is the width of the soft band, ±3 sigma, as a fraction of the face; the
    outline is first shrunk by 1.5 sigma so the soft band stays mostly inside the face. Finally
    the mask is forced to 0 at the crop border: a warped crop must never leave a hard edge in
    the frame.

    Args:
        crop_size: S, side of the aligned crop in pixels.
        padding: fraction of the crop, in [-0.3, 0.3].
        blur: feather band as a fraction of the face size, in [0, 1].

    Returns:
        (S, S) float32 in [0, 1], 1 inside the face, mirror-symmetric left to right.

    Raises:
        ConfigError: out-of-range option.
    """
    if not -0.3 <= padding <= 0.3:
        raise ConfigError(f"Invalid mask padding={padding!r}: must be in [-0.3, 0.3]")
    if not 0.0 <= blur <= 1.0:
        raise ConfigError(f"Invalid mask blur={blur!r}: must be in [0, 1]")
    if crop_size < 16:
        raise ConfigError(f"Invalid crop_size={crop_size!r}: must be >= 16 pixels")
    outline = face_outline(crop_size)
    face_size = float(outline[:, 1].max() - outline[:, 1].min())
    sigma = blur * face_size / 6.0
    centre = outline.mean(axis=0)
    offsets = outline - centre
    radii = np.linalg.norm(offsets, axis=1, keepdims=True)
    # Move each vertex along its ray from the centre: + padding, - the feather's inner half.
    grown = np.maximum(radii + padding * crop_size - 1.5 * sigma, 1.0)
    polygon = centre + offsets * grown / radii - 0.5  # Pixel centres sit at integer + 0.5.
    shift_bits = 4  # Sub-pixel vertices, so small crops keep the outline's shape.
    vertices = np.rint(polygon * (1 << shift_bits)).astype(np.int32)
    mask = np.zeros((crop_size, crop_size), np.float32)
    cv2.fillPoly(mask, [vertices], 1.0, lineType=cv2.LINE_AA, shift=shift_bits)
    # Rasterisation rounds asymmetrically; the outline is symmetric, so make the mask exactly so.
    mask = (mask + mask[:, ::-1]) / 2.0
    if sigma > 0:
        mask = np.asarray(
            cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma,
                             borderType=cv2.BORDER_CONSTANT),
            dtype=np.float32,
        )
    # Linear ramp to 0 over the outer 4 % of the crop.
    ys, xs = np.mgrid[0:crop_size, 0:crop_size].astype(np.float32)
    ramp_width = max(2.0, 0.04 * crop_size)
    distance = np.minimum(
        np.minimum(xs, crop_size - 1 - xs), np.minimum(ys, crop_size - 1 - ys)
    )
    mask *= np.clip(distance / ramp_width, 0.0, 1.0)
    return np.clip(mask, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Model and landmark masks, combined per pixel by minimum (FaceFusion's face_mask_types).

MASK_TYPES = ("box", "occlusion", "region", "area", "mouth")
"""`swapper.masks` entries: box = the feathered face outline above; occlusion = what an XSeg
model sees as face, not hand, hair or microphone; region = the chosen face-parser classes;
area = the chosen landmark areas; mouth = everything except the target's mouth (so the target's
own mouth, teeth and tongue stay)."""

FACE_MASK_AREAS: dict[str, tuple[int, ...]] = {
    "upper-face": (0, 1, 2, 31, 32, 33, 34, 35, 14, 15, 16, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                   17),
    "lower-face": (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 35, 34, 33, 32, 31),
    "mouth": tuple(range(48, 68)),
}
"""68-point (iBUG / 2dfan4) landmark indices whose convex hull is each area: upper face = jaw
line top, nose wings and brows; lower face = jaw, chin and the bottom of the nose; mouth = the
outer and inner lip contours. The same sets as FaceFusion's `face_mask_area_set`."""

MOUTH_LANDMARKS = FACE_MASK_AREAS["mouth"]


def refine_mask(mask: npt.ArrayLike, *, padding: float, blur: float) -> FloatArray:
    """Grow or shrink a crop-space mask, then feather it inward.

    Args:
        mask: (S, S) float in [0, 1].
        padding: grow (> 0) or shrink (< 0) by |padding| × S pixels (elliptic dilation or
            erosion), in [-0.3, 0.3].
        blur: feather, Gaussian sigma = blur × S / 12, in [0, 1]. As in FaceFusion, the blurred
            mask is remapped from [0.5, 1] to [0, 1], so the soft band lies inside the region
            and nothing leaks past its edge.

    Returns:
        (S, S) float32 in [0, 1].

    Raises:
        ConfigError: out-of-range option.
    """
    if not -0.3 <= padding <= 0.3:
        raise ConfigError(f"Invalid mask padding={padding!r}: must be in [-0.3, 0.3]")
    if not 0.0 <= blur <= 1.0:
        raise ConfigError(f"Invalid mask blur={blur!r}: must be in [0, 1]")
    result = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    size = result.shape[0]
    radius = round(abs(padding) * size)
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        operation = cv2.dilate if padding > 0 else cv2.erode
        result = np.asarray(operation(result, kernel), dtype=np.float32)
    sigma = blur * size / 12.0
    if sigma > 0:
        result = np.asarray(cv2.GaussianBlur(result, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                             borderType=cv2.BORDER_CONSTANT), dtype=np.float32)
        result = (np.clip(result, 0.5, 1.0) - 0.5) * 2.0
    return np.clip(result, 0.0, 1.0).astype(np.float32)


def _hull_mask(points: npt.ArrayLike, size: int) -> FloatArray:
    """(S, S) float32: 1 inside the convex hull of `points` (crop pixels), anti-aliased."""
    shift_bits = 4
    hull = cv2.convexHull(np.rint(np.asarray(points, np.float64) * (1 << shift_bits))
                          .astype(np.int32))
    mask = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA, shift=shift_bits)
    return mask


def build_area_mask(landmarks_68: npt.ArrayLike, size: int, areas: tuple[str, ...], *,
                    padding: float = 0.0, blur: float = 0.25) -> FloatArray:
    """Convex hull of the chosen landmark areas in an aligned crop, refined (`refine_mask`).

    Args:
        landmarks_68: (68, 2) landmarks in crop pixels.
        size: S, the crop side.
        areas: non-empty subset of `FACE_MASK_AREAS`.

    Raises:
        ConfigError: unknown or no area. ValueError: landmarks not (68, 2).
    """
    points = np.asarray(landmarks_68, np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"build_area_mask needs (68, 2) landmarks, got {points.shape}")
    if not areas:
        raise ConfigError("The area mask needs at least one area. Choose from: "
                          + ", ".join(FACE_MASK_AREAS))
    indices: list[int] = []
    for area in areas:
        if area not in FACE_MASK_AREAS:
            raise ConfigError(choices_message("mask area", area, list(FACE_MASK_AREAS)))
        indices.extend(FACE_MASK_AREAS[area])
    return refine_mask(_hull_mask(points[indices], size), padding=padding, blur=blur)


def template_mouth_outline(size: int) -> npt.NDArray[np.float64]:
    """(16, 2) ellipse around the template's mouth in a `size` crop, for faces without 68
    landmarks: the face is aligned to the template, so its mouth lies there. The ellipse spans
    the mouth corners plus 15 % on each side and is half a corner distance tall."""
    template = arcface_template(size)
    left, right = template[3], template[4]
    centre = (left + right) / 2.0
    half_width = 0.65 * float(np.linalg.norm(right - left))
    half_height = 0.25 * float(np.linalg.norm(right - left))
    angles = np.linspace(0.0, 2.0 * np.pi, 16, endpoint=False)
    return centre + np.stack([half_width * np.cos(angles), half_height * np.sin(angles)], axis=1)


def build_mouth_mask(size: int, landmarks_68: npt.ArrayLike | None = None, *,
                     padding: float = 0.03, blur: float = 0.25) -> FloatArray:
    """Mask that keeps the target's mouth: 0 over the mouth, 1 elsewhere, soft in between.

    The mouth is the hull of the 68-point lip contours when given (crop pixels), else the
    template's mouth ellipse (`template_mouth_outline`). It is grown by `padding` and feathered
    outward by `blur` (see `refine_mask`), so the target's lips are covered fully.

    Returns:
        (S, S) float32 in [0, 1].
    """
    if landmarks_68 is not None:
        points = np.asarray(landmarks_68, np.float64)
        if points.shape != (68, 2):
            raise ValueError(f"build_mouth_mask needs (68, 2) landmarks, got {points.shape}")
        mouth = _hull_mask(points[list(MOUTH_LANDMARKS)], size)
    else:
        mouth = _hull_mask(template_mouth_outline(size), size)
    # Feather the complement so its soft band lies outside the mouth: the lips stay fully.
    return refine_mask(1.0 - refine_mask(mouth, padding=padding, blur=0.0), padding=0.0,
                       blur=blur)


def combine_masks(masks: list[FloatArray]) -> FloatArray:
    """Per-pixel minimum of (S, S) masks: a pixel is pasted only where every mask allows it.

    Raises:
        ValueError: no masks, or their shapes differ.
    """
    if not masks:
        raise ValueError("combine_masks needs at least one mask")
    shapes = {mask.shape for mask in masks}
    if len(shapes) != 1:
        raise ValueError(f"combine_masks needs masks of one shape, got {sorted(shapes)}")
    return np.clip(np.minimum.reduce(masks), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class MaskRecipe:
    """Which masks an engine combines, and each one's padding and feather (`refine_mask`)."""

    types: tuple[str, ...] = ("box",)
    """Non-empty subset of `MASK_TYPES`, combined by per-pixel minimum."""
    areas: tuple[str, ...] = ("upper-face", "lower-face", "mouth")
    """Landmark areas of the `area` mask (`FACE_MASK_AREAS`)."""
    occlusion_padding: float = 0.0
    occlusion_blur: float = 0.25
    region_padding: float = 0.0
    region_blur: float = 0.25
    area_padding: float = 0.0
    area_blur: float = 0.25
    mouth_padding: float = 0.03
    mouth_blur: float = 0.25

    def __post_init__(self) -> None:
        if not self.types:
            raise ConfigError("At least one mask is needed. Choose from: " + ", ".join(MASK_TYPES))
        for kind in self.types:
            if kind not in MASK_TYPES:
                raise ConfigError(choices_message("mask", kind, MASK_TYPES))
        for area in self.areas:
            if area not in FACE_MASK_AREAS:
                raise ConfigError(choices_message("mask area", area, list(FACE_MASK_AREAS)))
        if "area" in self.types and not self.areas:
            raise ConfigError("The area mask needs at least one area. Choose from: "
                              + ", ".join(FACE_MASK_AREAS))
        for name in ("occlusion", "region", "area", "mouth"):
            padding, blur = getattr(self, f"{name}_padding"), getattr(self, f"{name}_blur")
            if not -0.3 <= padding <= 0.3:
                raise ConfigError(f"Invalid {name} mask padding={padding!r}: must be in "
                                  "[-0.3, 0.3]")
            if not 0.0 <= blur <= 1.0:
                raise ConfigError(f"Invalid {name} mask blur={blur!r}: must be in [0, 1]")

    @property
    def needs_landmarks(self) -> bool:
        """Whether the `area` mask is on (it needs 68 landmarks; `mouth` falls back to the
        template's mouth without them)."""
        return "area" in self.types


def build_crop_mask(
    recipe: MaskRecipe,
    box: FloatArray,
    *,
    occlusion: FloatArray | None = None,
    region: FloatArray | None = None,
    landmarks_68: npt.ArrayLike | None = None,
) -> FloatArray:
    """The paste mask of one aligned face: every mask of `recipe`, refined, minimum-combined.

    Args:
        recipe: which masks and their padding/feather.
        box: (S, S) the static face-outline mask (`build_face_mask`; already padded/feathered).
        occlusion: (S, S) raw occluder output, needed when `occlusion` is in the recipe.
        region: (S, S) raw parser selection, needed when `region` is in the recipe.
        landmarks_68: (68, 2) landmarks in crop pixels; needed by `area`; `mouth` uses them when
            given.

    Raises:
        ValueError: a mask the recipe needs was not given.
    """
    size = box.shape[0]
    masks: list[FloatArray] = []
    for kind in recipe.types:
        if kind == "box":
            masks.append(box)
        elif kind == "occlusion":
            if occlusion is None:
                raise ValueError("The occlusion mask was asked for but no occluder output given")
            masks.append(refine_mask(occlusion, padding=recipe.occlusion_padding,
                                     blur=recipe.occlusion_blur))
        elif kind == "region":
            if region is None:
                raise ValueError("The region mask was asked for but no parser output given")
            masks.append(refine_mask(region, padding=recipe.region_padding,
                                     blur=recipe.region_blur))
        elif kind == "area":
            if landmarks_68 is None:
                raise ValueError("The area mask needs 68 landmarks (swapper.landmarker=2dfan4)")
            masks.append(build_area_mask(landmarks_68, size, recipe.areas,
                                         padding=recipe.area_padding, blur=recipe.area_blur))
        elif kind == "mouth":
            masks.append(build_mouth_mask(size, landmarks_68, padding=recipe.mouth_padding,
                                          blur=recipe.mouth_blur))
    return combine_masks(masks)
