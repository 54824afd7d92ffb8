"""Face enhancement (GFPGAN 1.4, 512 px) applied to a swapped face, mixed in by a blend factor.

Contract: the face aligned to the FFHQ 512 template, RGB, (x / 255 − 0.5) / 0.5, NCHW
[1, 3, 512, 512]; output the same layout in [−1, 1]. The restored crop is pasted back through a
feathered box mask whose weight is the blend factor (0 = off, 1 = the enhancer's face only).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from fusionray.errors import ConfigError, choices_message
from fusionray.faces.align import estimate_similarity
from fusionray.faces.paste import paste_crop
from fusionray.models.batch import open_batched_runner
from fusionray.models.loader import ModelOptions
from fusionray.types import Face, FloatArray, FrameBGR

ENHANCER_MODELS = ("gfpgan_1.4",)

FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19366],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)
"""FFHQ alignment of GFPGAN's training faces on a 512 px crop (pixels): eyes, nose, mouth
corners, in the ArcFace point order."""


def ffhq_matrix(face: Face, crop_size: int) -> npt.NDArray[np.float64]:
    """(2, 3) similarity mapping the face's keypoints onto the FFHQ template of `crop_size`."""
    template = FFHQ_TEMPLATE_512 * (crop_size / 512)
    if face.layout == "blazeface6":
        mouth = template[3:5].mean(axis=0, keepdims=True)
        return estimate_similarity(face.keypoints[:4], np.concatenate([template[:3], mouth]))
    return estimate_similarity(face.keypoints[:5], template)


def box_mask(crop_size: int, *, blur: float = 0.3, padding: float = 0.05) -> FloatArray:
    """(S, S) float32 box mask: 0 over a `padding` border, Gaussian feather of `blur` × S / 6."""
    mask = np.zeros((crop_size, crop_size), np.float32)
    edge = max(1, round(padding * crop_size + blur * crop_size / 4))
    mask[edge:crop_size - edge, edge:crop_size - edge] = 1.0
    sigma = max(blur * crop_size / 12, 0.5)
    return np.asarray(cv2.GaussianBlur(mask, (0, 0), sigma), dtype=np.float32)


class FaceEnhancer:
    """GFPGAN-contract face restoration pass."""

    def __init__(self, *, model: str = "gfpgan_1.4", blend: float = 0.8,
                 options: ModelOptions | None = None) -> None:
        """Open the model once.

        Args:
            model: one of `ENHANCER_MODELS`.
            blend: weight of the enhanced face, in [0, 1].

        Raises:
            ConfigError: unknown model or blend out of range. ModelError: model missing/wrong.
        """
        if model not in ENHANCER_MODELS:
            raise ConfigError(choices_message("enhancer", model, ENHANCER_MODELS))
        if not 0.0 <= blend <= 1.0:
            raise ConfigError(f"Invalid enhancer blend={blend!r}: must be in [0, 1]")
        self.blend = blend
        # The published export fixes batch 1; free it where the graph allows (checked once,
        # cached) so `enhance_many` restores a frame's faces in one call.
        self.runner, _, plan = open_batched_runner(model, options or ModelOptions())
        self.notes: tuple[str, ...] = (plan.note,) if plan.note else ()
        """What run.json should say about the enhancer (e.g. why its batch stays at 1)."""
        self.provider = self.runner.provider
        self.crop_size = self.runner.spec.input_size
        self.mask = box_mask(self.crop_size)

    def enhance(self, output: FrameBGR, face: Face) -> None:
        """Restore one face of `output` in place (no-op at blend 0)."""
        self.enhance_many(output, [face])

    def enhance_many(self, output: FrameBGR, faces: Sequence[Face]) -> None:
        """Restore every face of `output` in place (no-op at blend 0).

        All crops are taken from `output` first and go through the model in one call where its
        batch dimension is free (else one call per face); they are pasted back in order.
        Thread-safe: no buffer is shared between calls.
        """
        if self.blend <= 0.0 or not faces:
            return
        matrices = [ffhq_matrix(face, self.crop_size) for face in faces]
        blob = np.empty((len(faces), 3, self.crop_size, self.crop_size), np.float32)
        for index, matrix in enumerate(matrices):
            crop = cv2.warpAffine(output, matrix, (self.crop_size, self.crop_size),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            np.divide(crop[..., ::-1].transpose(2, 0, 1), 127.5, out=blob[index])
        blob -= 1.0
        step = len(faces) if self.runner.batchable else 1
        restored = np.concatenate([self.runner.run(blob[start:start + step])[0]
                                   for start in range(0, len(faces), step)])
        for matrix, face_out in zip(matrices, restored, strict=True):
            rgb = (np.clip(face_out, -1.0, 1.0) + 1.0) * 127.5
            enhanced = np.rint(rgb.transpose(1, 2, 0)[..., ::-1]).astype(np.uint8)
            paste_crop(output, np.ascontiguousarray(enhanced), matrix, self.mask,
                       colour_match=False, blend="alpha", blend_levels=1, opacity=self.blend)
