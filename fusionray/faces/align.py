"""Face alignment: the ArcFace template, least-squares similarity fits, and aligned crops."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from fusionray.errors import ConfigError, choices_message
from fusionray.types import Face, FrameBGR, KeypointLayout

ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
"""ArcFace 112 px template (pixels): left eye, right eye, nose, left and right mouth corner."""

Float64Array = npt.NDArray[np.float64]

WARP_TEMPLATES: dict[str, Float64Array] = {
    "arcface_112_v1": np.array([[0.35473214, 0.45658929], [0.64526786, 0.45658929],
                                [0.50000000, 0.61154464], [0.37913393, 0.77687500],
                                [0.62086607, 0.77687500]]),
    "arcface_112_v2": np.array([[0.34191607, 0.46157411], [0.65653393, 0.45983393],
                                [0.50022500, 0.64050536], [0.37097589, 0.82469196],
                                [0.63151696, 0.82325089]]),
    "arcface_128": np.array([[0.36167656, 0.40387734], [0.63696719, 0.40235469],
                             [0.50019687, 0.56044219], [0.38710391, 0.72160547],
                             [0.61507734, 0.72034453]]),
    "ffhq_512": np.array([[0.37691676, 0.46864664], [0.62285697, 0.46912813],
                          [0.50123859, 0.61331904], [0.39308822, 0.72541100],
                          [0.61150205, 0.72490465]]),
}
"""Five-point templates as fractions of the crop side (eyes, nose, mouth corners; image-left
first), FaceFusion's `WARP_TEMPLATE_SET`. `arcface_112_v2` is insightface's 112 template."""


def warp_template_matrix(face: Face, template: str, size: int) -> Float64Array:
    """(2, 3) similarity mapping `face`'s keypoints onto `WARP_TEMPLATES[template]` × `size`.

    BlazeFace faces (no mouth corners) fit eyes, nose and mouth centre onto the template's eyes,
    nose and the midpoint of its mouth corners, as `template_for` does.

    Raises:
        ConfigError: unknown template.
    """
    if template not in WARP_TEMPLATES:
        raise ConfigError(choices_message("alignment template", template, list(WARP_TEMPLATES)))
    points = WARP_TEMPLATES[template] * size
    if face.layout == "blazeface6":
        points = np.concatenate([points[:3], points[3:5].mean(axis=0, keepdims=True)])
        return estimate_similarity(face.keypoints[:4], points)
    return estimate_similarity(face.keypoints[:5], points)


def arcface_template(crop_size: int) -> Float64Array:
    """The 5-point ArcFace template for a square crop of `crop_size` pixels, (5, 2) float64.

    Follows insightface's `norm_crop`: sizes that are multiples of 112 scale the 112 template;
    other sizes scale the 128 template (the 112 one with x + 8), so 128 is the inswapper crop.

    Raises:
        ConfigError: crop_size < 16.
    """
    if crop_size < 16:
        raise ConfigError(f"Invalid crop_size={crop_size!r}: must be >= 16 pixels")
    if crop_size % 112 == 0:
        return ARCFACE_TEMPLATE_112 * (crop_size / 112)
    shifted = ARCFACE_TEMPLATE_112 + np.array([8.0, 0.0])
    return shifted * (crop_size / 128)


def template_for(
    layout: KeypointLayout, crop_size: int
) -> tuple[Float64Array, npt.NDArray[np.intp]]:
    """Template points to align a face of `layout` to, and which of its keypoints they match.

    `arcface5` uses all five points. `blazeface6` has no mouth corners: its eyes, nose tip and
    mouth centre match the template's eyes, nose and the midpoint of its mouth corners; the ears
    are not used (they move a lot with head yaw and the template has none).

    Returns:
        points (K, 2) float64 in crop pixels, and indices (K,) into `Face.keypoints`.

    Raises:
        ConfigError: unknown layout.
    """
    template = arcface_template(crop_size)
    if layout == "arcface5":
        return template, np.arange(5)
    if layout == "blazeface6":
        mouth = template[3:5].mean(axis=0, keepdims=True)
        return np.concatenate([template[:3], mouth]), np.arange(4)
    raise ConfigError(choices_message("keypoint layout", layout, ["arcface5", "blazeface6"]))


def estimate_similarity(src: npt.ArrayLike, dst: npt.ArrayLike) -> Float64Array:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst.

    Umeyama's closed form with the reflection case excluded, so a face is never mirrored.

    Args:
        src: (N, 2) points, N >= 2.
        dst: (N, 2) corresponding points.

    Returns:
        (2, 3) float64 matrix M with dst ≈ M @ [x, y, 1].

    Raises:
        ValueError: shapes differ, N < 2, or src points all coincide.
    """
    source = np.asarray(src, dtype=np.float64)
    target = np.asarray(dst, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2:
        raise ValueError(f"src and dst must both be (N, 2), got {source.shape} and {target.shape}")
    if source.shape[0] < 2:
        raise ValueError(f"A similarity needs at least 2 point pairs, got {source.shape[0]}")
    source_mean = source.mean(axis=0)
    target_mean = target.mean(axis=0)
    source_centred = source - source_mean
    target_centred = target - target_mean
    source_variance = float((source_centred**2).sum() / source.shape[0])
    if source_variance <= 1e-12:
        raise ValueError("src points all coincide; no similarity is defined")
    covariance = target_centred.T @ source_centred / source.shape[0]
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0  # Flip the weakest axis instead of reflecting.
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign)) / source_variance
    translation = target_mean - scale * rotation @ source_mean
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def face_to_template_matrix(face: Face, crop_size: int) -> Float64Array:
    """(2, 3) similarity mapping frame pixels of `face` onto the crop's template."""
    points, indices = template_for(face.layout, crop_size)
    return estimate_similarity(face.keypoints[indices], points)


def align_face(
    image: FrameBGR, face: Face, crop_size: int, *, interpolation: int = cv2.INTER_LINEAR
) -> tuple[FrameBGR, Float64Array]:
    """Cut the face out of `image`, rotated and scaled onto the ArcFace template.

    Args:
        image: (H, W, 3) uint8 BGR.
        face: a detection in `image`'s pixels.
        crop_size: side of the square crop, pixels.
        interpolation: OpenCV resampling flag (the neural engine uses cubic: two bilinear
            warps, there and back, blur a face to about 35 dB PSNR; two cubic ones keep 44 dB).

    Returns:
        crop (crop_size, crop_size, 3) uint8 BGR, and the (2, 3) matrix image -> crop.
    """
    matrix = face_to_template_matrix(face, crop_size)
    # Replicate the border: a face near the frame edge gets plausible colour rather than black
    # in the parts of the crop outside the frame (which would skew colour statistics).
    crop = cv2.warpAffine(
        image, matrix, (crop_size, crop_size), flags=interpolation,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.asarray(crop, dtype=np.uint8), matrix
