"""Is a detection a human face? Plausibility gates for target and source faces (pure).

Detectors fire on things that are not human faces: BlazeFace gives a cat's head (skimage's
`chelsea`) 0.80 and a coffee cup 0.65. Confidence alone does not separate them from real faces
(the same model gives a real 25 px face 0.31), so a face must also *look* like one: its eyes,
nose and mouth must sit where a human face has them. `face_geometry` measures that as the
residual of a least-squares similarity fit of the keypoints onto the ArcFace template (the
same fit the aligner uses), in template eye distances, plus where the keypoints sit in the box.

Two gates use it:
- `plausible_faces`: every target detection, each frame (cheap; no pass over the shot).
- `check_source_face`: the source image's face, with stricter limits, because one bad source
  face is pasted onto every target of the job. It raises `FaceNotFoundError` naming the image.

The track-level gate (a "face" seen on scattered frames is not a face) needs the whole shot and
lives in `fusionray.faces.shot`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fusionray.errors import FaceNotFoundError
from fusionray.faces.detect import Detector
from fusionray.types import Face, FrameBGR

# ArcFace 112 template points shared by both layouts: left eye, right eye, nose tip and the
# mouth centre (the midpoint of the template's mouth corners); DESIGN.md "Model contracts".
TEMPLATE_POINTS = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [(41.5493 + 70.7299) / 2, (92.3655 + 92.2041) / 2]], dtype=np.float64)
TEMPLATE_EYE_DISTANCE = float(np.linalg.norm(TEMPLATE_POINTS[1] - TEMPLATE_POINTS[0]))


def core_points(face: Face) -> np.ndarray:
    """(4, 2) float64: left eye, right eye, nose tip, mouth centre of `face` (image left/right)."""
    points = face.keypoints.astype(np.float64)
    if face.layout == "arcface5":
        return np.stack([points[0], points[1], points[2], (points[3] + points[4]) / 2])
    return points[:4].copy()


@dataclass(frozen=True)
class FaceGeometry:
    """How face-like a detection's keypoints are (all dimensionless)."""

    landmark_error: float
    """RMS distance of the 4 core points from the ArcFace template after the best similarity
    fit (rotation, scale, shift), in template eye distances: 0 = exactly the template's layout.
    Real photos measure 0.02–0.25 (frontal to three-quarter); head turn raises it."""
    eye_distance: float
    """Distance between the eyes over the box's larger side."""
    upright: float
    """Cosine between the eye line and the direction from the eyes to the mouth, 0 for a face
    (perpendicular); a detection whose mouth sits on the eye line is close to ±1."""


def face_geometry(face: Face) -> FaceGeometry:
    """Measure `face`'s keypoint layout against the human face template."""
    points = core_points(face)
    # Least-squares similarity (Umeyama without reflection) from the points to the template,
    # written with complex numbers: z_template ≈ a · z_points + b.
    source = points[:, 0] + 1j * points[:, 1]
    target = TEMPLATE_POINTS[:, 0] + 1j * TEMPLATE_POINTS[:, 1]
    source_centred = source - source.mean()
    target_centred = target - target.mean()
    energy = float(np.sum(np.abs(source_centred) ** 2))
    if energy <= 1e-12:
        return FaceGeometry(landmark_error=float("inf"), eye_distance=0.0, upright=1.0)
    scale = np.sum(np.conj(source_centred) * target_centred) / energy
    residual = target_centred - scale * source_centred
    error = float(np.sqrt(np.mean(np.abs(residual) ** 2))) / TEMPLATE_EYE_DISTANCE
    eye_line = points[1] - points[0]
    eye_length = float(np.linalg.norm(eye_line))
    to_mouth = points[3] - (points[0] + points[1]) / 2
    mouth_length = float(np.linalg.norm(to_mouth))
    upright = (float(np.dot(eye_line, to_mouth)) / (eye_length * mouth_length)
               if eye_length > 0 and mouth_length > 0 else 1.0)
    box_side = max(float(face.bbox[2] - face.bbox[0]), float(face.bbox[3] - face.bbox[1]), 1e-6)
    return FaceGeometry(landmark_error=error, eye_distance=eye_length / box_side,
                        upright=upright)


@dataclass(frozen=True)
class GateLimits:
    """What a detection must meet to count as a human face."""

    min_score: float = 0.0
    """Minimum detector confidence in [0, 1] (0 = whatever the detector already kept)."""
    max_landmark_error: float = 0.45
    """Largest `FaceGeometry.landmark_error` (template eye distances). The error grows with
    head turn on a perfect face: 0.12 at 30° yaw, 0.25 at 60°, 0.30 at 70°, 0.39 in profile."""
    min_eye_distance: float = 0.0
    """Smallest eye distance over the box's larger side (a profile's is near 0)."""
    max_eye_distance: float = 0.75
    """Largest eye distance over the box's larger side (real faces: 0.20–0.51)."""
    max_upright: float = 1.0
    """Largest |cos| between the eye line and the eyes-to-mouth direction (1 = off; a face
    turned and tilted at once reaches 0.7)."""
    min_size: float = 0.0
    """Smallest shorter box side in pixels."""


def rejection_reason(face: Face, limits: GateLimits) -> str | None:
    """Why `face` fails `limits` (one short clause), or None when it passes."""
    if face.score < limits.min_score:
        return f"confidence {face.score:.2f} < {limits.min_score:.2f}"
    size = min(float(face.bbox[2] - face.bbox[0]), float(face.bbox[3] - face.bbox[1]))
    if size < limits.min_size:
        return f"face {size:.0f} px < {limits.min_size:.0f} px"
    geometry = face_geometry(face)
    if geometry.landmark_error > limits.max_landmark_error:
        return (f"eyes, nose and mouth do not fit a human face (landmark error "
                f"{geometry.landmark_error:.2f} > {limits.max_landmark_error:.2f})")
    if not limits.min_eye_distance <= geometry.eye_distance <= limits.max_eye_distance:
        return (f"eye distance {geometry.eye_distance:.2f} of the box outside "
                f"[{limits.min_eye_distance:.2f}, {limits.max_eye_distance:.2f}]")
    if abs(geometry.upright) > limits.max_upright:
        return f"mouth not below the eyes (|cos| {abs(geometry.upright):.2f} > " \
               f"{limits.max_upright:.2f})"
    return None


def source_limits(*, min_score: float, max_landmark_error: float, min_size: float
                  ) -> GateLimits:
    """The source gate: the given limits, plus a face that is not turned away or tilted
    (eye distance at least 0.15 of the box, mouth below the eyes)."""
    return GateLimits(min_score=min_score, max_landmark_error=max_landmark_error,
                      min_eye_distance=0.15, max_upright=0.6, min_size=min_size)


def plausible_faces(faces: Sequence[Face], limits: GateLimits) -> list[Face]:
    """The faces of one frame that pass `limits`, in their order."""
    return [face for face in faces if rejection_reason(face, limits) is None]


def check_source_face(
    image_bgr: FrameBGR,
    faces: Sequence[Face],
    limits: GateLimits,
    *,
    path: str,
    verifier: FaceVerifier | None = None,
    min_verify_score: float = 0.0,
) -> Face:
    """The source image's face: its largest detection, which must pass the source gate.

    Args:
        image_bgr: the source image, (H, W, 3) uint8.
        faces: every detection in it.
        limits: the source gate (stricter than the target gate).
        path: the image, for the message.
        verifier: re-detects the face on its canonical crop (None skips that check).
        min_verify_score: the smallest re-detection confidence accepted.

    Returns:
        The largest face.

    Raises:
        FaceNotFoundError: no detection, or the largest one fails the gate (the message names
            the image and the failed check).
    """
    if not faces:
        raise FaceNotFoundError(f"No face found in source image '{path}'")
    largest = max(faces, key=lambda face: face.area)
    reason = rejection_reason(largest, limits)
    if reason is None and verifier is not None:
        score = verifier.score(image_bgr, largest)
        if score < min_verify_score:
            reason = (f"not confirmed as a human face on its aligned crop (confidence "
                      f"{score:.2f} < {min_verify_score:.2f})")
    if reason is not None:
        raise FaceNotFoundError(f"No usable human face in source image '{path}': {reason}")
    return largest


VERIFY_CROP = 128
"""Side of the canonical crop the verifier looks at: BlazeFace front's input size."""
VERIFY_CANVAS = 288.0
"""The crop shows the 112 px ArcFace template inside a 288 px canvas (scaled to 128), so the
face fills about 40 % of it with its head and some background around, as in the close-ups the
front model was trained on. Of 160, 224 and 288 (measured on every face photo in the
dependencies, see `tests/test_faces_gate.py`), 288 kept the most real faces."""
VERIFY_CENTRE_RADIUS = 0.25
"""A re-detection counts when its box centre is within this fraction of the crop side from
where the template puts the face centre."""


def canonical_crop_matrix(face: Face) -> np.ndarray:
    """(2, 3) float64 similarity from the image to the verifier's canonical crop."""
    offset = (VERIFY_CANVAS - 112.0) / 2
    target = (TEMPLATE_POINTS + offset) * (VERIFY_CROP / VERIFY_CANVAS)
    source = core_points(face)
    source_centre, target_centre = source.mean(axis=0), target.mean(axis=0)
    s = (source - source_centre) @ np.array([1, 1j])
    t = (target - target_centre) @ np.array([1, 1j])
    scale = np.sum(np.conj(s) * t) / max(float(np.sum(np.abs(s) ** 2)), 1e-12)
    a, b = float(scale.real), float(scale.imag)
    rotation = np.array([[a, -b], [b, a]])
    shift = target_centre - rotation @ source_centre
    return np.hstack([rotation, shift[:, None]])


def canonical_face_centre() -> tuple[float, float]:
    """Where the template's face centre (the mean of its core points) lands in the crop."""
    offset = (VERIFY_CANVAS - 112.0) / 2
    centre = (TEMPLATE_POINTS.mean(axis=0) + offset) * (VERIFY_CROP / VERIFY_CANVAS)
    return float(centre[0]), float(centre[1])


class FaceVerifier:
    """Second opinion on a detection: re-detect the face on its canonical crop.

    A detector's keypoints come out face-shaped on whatever fired it (a cat's head measures a
    landmark error of 0.10, like a real face), but cut and aligned around those keypoints, a
    real face is found again where the template puts it, and a cat's head, a cup or a logo is
    not: measured with BlazeFace front on every photo in the dependencies, non-faces re-score
    0 (cat, coffee, logo, colour wheel) or at most 0.64 (a cell image the detector's own
    threshold already drops), real faces 0.71–0.96 (`tests/test_faces_gate.py`).
    """

    def __init__(self, detector: Detector) -> None:
        """`detector`: BlazeFace front (128 px input), built once by the caller."""
        self.detector = detector

    def crop(self, frame_bgr: FrameBGR, face: Face) -> FrameBGR:
        """The (128, 128, 3) canonical crop of `face`."""
        matrix = canonical_crop_matrix(face)
        crop = cv2.warpAffine(frame_bgr, matrix, (VERIFY_CROP, VERIFY_CROP),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(crop, dtype=np.uint8)

    def score(self, frame_bgr: FrameBGR, face: Face) -> float:
        """The best re-detection confidence near the face centre of its crop (0 = none)."""
        centre_x, centre_y = canonical_face_centre()
        radius = VERIFY_CENTRE_RADIUS * VERIFY_CROP
        best = 0.0
        for found in self.detector.detect(self.crop(frame_bgr, face)):
            x = (float(found.bbox[0]) + float(found.bbox[2])) / 2
            y = (float(found.bbox[1]) + float(found.bbox[3])) / 2
            if np.hypot(x - centre_x, y - centre_y) <= radius:
                best = max(best, float(found.score))
        return best

    def verified(self, frame_bgr: FrameBGR, faces: Sequence[Face], min_score: float
                 ) -> list[Face]:
        """The faces whose re-detection scores at least `min_score`, in their order."""
        return [face for face in faces if self.score(frame_bgr, face) >= min_score]
