"""Region masks from a face parser: the chosen classes (skin, brows, eyes, lips...) of a crop.

Contract (BiSeNet, yakhyo's ResNet-18/34 exports as FaceFusion ships them): input `input`
[B, 3, 512, 512] NCHW, RGB / 255 normalised with the ImageNet mean (0.485, 0.456, 0.406) and
standard deviation (0.229, 0.224, 0.225); output [B, 19, 512, 512] class logits. The region mask
is 1 where the arg-max class is one of the chosen regions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from fusionray.errors import ConfigError, choices_message

if TYPE_CHECKING:
    from fusionray.models.loader import ModelOptions
from fusionray.types import FloatArray, FrameBGR

PARSER_MODELS = ("bisenet_resnet_18", "bisenet_resnet_34")

FACE_REGIONS: dict[str, int] = {
    "skin": 1,
    "left-eyebrow": 2,
    "right-eyebrow": 3,
    "left-eye": 4,
    "right-eye": 5,
    "glasses": 6,
    "nose": 10,
    "mouth": 11,
    "upper-lip": 12,
    "lower-lip": 13,
}
"""Selectable regions and their BiSeNet (CelebAMask-HQ) class index. The other classes are
background 0, ears 7/8, earring 9, neck 14, necklace 15, cloth 16, hair 17, hat 18."""

REGION_GROUPS: dict[str, tuple[str, ...]] = {
    "brows": ("left-eyebrow", "right-eyebrow"),
    "eyes": ("left-eye", "right-eye"),
    "lips": ("upper-lip", "lower-lip"),
}
"""Shorthands accepted in `swapper.mask_regions`."""

_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def region_classes(regions: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """BiSeNet class indices for region names (groups expanded), sorted, unique.

    Raises:
        ConfigError: no region, or an unknown one (naming the allowed ones).
    """
    if not regions:
        raise ConfigError("The region mask needs at least one region. Choose from: "
                          + ", ".join([*FACE_REGIONS, *REGION_GROUPS]))
    classes: set[int] = set()
    for region in regions:
        if region in REGION_GROUPS:
            classes.update(FACE_REGIONS[name] for name in REGION_GROUPS[region])
        elif region in FACE_REGIONS:
            classes.add(FACE_REGIONS[region])
        else:
            raise ConfigError(choices_message("mask region", region,
                                              [*FACE_REGIONS, *REGION_GROUPS]))
    return tuple(sorted(classes))


def prepare_parser_input(crop_bgr: FrameBGR, size: int) -> np.ndarray:
    """(1, 3, size, size) float32 BiSeNet input for an (S, S, 3) uint8 BGR crop."""
    resized = cv2.resize(crop_bgr, (size, size), interpolation=cv2.INTER_LINEAR)
    rgb = resized[..., ::-1].astype(np.float32) / 255.0
    return ((rgb - _MEAN) / _STD).transpose(2, 0, 1)[None].astype(np.float32)


class FaceParser:
    """BiSeNet face parsing; `mask(crop)` selects the configured regions."""

    def __init__(self, model: str = "bisenet_resnet_34", *,
                 regions: tuple[str, ...] = tuple(FACE_REGIONS),
                 options: ModelOptions | None = None) -> None:
        """Open the model once.

        Raises:
            ConfigError: unknown model or region. ModelError: model missing, corrupt or wrong.
        """
        # Imported here: config validation reads this module's choices without onnxruntime.
        from fusionray.models.loader import ModelOptions, ModelRunner

        if model not in PARSER_MODELS:
            raise ConfigError(choices_message("face parser", model, PARSER_MODELS))
        self.classes = np.array(region_classes(regions), np.int64)
        self.runner = ModelRunner(model, options or ModelOptions())
        self.provider = self.runner.provider

    def labels(self, crop_bgr: FrameBGR) -> np.ndarray:
        """(P, P) int64 arg-max class per pixel at the parser's size P."""
        logits = self.runner.run(prepare_parser_input(crop_bgr, self.runner.spec.input_size))[0]
        return np.asarray(logits)[0].argmax(axis=0)

    def mask(self, crop_bgr: FrameBGR) -> FloatArray:
        """(S, S) float32 in [0, 1]: 1 where the crop shows a chosen region (hard edge,
        resampled to the crop size; `refine_mask` feathers it)."""
        size = crop_bgr.shape[0]
        selected = np.isin(self.labels(crop_bgr), self.classes).astype(np.float32)
        return np.asarray(cv2.resize(selected, (size, size), interpolation=cv2.INTER_LINEAR),
                          np.float32)
