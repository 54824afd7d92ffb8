"""The neural swap engine: insightface's inswapper_128 on an ONNX Runtime session.

Contract (DESIGN.md): `target` [1, 3, 128, 128] is the target face aligned to the ArcFace 128
template, RGB, / 255; `source` [1, 512] is `latent = normed_embedding @ emap`, then
`latent /= ‖latent‖`, where `emap` is the graph's LAST initializer (512 × 512); the output
[1, 3, 128, 128] is RGB in [0, 1]: clip, × 255, to BGR. The swapped crop is pasted back over
the face's region only (`fusionray.faces.paste`), through the feathered face mask, optionally
colour-matched, multi-band blended, scaled by detection confidence and enhanced (GFPGAN).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from fusionray.errors import ConfigError, FaceNotFoundError, ModelError, choices_message
from fusionray.faces.align import align_face
from fusionray.faces.embed import ArcFaceEmbedder, average_identity
from fusionray.faces.enhance import FaceEnhancer
from fusionray.faces.landmarks68 import FaceLandmarker68
from fusionray.faces.mask import MaskRecipe, build_crop_mask, build_face_mask
from fusionray.faces.occlusion import FaceOccluder
from fusionray.faces.parser import FACE_REGIONS, FaceParser
from fusionray.faces.paste import paste_crop
from fusionray.models.loader import ModelOptions, ModelRunner
from fusionray.swap.base import SourceIdentity
from fusionray.swap.pixel_boost import (
    PIXEL_BOOST_SIZES,
    boost_factor,
    explode_pixel_boost,
    implode_pixel_boost,
)
from fusionray.types import Face, FloatArray, FrameBGR

INSWAPPER_MODELS = ("inswapper_128", "inswapper_128_fp16")
CROP_SIZE = 128
BLEND_MODES = ("alpha", "laplacian")


def load_emap(path: Path) -> FloatArray:
    """The inswapper graph's last initializer, the 512×512 identity map, as float32.

    Raises:
        ModelError: the file has no 512×512 last initializer (naming file, expected, found).
    """
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and friends.
        raise ModelError(f"Cannot read {path} as ONNX: {error}") from error
    if not model.graph.initializer:
        raise ModelError(f"{path}: expected the 512x512 emap as the last initializer, found no "
                         "initializers")
    last = model.graph.initializer[-1]
    emap = numpy_helper.to_array(last).astype(np.float32)
    if emap.shape != (512, 512):
        raise ModelError(f"{path}: expected the 512x512 emap as the last initializer, found "
                         f"{last.name!r} with shape {list(emap.shape)}")
    return emap


def source_latent(embedding: npt.ArrayLike, emap: FloatArray) -> FloatArray:
    """(1, 512) float32 `source` input: normalise(normalise(embedding) @ emap)."""
    normed = np.asarray(embedding, dtype=np.float32).reshape(1, 512)
    normed = normed / max(float(np.linalg.norm(normed)), 1e-12)
    latent = normed @ emap
    return (latent / max(float(np.linalg.norm(latent)), 1e-12)).astype(np.float32)


def prepare_target(crop_bgr: np.ndarray, out: npt.NDArray[np.float32]) -> None:
    """Write a (128, 128, 3) uint8 BGR aligned crop into `out` (1, 3, 128, 128) as RGB / 255.

    Also takes a batch: (B, 128, 128, 3) crops into `out` (B, 3, 128, 128)."""
    crops = np.asarray(crop_bgr)
    if crops.ndim == 3:
        np.divide(crops[..., ::-1].transpose(2, 0, 1), 255.0, out=out[0])
    else:
        np.divide(crops[..., ::-1].transpose(0, 3, 1, 2), 255.0, out=out)


def output_to_bgr(output: np.ndarray) -> FrameBGR:
    """(1, 3, S, S) RGB in [0, 1] -> (S, S, 3) uint8 BGR: clip, × 255, round, channel swap."""
    rgb = np.clip(np.asarray(output, dtype=np.float32)[0], 0.0, 1.0) * 255.0
    return np.ascontiguousarray(np.rint(rgb.transpose(1, 2, 0)[..., ::-1]).astype(np.uint8))


class InswapperSwapper:
    """inswapper_128 (or its fp16 export) with paste-back, masks, colour and enhancement."""

    name = "inswapper"

    def __init__(
        self,
        *,
        model: str = "inswapper_128",
        recognizer: str = "arcface_w600k_r50",
        options: ModelOptions | None = None,
        mask_padding: float = 0.0,
        mask_blur: float = 0.3,
        colour_match: bool = False,
        blend: str = "alpha",
        blend_levels: int = 5,
        soft_mask: bool = False,
        enhancer: str | None = None,
        enhancer_blend: float = 0.8,
        enhancer_fidelity: float = 0.5,
        pixel_boost: int = CROP_SIZE,
        masks: MaskRecipe | None = None,
        occluder: str = "xseg_1",
        parser: str = "bisenet_resnet_34",
        mask_regions: tuple[str, ...] = tuple(FACE_REGIONS),
        landmarker: str | None = None,
    ) -> None:
        """Open the swapper (and the enhancer, if any) once; the recognizer opens on demand.

        Args:
            model: `inswapper_128` or `inswapper_128_fp16`.
            recognizer: ArcFace model for `prepare_source`.
            options: providers, threads, model folders.
            mask_padding, mask_blur: see `build_face_mask`.
            colour_match: LAB-match the swapped face to the target region.
            blend: `alpha` or `laplacian` (multi-band).
            blend_levels: pyramid levels for `laplacian`, in [1, 8].
            soft_mask: scale the mask by the detection's confidence.
            enhancer: None, or an enhancer model (`fusionray.faces.enhance.ENHANCER_MODELS`).
            enhancer_blend: weight of the enhanced face, in [0, 1].
            enhancer_fidelity: CodeFormer's fidelity weight, in [0, 1].
            pixel_boost: side of the aligned crop, one of `PIXEL_BOOST_SIZES` (128 = off); a
                larger crop is swapped as (pixel_boost / 128)² interleaved 128 px sub-images
                (`fusionray.swap.pixel_boost`).
            masks: which masks to combine (None: the box mask alone).
            occluder: XSeg model(s) of the occlusion mask (`xseg_1/2/3` or `many`).
            parser: BiSeNet model of the region mask; mask_regions: its regions.
            landmarker: None, or `2dfan4`: 68 landmarks align each face (and feed the area
                and mouth masks).

        Raises:
            ConfigError: bad option. ModelError: a model is missing, corrupt or wrong.
        """
        if model not in INSWAPPER_MODELS:
            raise ConfigError(choices_message("inswapper model", model, INSWAPPER_MODELS))
        if blend not in BLEND_MODES:
            raise ConfigError(choices_message("blend", blend, BLEND_MODES))
        if not 1 <= blend_levels <= 8:
            raise ConfigError(f"Invalid blend_levels={blend_levels!r}: must be in [1, 8]")
        if pixel_boost not in PIXEL_BOOST_SIZES:
            raise ConfigError(choices_message("pixel_boost", pixel_boost,
                                              [str(size) for size in PIXEL_BOOST_SIZES]))
        self.crop_size = pixel_boost
        self.boost = boost_factor(pixel_boost, CROP_SIZE)
        self.options = options or ModelOptions()
        self.recognizer = recognizer
        self.runner = ModelRunner(model, self.options)
        self.provider = self.runner.provider
        self.emap = load_emap(self.runner.path)
        self.mask = build_face_mask(self.crop_size, padding=mask_padding, blur=mask_blur)
        self.colour_match = colour_match
        self.blend = blend
        self.blend_levels = blend_levels
        self.soft_mask = soft_mask
        self.enhancer = (FaceEnhancer(model=enhancer, blend=enhancer_blend,
                                      fidelity=enhancer_fidelity, options=self.options)
                         if enhancer else None)
        self.masks = masks or MaskRecipe()
        if self.masks.needs_landmarks and landmarker is None:
            raise ConfigError("The area mask needs 68 landmarks: set swapper.landmarker=2dfan4")
        self.occluder = (FaceOccluder(occluder, options=self.options)
                         if "occlusion" in self.masks.types else None)
        self.parser = (FaceParser(parser, regions=mask_regions, options=self.options)
                       if "region" in self.masks.types else None)
        self.landmarker = (FaceLandmarker68(landmarker, options=self.options)
                           if landmarker else None)
        self._embedder: ArcFaceEmbedder | None = None
        # Prebuilt input buffer: each face is written into it, no per-face allocation. A graph
        # with a free batch dimension takes all boost sub-images in one call.
        batch = self.boost**2 if self.runner.batchable else 1
        self._target = np.zeros((batch, 3, CROP_SIZE, CROP_SIZE), np.float32)
        self._latent_cache: tuple[bytes, FloatArray] | None = None

    @property
    def embedder(self) -> ArcFaceEmbedder:
        """The ArcFace embedder, opened on first use (swap actors never need it)."""
        if self._embedder is None:
            self._embedder = ArcFaceEmbedder(model=self.recognizer, options=self.options)
        return self._embedder

    def prepare_source(
        self, images: Sequence[np.ndarray], faces: Sequence[Face]
    ) -> SourceIdentity:
        """Embed the chosen face of each image; average the normalised embeddings.

        Raises:
            FaceNotFoundError: no images or faces. ValueError: lengths differ.
        """
        if not images or not faces:
            raise FaceNotFoundError("No source face given: need at least one image with a face")
        if len(images) != len(faces):
            raise ValueError(f"Got {len(images)} source images but {len(faces)} faces")
        embeddings = [
            face.embedding if face.embedding is not None
            else self.embedder.embed(np.asarray(image), [face])[0]
            for image, face in zip(images, faces, strict=True)
        ]
        return SourceIdentity(crop=None, crop_size=CROP_SIZE, image_count=len(embeddings),
                              embedding=average_identity(embeddings))

    def latent_for(self, source: SourceIdentity) -> FloatArray:
        """The `source` input for an identity (computed once per identity)."""
        if source.embedding is None:
            raise ConfigError("The inswapper engine needs a source embedding; this source "
                              "identity was prepared by the classic engine (crop only)")
        key = source.embedding.tobytes()
        if self._latent_cache is None or self._latent_cache[0] != key:
            self._latent_cache = (key, source_latent(source.embedding, self.emap))
        return self._latent_cache[1]

    def swap_crop(self, crop_bgr: np.ndarray, latent: FloatArray) -> FrameBGR:
        """Run the swapper on one aligned BGR crop of `crop_size`; returns the swapped crop.

        At 128 px that is one model call. With pixel boost the crop is split into k² sub-images
        (k = crop_size / 128), swapped with the same latent in one batched call where the graph
        has a free batch dimension (else one call each), and interleaved back.
        """
        if self.boost == 1:
            prepare_target(crop_bgr, self._target)
            return output_to_bgr(self.runner.run(self._target, latent)[0])
        tiles = implode_pixel_boost(np.asarray(crop_bgr), self.boost)
        swapped = np.empty_like(tiles)
        step = self._target.shape[0]
        for start in range(0, len(tiles), step):
            prepare_target(tiles[start:start + step], self._target)
            result = self.runner.run(self._target, np.repeat(latent, step, axis=0))[0]
            for offset in range(step):
                swapped[start + offset] = output_to_bgr(result[offset:offset + 1])
        return explode_pixel_boost(swapped, self.boost)  # type: ignore[return-value]

    def crop_mask(self, crop: FrameBGR, swapped: FrameBGR, to_crop: npt.NDArray[np.float64],
                  landmarks_68: npt.NDArray[np.float64] | None) -> FloatArray:
        """The paste mask of one face: the configured masks, minimum-combined (crop space).

        Occlusion is read from the target crop (what covers the target's face must stay); the
        regions from the swapped crop (the new face's own skin, brows, lips), as FaceFusion
        does; area and mouth from the target's 68 landmarks mapped into the crop.
        """
        if self.masks.types == ("box",):
            return self.mask
        in_crop = (None if landmarks_68 is None
                   else landmarks_68 @ to_crop[:, :2].T + to_crop[:, 2])
        return build_crop_mask(
            self.masks, self.mask,
            occlusion=self.occluder.mask(crop) if self.occluder is not None else None,
            region=self.parser.mask(swapped) if self.parser is not None else None,
            landmarks_68=in_crop,
        )

    def swap(
        self, frame_bgr: np.ndarray, faces: Sequence[Face], source: SourceIdentity
    ) -> FrameBGR:
        """Swap every face in `faces`, in order; returns a new frame (the input is untouched)."""
        latent = self.latent_for(source)
        output = np.array(frame_bgr, dtype=np.uint8, copy=True)
        for detected in faces:
            face, landmarks_68 = (self.landmarker.refine(output, detected)
                                  if self.landmarker is not None else (detected, None))
            # Align from the output so overlapping faces see earlier swaps, as pasted.
            crop, to_crop = align_face(output, face, self.crop_size,
                                       interpolation=cv2.INTER_CUBIC)
            swapped = self.swap_crop(crop, latent)
            mask = self.crop_mask(crop, swapped, to_crop, landmarks_68)
            paste_crop(output, swapped, to_crop, mask, colour_match=self.colour_match,
                       blend=self.blend, blend_levels=self.blend_levels,
                       opacity=float(np.clip(face.score, 0.0, 1.0)) if self.soft_mask else 1.0,
                       interpolation=cv2.INTER_CUBIC)
            if self.enhancer is not None:
                self.enhancer.enhance(output, face)
        return output
