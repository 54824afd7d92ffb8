"""The neural swap engine: insightface's inswapper_128 on an ONNX Runtime session.

Contract (DESIGN.md): `target` [1, 3, 128, 128] is the target face aligned to the ArcFace 128
template, RGB, / 255; `source` [1, 512] is `latent = normed_embedding @ emap`, then
`latent /= ‖latent‖`, where `emap` is the graph's LAST initializer (512 × 512); the output
[1, 3, 128, 128] is RGB in [0, 1]: clip, × 255, to BGR. The swapped crop is pasted back over
the face's region only (`fusionray.faces.paste`), through the feathered face mask, optionally
colour-matched, multi-band blended, scaled by detection confidence and enhanced (any
`fusionray.faces.enhance.ENHANCER_MODELS`).

Face-model features (FaceFusion's): pixel boost aligns the face at N = k·128 px and swaps it as
k² interleaved 128 px sub-images (`fusionray.swap.pixel_boost`); the paste mask is the per-pixel
minimum of the configured masks (box, occlusion, region, area, mouth: `MaskRecipe`); a 68-point
landmarker can refine each face's alignment (and feeds the area and mouth masks).

The published graph fixes the batch at 1; where its ops allow, `fusionray.models.batch` frees
it (checked once with ONNX Runtime, cached in the model cache), and `forward` then runs up to
`max_batch` rows (sub-images of faces from any number of frames) as [B, 3, 128, 128] and
[B, 512] in one call. The phases split the work so: `prepare` refines (landmarker), aligns at
the boost size and splits each crop into its sub-images; `forward` runs every sub-image of every
job through the model; `paste` interleaves them back, builds the face's mask and composites.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from onnx import numpy_helper

from fusionray.errors import ConfigError, FaceNotFoundError, ModelError, choices_message
from fusionray.faces.align import align_face
from fusionray.faces.embed import ArcFaceEmbedder, average_identity
from fusionray.faces.enhance import FaceEnhancer
from fusionray.faces.landmarks68 import FaceLandmarker68
from fusionray.faces.mask import MaskRecipe, build_face_mask
from fusionray.faces.occlusion import FaceOccluder
from fusionray.faces.parser import FACE_REGIONS, FaceParser
from fusionray.faces.paste import paste_crop
from fusionray.models.batch import open_swap_runner
from fusionray.models.loader import ModelOptions
from fusionray.models.onnx_file import OnnxFileParts
from fusionray.swap.base import FaceJob, SourceIdentity, require_outputs
from fusionray.swap.job_mask import job_crop_mask
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

    Only that tensor is parsed: the file is memory-mapped and the graph's fields are skipped
    over by their lengths (`fusionray.models.onnx_file`), so the 554 MB graph is not parsed
    into Python objects just to read 1 MiB of it.

    Raises:
        ModelError: the file is not ONNX, or has no 512×512 last initializer (naming file,
            expected, found).
    """
    parts = OnnxFileParts(path)
    last = parts.last_initializer
    if last is None:
        raise ModelError(f"{path}: expected the 512x512 emap as the last initializer, found no "
                         "initializers")
    try:
        emap = numpy_helper.to_array(last, base_dir=str(Path(path).parent)).astype(np.float32)
    except Exception as error:  # onnx raises ValueError/TypeError/OSError for bad tensors.
        raise ModelError(f"{path}: cannot read its last initializer {last.name!r}: "
                         f"{error}") from error
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
    """Write a (128, 128, 3) uint8 BGR aligned crop into `out` (1, 3, 128, 128) as RGB / 255."""
    np.divide(np.asarray(crop_bgr)[..., ::-1].transpose(2, 0, 1), 255.0, out=out[0])


def prepare_targets(crops_bgr: Sequence[np.ndarray] | np.ndarray) -> npt.NDArray[np.float32]:
    """(N, 128, 128, 3) uint8 BGR aligned crops -> (N, 3, 128, 128) float32 RGB / 255."""
    crops = np.asarray(crops_bgr)
    blob = np.empty((crops.shape[0], 3, CROP_SIZE, CROP_SIZE), np.float32)
    np.divide(crops[..., ::-1].transpose(0, 3, 1, 2), 255.0, out=blob)
    return blob


def output_to_bgr(output: np.ndarray) -> FrameBGR:
    """(1, 3, S, S) RGB in [0, 1] -> (S, S, 3) uint8 BGR: clip, × 255, round, channel swap."""
    rgb = np.clip(np.asarray(output, dtype=np.float32)[0], 0.0, 1.0) * 255.0
    return np.ascontiguousarray(np.rint(rgb.transpose(1, 2, 0)[..., ::-1]).astype(np.uint8))


def outputs_to_bgr(outputs: np.ndarray) -> npt.NDArray[np.uint8]:
    """(N, 3, S, S) RGB in [0, 1] -> (N, S, S, 3) uint8 BGR crops (see `output_to_bgr`)."""
    rgb = np.clip(np.asarray(outputs, dtype=np.float32), 0.0, 1.0) * 255.0
    return np.ascontiguousarray(np.rint(rgb.transpose(0, 2, 3, 1)[..., ::-1]).astype(np.uint8))


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
        max_batch: int | None = 8,
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
            max_batch: most 128 px rows per swapper call, >= 1 (capped at 1 where the graph's
                batch is fixed); a pixel-boosted face is (pixel_boost / 128)² rows.
                None: by the provider the session opened on (`call_batch`: 1 on CPU).
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
        if max_batch is not None and max_batch < 1:
            raise ConfigError(f"Invalid max_batch={max_batch!r}: must be >= 1, or None (auto)")
        if pixel_boost not in PIXEL_BOOST_SIZES:
            raise ConfigError(choices_message("pixel_boost", pixel_boost,
                                              [str(size) for size in PIXEL_BOOST_SIZES]))
        self.masks = masks or MaskRecipe()
        if self.masks.needs_landmarks and landmarker is None:
            raise ConfigError("The area mask needs 68 landmarks: set swapper.landmarker=2dfan4")
        self.crop_size = pixel_boost
        """Side of the aligned crop (the pixel-boost size; 128 = off)."""
        self.boost = boost_factor(pixel_boost, CROP_SIZE)
        """k: sub-images per side of the crop."""
        self.options = options or ModelOptions()
        self.recognizer = recognizer
        # max_batch: rows per call, resolved (1 where the graph's batch could not be freed).
        self.runner, source_path, self.calls, notes = open_swap_runner(
            model, self.options, max_batch)
        self.max_batch = self.calls.max_batch
        self.provider = self.runner.provider
        self.emap = load_emap(source_path)
        """Most 128 px rows per swapper call (1 where the graph's batch could not be freed)."""
        self.mask = build_face_mask(self.crop_size, padding=mask_padding, blur=mask_blur)
        self.colour_match = colour_match
        self.blend = blend
        self.blend_levels = blend_levels
        self.soft_mask = soft_mask
        self.enhancer = (FaceEnhancer(model=enhancer, blend=enhancer_blend,
                                      fidelity=enhancer_fidelity, options=self.options)
                         if enhancer else None)
        self.occluder = (FaceOccluder(occluder, options=self.options)
                         if "occlusion" in self.masks.types else None)
        self.parser = (FaceParser(parser, regions=mask_regions, options=self.options)
                       if "region" in self.masks.types else None)
        self.landmarker = (FaceLandmarker68(landmarker, options=self.options)
                           if landmarker else None)
        self.notes: tuple[str, ...] = tuple(notes) + (self.enhancer.notes if self.enhancer
                                                      else ())
        """What run.json should say about this engine (e.g. why its batch stays at 1)."""
        self._embedder: ArcFaceEmbedder | None = None
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

        The crop is split into its k² sub-images (k = crop_size / 128; one at 128 px), run in
        calls of up to `max_batch` rows, and interleaved back (what the phases do for a job).
        """
        tiles = implode_pixel_boost(np.asarray(crop_bgr), self.boost)
        swapped = self._run_rows(tiles, latent)
        return explode_pixel_boost(swapped, self.boost)  # type: ignore[return-value]

    def _run_rows(self, rows: np.ndarray, latent: FloatArray) -> npt.NDArray[np.uint8]:
        """(B, 128, 128, 3) uint8 BGR sub-images -> (B, 128, 128, 3) swapped, `max_batch`
        rows per model call (`self.calls`), all with the one identity `latent` (1, 512)."""
        def call(start: int, stop: int) -> npt.NDArray[np.uint8]:
            blob = prepare_targets(rows[start:stop])
            latents = np.repeat(latent, blob.shape[0], axis=0)
            return outputs_to_bgr(self.runner.run(blob, latents)[0])

        return self.calls.run(rows.shape[0], call)

    def prepare(
        self, frame_bgr: np.ndarray, faces: Sequence[Face], source: SourceIdentity
    ) -> list[FaceJob]:
        """Refine (68-point landmarker, where configured), align each face at `crop_size`
        (bicubic) and split the crop into its model sub-images; one job per face.

        Args:
            frame_bgr: (H, W, 3) uint8 BGR; read only.
            faces: target faces in frame pixels.
            source: checked here (it must carry an embedding) so a wrong source fails before
                any model time is spent.

        Raises:
            ConfigError: the source has no embedding (prepared by the classic engine).
        """
        self.latent_for(source)
        frame = np.asarray(frame_bgr)
        jobs = []
        for detected in faces:
            face, landmarks_68 = (self.landmarker.refine(frame, detected)
                                  if self.landmarker is not None else (detected, None))
            crop, to_crop = align_face(frame, face, self.crop_size,
                                       interpolation=cv2.INTER_CUBIC)
            crop.setflags(write=False)  # Shared with its sub-images view; nobody writes it.
            tiles = crop[None] if self.boost == 1 else implode_pixel_boost(crop, self.boost)
            tiles.setflags(write=False)
            jobs.append(FaceJob(face=face, matrix=to_crop, crop_size=self.crop_size, crop=crop,
                                boost=self.boost, sub_images=tiles,  # type: ignore[arg-type]
                                landmarks_68=landmarks_68))
        return jobs

    def forward(self, jobs: Sequence[FaceJob], source: SourceIdentity) -> list[FaceJob]:
        """Swap every sub-image of every job; one model call per `max_batch` rows, in order.

        Jobs may come from any number of frames; they share the one source identity. Each job
        comes back with its `sub_outputs` (and, at boost 1, `output`) set.

        Raises:
            ConfigError: the source has no embedding.
            ValueError: a job was not prepared by this engine's `prepare` (size or boost).
        """
        if not jobs:
            return []
        latent = self.latent_for(source)
        wrong = [index for index, job in enumerate(jobs)
                 if job.sub_images is None or job.crop_size != self.crop_size
                 or job.boost != self.boost]
        if wrong:
            raise ValueError(f"inswapper forward() needs {self.crop_size} px jobs with "
                             f"{self.boost ** 2} sub-images (from its prepare()); jobs {wrong} "
                             "are not")
        rows = np.concatenate([job.sub_images for job in jobs])
        swapped = self._run_rows(rows, latent)
        count = self.boost**2
        return [job.with_sub_outputs(swapped[index * count:(index + 1) * count])
                for index, job in enumerate(jobs)]

    def paste(self, frame_bgr: np.ndarray, jobs: Sequence[FaceJob]) -> FrameBGR:
        """Blend each job's swapped face into a copy of the frame, then enhance the faces.

        Per job: interleave its sub-image outputs back into the `crop_size` face, build its
        mask (the configured masks, minimum-combined), and composite it (bicubic warp, optional
        colour match and confidence-scaled opacity). The enhancer runs after every face of the
        frame is pasted, its faces batched where its graph allows; it reads the pasted frame,
        as it did face by face before.

        Raises:
            ValueError: a job has no output.
        """
        require_outputs(jobs)
        output = np.array(frame_bgr, dtype=np.uint8, copy=True)
        for job in jobs:
            swapped = job.model_output()
            mask = job_crop_mask(job, swapped, recipe=self.masks, box=self.mask,
                                 occluder=self.occluder, parser=self.parser)
            paste_crop(output, swapped, job.matrix, mask,
                       colour_match=self.colour_match, blend=self.blend,
                       blend_levels=self.blend_levels,
                       opacity=float(np.clip(job.face.score, 0.0, 1.0)) if self.soft_mask
                       else 1.0,
                       interpolation=cv2.INTER_CUBIC)
        if self.enhancer is not None and jobs:
            self.enhancer.enhance_many(output, [job.face for job in jobs])
        return output

    def swap(
        self, frame_bgr: np.ndarray, faces: Sequence[Face], source: SourceIdentity
    ) -> FrameBGR:
        """Swap every face in `faces`, in order; returns a new frame (the input is untouched).

        `paste(frame, forward(prepare(frame, faces, source), source))`: each face is aligned
        from the frame as given, all faces go through the model together.
        """
        return self.paste(frame_bgr, self.forward(self.prepare(frame_bgr, faces, source), source))
