"""The classic swap engine: no learned swapper, runs anywhere.

The aligned source crop is warped onto each target face by the similarity that maps the
target's keypoints to the template, colour-matched to the target in LAB under a feathered face
mask, and blended (multi-band or alpha). Everything is deterministic CPU code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from fusionray.errors import ConfigError, FaceNotFoundError, choices_message
from fusionray.faces.align import align_face, face_to_template_matrix
from fusionray.faces.mask import build_face_mask
from fusionray.faces.paste import MASK_SUPPORT, paste_crop
from fusionray.swap.base import FaceJob, SourceIdentity, Swapper, require_outputs
from fusionray.types import Face, FrameBGR

SWAPPER_NAMES = ("classic", "inswapper", "learned")
"""Engines `build_swapper` knows."""
BLEND_MODES = ("laplacian", "alpha")

__all__ = ["BLEND_MODES", "MASK_SUPPORT", "SWAPPER_NAMES", "ClassicSwapper", "build_swapper"]


class ClassicSwapper:
    """Aligned-crop face swap with LAB colour matching and multi-band blending."""

    name = "classic"
    max_batch = 1_000_000
    """No model: `forward` only attaches the source crop, so any number of faces is one call."""

    def __init__(
        self,
        *,
        crop_size: int = 256,
        mask_padding: float = 0.0,
        mask_blur: float = 0.3,
        colour_match: bool = True,
        blend: Literal["laplacian", "alpha"] | str = "laplacian",
        blend_levels: int = 5,
    ) -> None:
        """Check the options and build the template-space mask once.

        Args:
            crop_size: side of the aligned crop in pixels, in [64, 1024].
            mask_padding: grow/shrink the mask, fraction of the crop (see `build_face_mask`).
            mask_blur: mask feather, fraction of the face size.
            colour_match: recolour the source to the target face in LAB.
            blend: `laplacian` (multi-band) or `alpha`.
            blend_levels: pyramid levels for `laplacian`, in [1, 8].

        Raises:
            ConfigError: an option is unknown or out of range.
        """
        if not 64 <= crop_size <= 1024:
            raise ConfigError(f"Invalid crop_size={crop_size!r}: must be in [64, 1024]")
        if blend not in BLEND_MODES:
            raise ConfigError(choices_message("blend", blend, BLEND_MODES))
        if not 1 <= blend_levels <= 8:
            raise ConfigError(f"Invalid blend_levels={blend_levels!r}: must be in [1, 8]")
        self.crop_size = crop_size
        self.colour_match = colour_match
        self.blend = blend
        self.blend_levels = blend_levels
        self.mask = build_face_mask(crop_size, padding=mask_padding, blur=mask_blur)

    def prepare_source(
        self, images: Sequence[np.ndarray], faces: Sequence[Face]
    ) -> SourceIdentity:
        """Align the chosen face of each source image and combine the crops.

        Several images are combined by the per-pixel mean of their aligned crops (float, then
        rounded). Alignment puts eyes, nose and mouth at the same pixels, so the mean is a
        sharp-featured average that smooths out noise and one-off lighting; photos with very
        different expressions or poses blur it, so pass well-matched, frontal photos.

        Args:
            images: source images, (H, W, 3) uint8 BGR each.
            faces: the face to use in each image (same order and length).

        Raises:
            FaceNotFoundError: no images or faces were given.
            ValueError: `images` and `faces` differ in length.
        """
        if not images or not faces:
            raise FaceNotFoundError("No source face given: need at least one image with a face")
        if len(images) != len(faces):
            raise ValueError(f"Got {len(images)} source images but {len(faces)} faces")
        crops = [
            align_face(np.asarray(image), face, self.crop_size)[0].astype(np.float32)
            for image, face in zip(images, faces, strict=True)
        ]
        mean = np.clip(np.rint(np.mean(crops, axis=0)), 0, 255).astype(np.uint8)
        return SourceIdentity(crop=mean, crop_size=self.crop_size, image_count=len(crops))

    def _check_source(self, source: SourceIdentity) -> FrameBGR:
        if source.crop is None or source.crop_size != self.crop_size:
            raise ConfigError(
                f"Source identity has crop size {source.crop_size} "
                f"({'no crop' if source.crop is None else 'with crop'}); "
                f"the classic swapper needs a {self.crop_size} px crop"
            )
        return source.crop

    def prepare(
        self, frame_bgr: np.ndarray, faces: Sequence[Face], source: SourceIdentity
    ) -> list[FaceJob]:
        """One job per face: the frame -> template similarity from its keypoints.

        The classic engine never reads the target face's pixels for the swap itself (colour
        matching reads the frame in `paste`), so the jobs carry no crop.

        Args:
            frame_bgr: (H, W, 3) uint8 BGR; only its shape matters here.
            faces: target faces in frame pixels.
            source: from `prepare_source` with the same crop size.

        Raises:
            ConfigError: the source was prepared for another crop size or has no crop.
        """
        self._check_source(source)
        return [FaceJob(face=face, matrix=face_to_template_matrix(face, self.crop_size),
                        crop_size=self.crop_size) for face in faces]

    def forward(self, jobs: Sequence[FaceJob], source: SourceIdentity) -> list[FaceJob]:
        """Every job's output is the (read-only, shared) aligned source crop."""
        crop = self._check_source(source)
        return [job.with_output(crop) for job in jobs]

    def paste(self, frame_bgr: np.ndarray, jobs: Sequence[FaceJob]) -> FrameBGR:
        """Colour-match and blend each job's output into a copy of the frame, in order.

        Only each face's region of interest (the bounding box of the warped crop, clipped to the
        frame) is read and written: warping the whole frame per face would cost O(frame) per
        face for a change covering a few percent of it.

        Raises:
            ValueError: a job has no output.
        """
        require_outputs(jobs)
        output = np.array(frame_bgr, dtype=np.uint8, copy=True)
        for job in jobs:
            assert job.output is not None  # Checked above; narrows the type.
            paste_crop(output, job.output, job.matrix, self.mask,
                       colour_match=self.colour_match, blend=self.blend,
                       blend_levels=self.blend_levels)
        return output

    def swap(
        self, frame_bgr: np.ndarray, faces: Sequence[Face], source: SourceIdentity
    ) -> FrameBGR:
        """Swap every face in `faces`, in order; returns a new frame.

        Args:
            frame_bgr: (H, W, 3) uint8 BGR; not modified.
            faces: target faces in frame pixels.
            source: from `prepare_source` with the same crop size.

        Raises:
            ConfigError: the source was prepared for another crop size or has no crop.
        """
        return self.paste(frame_bgr, self.forward(self.prepare(frame_bgr, faces, source), source))


def build_swapper(name: str, **options: object) -> Swapper:
    """Create a swap engine by name.

    Args:
        name: one of `SWAPPER_NAMES`.
        **options: the engine's keyword options (`ClassicSwapper`: crop_size, mask_padding,
            mask_blur, colour_match, blend, blend_levels; `InswapperSwapper`,
            `LearnedSwapper`: see there).

    Raises:
        ConfigError: unknown name or option.
    """
    if name == "classic":
        try:
            return ClassicSwapper(**options)  # type: ignore[arg-type]
        except TypeError as error:
            raise ConfigError(f"Bad option for the classic swapper: {error}") from error
    if name == "inswapper":
        from fusionray.swap.inswapper import InswapperSwapper

        try:
            return InswapperSwapper(**options)  # type: ignore[arg-type]
        except TypeError as error:
            raise ConfigError(f"Bad option for the inswapper swapper: {error}") from error
    if name == "learned":
        from fusionray.swap.learned import LearnedSwapper

        try:
            return LearnedSwapper(**options)  # type: ignore[arg-type]
        except TypeError as error:
            raise ConfigError(f"Bad option for the learned swapper: {error}") from error
    raise ConfigError(choices_message("swapper", name, SWAPPER_NAMES))
