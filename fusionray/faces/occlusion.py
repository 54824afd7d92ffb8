"""Occlusion masks: which pixels of an aligned face crop are face, not a hand, hair or a mic.

Contract (DeepFaceLab's XSeg as FaceFusion exports it): input `input` [B, 256, 256, 3] NHWC,
the crop in the frame's BGR channel order, / 255; output [B, 256, 256, 1], the face probability
(clipped to [0, 1]). `many` runs XSeg 1, 2 and 3 and keeps the per-pixel minimum: a pixel is
face only where all three agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from fusionray.errors import ConfigError, choices_message

if TYPE_CHECKING:
    from fusionray.models.loader import ModelOptions
from fusionray.types import FloatArray, FrameBGR

OCCLUDER_MODELS = ("xseg_1", "xseg_2", "xseg_3")
OCCLUDER_CHOICES = (*OCCLUDER_MODELS, "many")
"""`swapper.occluder` choices; `many` = the minimum of all three."""


def occluder_model_names(choice: str) -> tuple[str, ...]:
    """Catalogue names behind an `swapper.occluder` choice.

    Raises:
        ConfigError: unknown choice.
    """
    if choice == "many":
        return OCCLUDER_MODELS
    if choice not in OCCLUDER_MODELS:
        raise ConfigError(choices_message("occluder", choice, OCCLUDER_CHOICES))
    return (choice,)


class FaceOccluder:
    """One or several XSeg models; `mask(crop)` is their per-pixel minimum at the crop's size."""

    def __init__(self, choice: str = "xseg_1", *, options: ModelOptions | None = None) -> None:
        """Open the model(s) once.

        Raises:
            ConfigError: unknown choice. ModelError: a model is missing, corrupt or wrong.
        """
        # Imported here: config validation reads this module's choices without onnxruntime.
        from fusionray.models.loader import ModelOptions, ModelRunner

        options = options or ModelOptions()
        self.runners = [ModelRunner(name, options) for name in occluder_model_names(choice)]
        self.provider = self.runners[0].provider

    def mask(self, crop_bgr: FrameBGR) -> FloatArray:
        """(S, S) float32 face probability in [0, 1] for an (S, S, 3) uint8 BGR aligned crop."""
        size = crop_bgr.shape[0]
        masks = []
        for runner in self.runners:
            side = runner.spec.input_size
            resized = cv2.resize(crop_bgr, (side, side), interpolation=cv2.INTER_AREA
                                 if size > side else cv2.INTER_LINEAR)
            blob = (resized.astype(np.float32) / 255.0)[None]
            output = np.asarray(runner.run(blob)[0], np.float32)[0, ..., 0]
            masks.append(np.asarray(cv2.resize(np.clip(output, 0.0, 1.0), (size, size),
                                               interpolation=cv2.INTER_LINEAR), np.float32))
        return np.minimum.reduce(masks).astype(np.float32)
