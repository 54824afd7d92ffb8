"""Face enhancement applied to a swapped face, mixed in by a blend factor; table-driven.

Contract shared by every enhancer (FaceFusion's face_enhancer for the same files): the face
aligned to the model's template at its size, RGB, (x / 255 − 0.5) / 0.5, NCHW `input`
[1, 3, S, S]; output the same layout in [−1, 1]. CodeFormer also takes `weight` [1] float64,
its fidelity (0 = most restoration, 1 = closest to the input). Templates and sizes per model are
in `ENHANCER_CONTRACTS`. The restored crop is pasted back through a feathered box mask whose
weight is the blend factor (0 = off, 1 = the enhancer's face only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fusionray.errors import ConfigError, choices_message
from fusionray.faces.align import warp_template_matrix
from fusionray.faces.paste import paste_crop
from fusionray.models.batch import open_batched_runner
from fusionray.models.loader import ModelOptions
from fusionray.types import Face, FloatArray, FrameBGR


@dataclass(frozen=True)
class EnhancerContract:
    """How one enhancer file is fed."""

    name: str
    """Catalogue name."""
    template: str
    """`fusionray.faces.align.WARP_TEMPLATES` key the face is aligned to."""
    size: int
    """Side of the input and output, pixels."""
    fidelity_input: bool = False
    """The graph takes a `weight` [1] float64 fidelity input (CodeFormer)."""


ENHANCER_CONTRACTS: dict[str, EnhancerContract] = {
    contract.name: contract
    for contract in (
        EnhancerContract("codeformer", "ffhq_512", 512, fidelity_input=True),
        EnhancerContract("gfpgan_1.2", "ffhq_512", 512),
        EnhancerContract("gfpgan_1.3", "ffhq_512", 512),
        EnhancerContract("gfpgan_1.4", "ffhq_512", 512),
        EnhancerContract("gpen_bfr_256", "arcface_128", 256),
        EnhancerContract("gpen_bfr_512", "ffhq_512", 512),
        EnhancerContract("gpen_bfr_1024", "ffhq_512", 1024),
        EnhancerContract("restoreformer_plus_plus", "ffhq_512", 512),
    )
}
"""Every enhancer by catalogue name."""

ENHANCER_MODELS = tuple(ENHANCER_CONTRACTS)


def box_mask(crop_size: int, *, blur: float = 0.3, padding: float = 0.05) -> FloatArray:
    """(S, S) float32 box mask: 0 over a `padding` border, Gaussian feather of `blur` × S / 6."""
    mask = np.zeros((crop_size, crop_size), np.float32)
    edge = max(1, round(padding * crop_size + blur * crop_size / 4))
    mask[edge:crop_size - edge, edge:crop_size - edge] = 1.0
    sigma = max(blur * crop_size / 12, 0.5)
    return np.asarray(cv2.GaussianBlur(mask, (0, 0), sigma), dtype=np.float32)


class FaceEnhancer:
    """GFPGAN-contract face restoration pass (every `ENHANCER_CONTRACTS` model)."""

    def __init__(self, *, model: str = "gfpgan_1.4", blend: float = 0.8,
                 fidelity: float = 0.5, options: ModelOptions | None = None) -> None:
        """Open the model once.

        Args:
            model: one of `ENHANCER_MODELS`.
            blend: weight of the enhanced face, in [0, 1].
            fidelity: CodeFormer's `weight` input, in [0, 1] (other models have none).

        Raises:
            ConfigError: unknown model or blend out of range. ModelError: model missing/wrong.
        """
        if model not in ENHANCER_MODELS:
            raise ConfigError(choices_message("enhancer", model, ENHANCER_MODELS))
        if not 0.0 <= blend <= 1.0:
            raise ConfigError(f"Invalid enhancer blend={blend!r}: must be in [0, 1]")
        if not 0.0 <= fidelity <= 1.0:
            raise ConfigError(f"Invalid enhancer fidelity={fidelity!r}: must be in [0, 1]")
        self.contract = ENHANCER_CONTRACTS[model]
        self.blend = blend
        self.fidelity = np.array([fidelity], np.float64)
        # The published exports fix batch 1; free it where the graph allows (checked once,
        # cached) so `enhance_many` restores a frame's faces in one call. CodeFormer's float64
        # `weight` input keeps it at batch 1 (the check feeds floating-point inputs only).
        self.runner, _, plan = open_batched_runner(model, options or ModelOptions())
        self.notes: tuple[str, ...] = (plan.note,) if plan.note else ()
        """What run.json should say about the enhancer (e.g. why its batch stays at 1)."""
        self.provider = self.runner.provider
        self.crop_size = self.contract.size
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
        size = self.crop_size
        matrices = [warp_template_matrix(face, self.contract.template, size) for face in faces]
        blob = np.empty((len(faces), 3, size, size), np.float32)
        for index, matrix in enumerate(matrices):
            crop = cv2.warpAffine(output, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
            np.divide(crop[..., ::-1].transpose(2, 0, 1), 127.5, out=blob[index])
        blob -= 1.0
        step = len(faces) if self.runner.batchable else 1
        restored = np.concatenate([self._forward(blob[start:start + step])
                                   for start in range(0, len(faces), step)])
        for matrix, face_out in zip(matrices, restored, strict=True):
            rgb = (np.clip(face_out, -1.0, 1.0) + 1.0) * 127.5
            enhanced = np.rint(rgb.transpose(1, 2, 0)[..., ::-1]).astype(np.uint8)
            paste_crop(output, np.ascontiguousarray(enhanced), matrix, self.mask,
                       colour_match=False, blend="alpha", blend_levels=1, opacity=self.blend)

    def _forward(self, blob: np.ndarray) -> np.ndarray:
        """The model on (B, 3, S, S) inputs in [-1, 1]; (B, 3, S, S) restored."""
        if not self.contract.fidelity_input:
            return np.asarray(self.runner.run(blob)[0])
        # By name, with the float64 fidelity as the graph declares it (ModelRunner casts every
        # input to its float type, which a double input would reject).
        feeds = {"input": blob, "weight": self.fidelity}
        return np.asarray(self.runner.session.run(self.runner.output_names[:1], feeds)[0])
