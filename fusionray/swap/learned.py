"""Learned swappers beyond inswapper, one engine driven by a table of model contracts.

Every model here takes the target face aligned to a template at its size, normalised as
(RGB / 255 − mean) / std, NCHW, as `target`, and the source identity as `source`: an ArcFace
embedding (L2-normalised, or passed through a published embedding converter), or an aligned
source face image. Its output is RGB NCHW, either in [0, 1] directly or in the input's
normalised space (then × std + mean). Contracts (templates, sizes, mean/std, source kind,
converter, output range) are FaceFusion's for the same files (its face_swapper model table).

Alignment templates are FaceFusion's normalised five-point templates × the crop side
(`fusionray.faces.align.WARP_TEMPLATES`). Pixel
boost, masks, 68-point landmarks, paste-back and the enhancer are shared with inswapper.

`weight` balances source and target identity as FaceFusion's face-swapper weight does:
w = interp(weight, [0, 1], [0.35, −0.35]); source ← source · (1 − w) + target · w, so 0.5 is
the source alone, lower keeps more of the target, higher pushes past the source. fusionray
mixes the two after the same preparation (normalisation, converter), so both terms are in the
model's own input space.

The engine runs in the three phases of `fusionray.swap.base`: `prepare` refines (landmarker),
embeds the target where the weight needs it, aligns at the crop size and splits the crop into
its model-size sub-images; `forward` runs every sub-image of every job, each with its job's
source tensor, in calls of up to `max_batch` rows where the graph's batch dimension is free
(`fusionray.models.batch`; published exports fix it at 1, and a graph that reshapes to a fixed
batch stays at 1 with a note); `paste` interleaves, masks, composites and enhances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from fusionray.errors import ConfigError, FaceNotFoundError, choices_message
from fusionray.faces.align import (
    WARP_TEMPLATES,
    arcface_template,
    estimate_similarity,
    warp_template_matrix,
)
from fusionray.faces.embed import ArcFaceEmbedder, average_identity
from fusionray.faces.enhance import FaceEnhancer
from fusionray.faces.landmarks68 import FaceLandmarker68
from fusionray.faces.mask import MaskRecipe, build_face_mask
from fusionray.faces.occlusion import FaceOccluder
from fusionray.faces.parser import FACE_REGIONS, FaceParser
from fusionray.faces.paste import paste_crop
from fusionray.models.batch import open_swap_runner
from fusionray.models.loader import ModelOptions, ModelRunner
from fusionray.swap.base import FaceJob, SourceIdentity, require_outputs
from fusionray.swap.job_mask import job_crop_mask
from fusionray.swap.pixel_boost import boost_factor, explode_pixel_boost, implode_pixel_boost
from fusionray.types import Face, FloatArray, FrameBGR

Float64Array = npt.NDArray[np.float64]

SourceKind = Literal["embedding_norm", "converted", "converted_norm", "frame"]
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_HALF = (0.5, 0.5, 0.5)
_ZERO = (0.0, 0.0, 0.0)
_ONE = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class SwapperContract:
    """How one swapper model file is fed and read."""

    name: str
    """Catalogue name of the model file."""
    template: str
    """`WARP_TEMPLATES` key the target face is aligned to."""
    size: int
    """Side of `target` and of the output, pixels."""
    mean: tuple[float, float, float]
    """RGB mean subtracted from target / 255."""
    std: tuple[float, float, float]
    """RGB standard deviation the target is divided by."""
    source: SourceKind
    """embedding_norm: the L2-normalised ArcFace embedding. converted: the embedding through
    `converter`. converted_norm: the same, L2-normalised after. frame: an aligned source face
    image (`source_template`, `source_size`), RGB / 255."""
    output_normalised: bool
    """True: the output is in the input's normalised space (× std + mean); else [0, 1]."""
    converter: str | None = None
    """Catalogue name of the embedding converter (converted sources)."""
    source_template: str | None = None
    source_size: int | None = None

    def __post_init__(self) -> None:
        if self.template not in WARP_TEMPLATES:
            raise ValueError(f"{self.name}: unknown template {self.template!r}")
        if self.source.startswith("converted") and self.converter is None:
            raise ValueError(f"{self.name}: a converted source needs a converter")
        if self.source == "frame" and (self.source_template is None or self.source_size is None):
            raise ValueError(f"{self.name}: a frame source needs a template and size")


SWAPPER_CONTRACTS: dict[str, SwapperContract] = {
    contract.name: contract
    for contract in (
        *(SwapperContract(f"hyperswap_{v}_256", "arcface_128", 256, _HALF, _HALF,
                          "embedding_norm", output_normalised=True) for v in ("1a", "1b", "1c")),
        SwapperContract("simswap_256", "arcface_112_v1", 256, _IMAGENET_MEAN, _IMAGENET_STD,
                        "converted_norm", output_normalised=False,
                        converter="crossface_simswap"),
        SwapperContract("simswap_unofficial_512", "arcface_112_v1", 512, _ZERO, _ONE,
                        "converted_norm", output_normalised=False,
                        converter="crossface_simswap"),
        *(SwapperContract(f"ghost_{v}_256", "arcface_112_v1", 256, _HALF, _HALF, "converted",
                          output_normalised=True, converter="crossface_ghost")
          for v in ("1", "2", "3")),
        SwapperContract("blendswap_256", "ffhq_512", 256, _ZERO, _ONE, "frame",
                        output_normalised=False, source_template="arcface_112_v2",
                        source_size=112),
        SwapperContract("uniface_256", "ffhq_512", 256, _HALF, _HALF, "frame",
                        output_normalised=True, source_template="ffhq_512", source_size=256),
    )
}
"""Every table-driven swapper, by catalogue name."""

LEARNED_SWAPPERS = tuple(SWAPPER_CONTRACTS)


template_matrix = warp_template_matrix
"""(2, 3) frame -> crop similarity onto a `WARP_TEMPLATES` template (`warp_template_matrix`)."""


def template_face_mask(template: str, size: int, *, padding: float, blur: float) -> FloatArray:
    """`build_face_mask`'s outline moved from the ArcFace template onto `template`, (S, S)."""
    mask = build_face_mask(size, padding=padding, blur=blur)
    move = estimate_similarity(arcface_template(size), WARP_TEMPLATES[template] * size)
    return np.asarray(cv2.warpAffine(mask, move, (size, size), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0), np.float32)


def balance_weight(weight: float) -> float:
    """FaceFusion's weight mapping: 0 → 0.35 (more target), 0.5 → 0, 1 → −0.35."""
    return float(np.interp(weight, [0.0, 1.0], [0.35, -0.35]))


def prepare_target_blob(crops_bgr: np.ndarray, contract: SwapperContract) -> np.ndarray:
    """(B, 3, S, S) float32 `target` for (B, S, S, 3) uint8 BGR crops."""
    rgb = np.asarray(crops_bgr)[..., ::-1].astype(np.float32) / 255.0
    normalised = (rgb - np.array(contract.mean, np.float32)) / np.array(contract.std, np.float32)
    return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2), dtype=np.float32)


def decode_output(output: np.ndarray, contract: SwapperContract) -> np.ndarray:
    """(B, 3, S, S) model output -> (B, S, S, 3) uint8 BGR."""
    rgb = np.asarray(output, np.float32).transpose(0, 2, 3, 1)
    if contract.output_normalised:
        rgb = rgb * np.array(contract.std, np.float32) + np.array(contract.mean, np.float32)
    bgr = np.clip(rgb, 0.0, 1.0)[..., ::-1] * 255.0
    return np.ascontiguousarray(np.rint(bgr).astype(np.uint8))


class LearnedSwapper:
    """One engine for every `SWAPPER_CONTRACTS` model, with inswapper's paste-back features."""

    name = "learned"

    def __init__(
        self,
        *,
        model: str,
        recognizer: str = "arcface_w600k_r50",
        options: ModelOptions | None = None,
        weight: float = 0.5,
        pixel_boost: int | None = None,
        mask_padding: float = 0.0,
        mask_blur: float = 0.3,
        colour_match: bool = False,
        blend: str = "alpha",
        blend_levels: int = 5,
        soft_mask: bool = False,
        masks: MaskRecipe | None = None,
        occluder: str = "xseg_1",
        parser: str = "bisenet_resnet_34",
        mask_regions: tuple[str, ...] = tuple(FACE_REGIONS),
        landmarker: str | None = None,
        enhancer: str | None = None,
        enhancer_blend: float = 0.8,
        enhancer_fidelity: float = 0.5,
        max_batch: int | None = 8,
    ) -> None:
        """Open the swapper (and its converter, masks, landmarker, enhancer) once.

        Args:
            model: one of `LEARNED_SWAPPERS`.
            weight: source against target identity, in [0, 1] (0.5 = the source alone).
            pixel_boost: crop side, a multiple of the model's size (None: the model's size).
            max_batch: most model-size rows per call, >= 1 (capped at 1 where the graph's
                batch is fixed); a pixel-boosted face is (pixel_boost / size)² rows.
                None: by the provider the session opened on (`call_batch`: 1 on CPU).
            Others: as `InswapperSwapper`.

        Raises:
            ConfigError: bad option. ModelError: a model is missing, corrupt or wrong.
        """
        if model not in SWAPPER_CONTRACTS:
            raise ConfigError(choices_message("swapper model", model, LEARNED_SWAPPERS))
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"Invalid swapper weight={weight!r}: must be in [0, 1]")
        if max_batch is not None and max_batch < 1:
            raise ConfigError(f"Invalid max_batch={max_batch!r}: must be >= 1, or None (auto)")
        self.contract = SWAPPER_CONTRACTS[model]
        if weight != 0.5 and self.contract.source == "frame":
            raise ConfigError(f"Invalid swapper weight={weight!r}: must be 0.5 with {model} "
                              "(its source is a face image, not an identity embedding)")
        self.options = options or ModelOptions()
        self.recognizer = recognizer
        self.weight = weight
        self.crop_size = pixel_boost or self.contract.size
        self.boost = boost_factor(self.crop_size, self.contract.size)
        # max_batch: rows per call, resolved (1 where the graph's batch could not be freed).
        self.runner, _, self.calls, notes = open_swap_runner(model, self.options, max_batch)
        self.max_batch = self.calls.max_batch
        self.provider = self.runner.provider
        """Most model-size rows per call (1 where the graph's batch could not be freed)."""
        self.converter = (ModelRunner(self.contract.converter, self.options)
                          if self.contract.converter else None)
        self.mask = template_face_mask(self.contract.template, self.crop_size,
                                       padding=mask_padding, blur=mask_blur)
        self.colour_match, self.blend, self.blend_levels = colour_match, blend, blend_levels
        self.soft_mask = soft_mask
        self.masks = masks or MaskRecipe()
        if self.masks.needs_landmarks and landmarker is None:
            raise ConfigError("The area mask needs 68 landmarks: set swapper.landmarker=2dfan4")
        self.occluder = (FaceOccluder(occluder, options=self.options)
                         if "occlusion" in self.masks.types else None)
        self.parser = (FaceParser(parser, regions=mask_regions, options=self.options)
                       if "region" in self.masks.types else None)
        self.landmarker = (FaceLandmarker68(landmarker, options=self.options)
                           if landmarker else None)
        self.enhancer = (FaceEnhancer(model=enhancer, blend=enhancer_blend,
                                      fidelity=enhancer_fidelity, options=self.options)
                         if enhancer else None)
        self.notes: tuple[str, ...] = tuple(notes) + (self.enhancer.notes if self.enhancer
                                                      else ())
        """What run.json should say about this engine (e.g. why its batch stays at 1)."""
        self._embedder: ArcFaceEmbedder | None = None
        self._source_cache: tuple[bytes, np.ndarray] | None = None
        names = self.runner.input_names
        if set(names) != {"target", "source"}:
            raise ConfigError(f"{model}: expected graph inputs 'target' and 'source', got {names}")

    @property
    def embedder(self) -> ArcFaceEmbedder:
        """The ArcFace embedder, opened on first use (sources; targets when weight != 0.5)."""
        if self._embedder is None:
            self._embedder = ArcFaceEmbedder(model=self.recognizer, options=self.options)
        return self._embedder

    def prepare_source(self, images: Sequence[np.ndarray], faces: Sequence[Face]
                       ) -> SourceIdentity:
        """Embed each image's chosen face (averaged); frame-source models also keep the pixel
        mean of the aligned source crops.

        Raises:
            FaceNotFoundError: no images or faces. ValueError: lengths differ.
        """
        if not images or not faces:
            raise FaceNotFoundError("No source face given: need at least one image with a face")
        if len(images) != len(faces):
            raise ValueError(f"Got {len(images)} source images but {len(faces)} faces")
        embeddings = [face.embedding if face.embedding is not None
                      else self.embedder.embed(np.asarray(image), [face])[0]
                      for image, face in zip(images, faces, strict=True)]
        crop = None
        size = self.contract.size
        if self.contract.source == "frame":
            assert self.contract.source_template and self.contract.source_size
            size = self.contract.source_size
            crops = [cv2.warpAffine(np.asarray(image), template_matrix(
                face, self.contract.source_template, size), (size, size),
                flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
                for image, face in zip(images, faces, strict=True)]
            crop = np.rint(np.mean(crops, axis=0)).astype(np.uint8)
        return SourceIdentity(crop=crop, crop_size=size, image_count=len(images),
                              embedding=average_identity(embeddings))

    def _prepare_embedding(self, embedding: FloatArray) -> FloatArray:
        """(1, D) source-space vector for a (512,) normalised ArcFace embedding."""
        vector = np.asarray(embedding, np.float32).reshape(1, -1)
        if self.contract.source == "embedding_norm":
            return vector / max(float(np.linalg.norm(vector)), 1e-12)
        assert self.converter is not None
        converted = np.asarray(self.converter.run(vector)[0], np.float32).reshape(1, -1)
        if self.contract.source == "converted_norm":
            converted = converted / max(float(np.linalg.norm(converted)), 1e-12)
        return converted

    @property
    def needs_target_embedding(self) -> bool:
        """True when each target's own embedding is mixed into the source (weight != 0.5 on
        an embedding-source model)."""
        return balance_weight(self.weight) != 0.0 and self.contract.source != "frame"

    def _source_tensor(self, source: SourceIdentity) -> np.ndarray:
        """(1, ...) float32 `source` tensor of the identity alone (computed once per identity:
        the converter runs once, not per face)."""
        if self.contract.source == "frame":
            if source.crop is None or source.crop_size != self.contract.source_size:
                raise ConfigError(f"{self.contract.name} needs the source face image; this "
                                  "source identity was prepared by another engine")
            key = source.crop.tobytes()
        else:
            if source.embedding is None:
                raise ConfigError(f"{self.contract.name} needs a source embedding")
            key = source.embedding.tobytes()
        cached = self._source_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        if self.contract.source == "frame":
            assert source.crop is not None  # Checked above; narrows the type.
            rgb = source.crop[..., ::-1].astype(np.float32) / 255.0
            tensor = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])
        else:
            assert source.embedding is not None
            tensor = self._prepare_embedding(source.embedding).astype(np.float32)
        self._source_cache = (key, tensor)
        return tensor

    def source_input(self, source: SourceIdentity, target: FloatArray | None) -> np.ndarray:
        """The `source` tensor for one target face (`target`: its normalised embedding, needed
        only when weight != 0.5)."""
        prepared = self._source_tensor(source)
        shift = balance_weight(self.weight)
        if self.contract.source == "frame" or shift == 0.0 or target is None:
            return prepared
        mixed = prepared * (1.0 - shift) + self._prepare_embedding(target) * shift
        return mixed.astype(np.float32)

    def swap_crop(self, crop_bgr: np.ndarray, source_tensor: np.ndarray) -> FrameBGR:
        """Swap one aligned crop of `crop_size` (pixel-boosted when larger than the model)."""
        tiles = implode_pixel_boost(np.asarray(crop_bgr), self.boost)
        sources = np.repeat(source_tensor, len(tiles), axis=0)
        swapped = self._run_rows(tiles, sources)
        return explode_pixel_boost(swapped, self.boost)  # type: ignore[return-value]

    def _run_rows(self, tiles: np.ndarray, sources: np.ndarray) -> np.ndarray:
        """(B, M, M, 3) uint8 BGR sub-images with their (B, ...) source rows -> (B, M, M, 3)
        uint8 BGR swapped, `max_batch` rows per model call (`self.calls`)."""
        blob = prepare_target_blob(tiles, self.contract)

        def call(start: int, stop: int) -> np.ndarray:
            feeds = {"target": blob[start:stop], "source": sources[start:stop]}
            return self.runner.run(*(feeds[name] for name in self.runner.input_names))[0]

        return decode_output(self.calls.run(len(tiles), call), self.contract)

    def prepare(self, frame_bgr: np.ndarray, faces: Sequence[Face], source: SourceIdentity
                ) -> list[FaceJob]:
        """Refine (68-point landmarker, where configured), embed the targets the weight needs
        (one batched recognizer call for the frame's faces without an embedding), align each
        face at `crop_size` on the model's template (bicubic) and split the crop into its
        model-size sub-images; one job per face.

        Args:
            frame_bgr: (H, W, 3) uint8 BGR; read only.
            faces: target faces in frame pixels.
            source: checked here, so a source of another engine fails before model time.

        Raises:
            ConfigError: the source lacks what this model needs (embedding or face image).
        """
        self._source_tensor(source)
        frame = np.asarray(frame_bgr)
        refined = [self.landmarker.refine(frame, face) if self.landmarker is not None
                   else (face, None) for face in faces]
        if self.needs_target_embedding:
            missing = [index for index, (face, _) in enumerate(refined) if face.embedding is None]
            if missing:
                embedded = self.embedder.embed(frame, [refined[index][0] for index in missing])
                for index, embedding in zip(missing, embedded, strict=True):
                    face, points = refined[index]
                    refined[index] = (replace(face, embedding=embedding), points)
        jobs = []
        for face, landmarks_68 in refined:
            to_crop = template_matrix(face, self.contract.template, self.crop_size)
            crop = np.asarray(cv2.warpAffine(frame, to_crop, (self.crop_size, self.crop_size),
                                             flags=cv2.INTER_CUBIC,
                                             borderMode=cv2.BORDER_REPLICATE), np.uint8)
            crop.setflags(write=False)
            tiles = crop[None] if self.boost == 1 else implode_pixel_boost(crop, self.boost)
            tiles.setflags(write=False)
            jobs.append(FaceJob(face=face, matrix=to_crop, crop_size=self.crop_size, crop=crop,
                                boost=self.boost, sub_images=tiles,  # type: ignore[arg-type]
                                landmarks_68=landmarks_68))
        return jobs

    def forward(self, jobs: Sequence[FaceJob], source: SourceIdentity) -> list[FaceJob]:
        """Swap every sub-image of every job, each with its job's source tensor (the source
        identity, mixed with the job's target embedding when weight != 0.5); `max_batch` rows
        per model call, jobs of any number of frames, in order.

        Raises:
            ConfigError: the source lacks what this model needs.
            ValueError: a job was not prepared by this engine's `prepare` (size or boost).
        """
        if not jobs:
            return []
        wrong = [index for index, job in enumerate(jobs)
                 if job.sub_images is None or job.crop_size != self.crop_size
                 or job.boost != self.boost]
        if wrong:
            raise ValueError(f"{self.contract.name} forward() needs {self.crop_size} px jobs "
                             f"with {self.boost ** 2} sub-images (from its prepare()); jobs "
                             f"{wrong} are not")
        count = self.boost**2
        tiles = np.concatenate([job.sub_images for job in jobs])
        sources = np.concatenate([
            np.repeat(self.source_input(source, job.face.embedding), count, axis=0)
            for job in jobs])
        swapped = self._run_rows(tiles, sources)
        return [job.with_sub_outputs(swapped[index * count:(index + 1) * count])
                for index, job in enumerate(jobs)]

    def paste(self, frame_bgr: np.ndarray, jobs: Sequence[FaceJob]) -> FrameBGR:
        """A new frame with each job's face interleaved back, masked (the configured masks,
        minimum-combined) and composited, then the enhancer over the frame's faces (batched).

        Raises:
            ValueError: a job has no output.
        """
        require_outputs(jobs)
        output = np.array(frame_bgr, dtype=np.uint8, copy=True)
        for job in jobs:
            swapped = job.model_output()
            mask = job_crop_mask(job, swapped, recipe=self.masks, box=self.mask,
                                 occluder=self.occluder, parser=self.parser)
            paste_crop(output, swapped, job.matrix, mask, colour_match=self.colour_match,
                       blend=self.blend, blend_levels=self.blend_levels,
                       opacity=float(np.clip(job.face.score, 0.0, 1.0)) if self.soft_mask
                       else 1.0,
                       interpolation=cv2.INTER_CUBIC)
        if self.enhancer is not None and jobs:
            self.enhancer.enhance_many(output, [job.face for job in jobs])
        return output

    def swap(self, frame_bgr: np.ndarray, faces: Sequence[Face], source: SourceIdentity
             ) -> FrameBGR:
        """Swap every face in `faces`, in order; returns a new frame (the input is untouched).
        `paste(frame, forward(prepare(frame, faces, source), source))`."""
        return self.paste(frame_bgr, self.forward(self.prepare(frame_bgr, faces, source), source))
