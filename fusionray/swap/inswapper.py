"""The neural swap engine: insightface's inswapper_128 on an ONNX Runtime session.

Contract (DESIGN.md): `target` [1, 3, 128, 128] is the target face aligned to the ArcFace 128
template, RGB, / 255; `source` [1, 512] is `latent = normed_embedding @ emap`, then
`latent /= ‖latent‖`, where `emap` is the graph's LAST initializer (512 × 512); the output
[1, 3, 128, 128] is RGB in [0, 1]: clip, × 255, to BGR. The swapped crop is pasted back over
the face's region only (`fusionray.faces.paste`), through the feathered face mask, optionally
colour-matched, multi-band blended, scaled by detection confidence and enhanced (GFPGAN).

The published graph fixes the batch at 1; where its ops allow, `fusionray.models.batch` frees
it (checked once with ONNX Runtime, cached in the model cache), and `forward` then runs up to
`max_batch` faces, from any number of frames, as [N, 3, 128, 128] and [N, 512] in one call.
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
from fusionray.faces.mask import build_face_mask
from fusionray.faces.paste import paste_crop
from fusionray.models.batch import open_batched_runner
from fusionray.models.loader import ModelOptions, ModelRunner
from fusionray.models.onnx_file import OnnxFileParts
from fusionray.swap.base import FaceJob, SourceIdentity, require_outputs
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


def prepare_targets(crops_bgr: Sequence[np.ndarray]) -> npt.NDArray[np.float32]:
    """(N, 128, 128, 3) uint8 BGR aligned crops -> (N, 3, 128, 128) float32 RGB / 255."""
    blob = np.empty((len(crops_bgr), 3, CROP_SIZE, CROP_SIZE), np.float32)
    for index, crop in enumerate(crops_bgr):
        np.divide(np.asarray(crop)[..., ::-1].transpose(2, 0, 1), 255.0, out=blob[index])
    return blob


def output_to_bgr(output: np.ndarray) -> FrameBGR:
    """(1, 3, S, S) RGB in [0, 1] -> (S, S, 3) uint8 BGR: clip, × 255, round, channel swap."""
    rgb = np.clip(np.asarray(output, dtype=np.float32)[0], 0.0, 1.0) * 255.0
    return np.ascontiguousarray(np.rint(rgb.transpose(1, 2, 0)[..., ::-1]).astype(np.uint8))


def outputs_to_bgr(outputs: np.ndarray) -> list[FrameBGR]:
    """(N, 3, S, S) RGB in [0, 1] -> N (S, S, 3) uint8 BGR crops (see `output_to_bgr`)."""
    return [output_to_bgr(outputs[index:index + 1]) for index in range(outputs.shape[0])]


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
        max_batch: int = 8,
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
            enhancer: None, or an enhancer model (`gfpgan_1.4`).
            enhancer_blend: weight of the enhanced face, in [0, 1].
            max_batch: most faces per swapper call, >= 1 (capped at 1 where the graph's
                batch is fixed).

        Raises:
            ConfigError: bad option. ModelError: a model is missing, corrupt or wrong.
        """
        if model not in INSWAPPER_MODELS:
            raise ConfigError(choices_message("inswapper model", model, INSWAPPER_MODELS))
        if blend not in BLEND_MODES:
            raise ConfigError(choices_message("blend", blend, BLEND_MODES))
        if not 1 <= blend_levels <= 8:
            raise ConfigError(f"Invalid blend_levels={blend_levels!r}: must be in [1, 8]")
        if max_batch < 1:
            raise ConfigError(f"Invalid max_batch={max_batch!r}: must be >= 1")
        self.options = options or ModelOptions()
        self.recognizer = recognizer
        notes: list[str] = []
        if max_batch > 1:
            self.runner, source_path, plan = open_batched_runner(model, self.options)
            notes += [plan.note] if plan.note else []
        else:
            self.runner = ModelRunner(model, self.options)
            source_path = self.runner.path
        self.provider = self.runner.provider
        self.emap = load_emap(source_path)
        self.max_batch = max_batch if self.runner.batchable else 1
        """Most faces per swapper call (1 where the graph's batch could not be freed)."""
        self.mask = build_face_mask(CROP_SIZE, padding=mask_padding, blur=mask_blur)
        self.colour_match = colour_match
        self.blend = blend
        self.blend_levels = blend_levels
        self.soft_mask = soft_mask
        self.enhancer = (FaceEnhancer(model=enhancer, blend=enhancer_blend, options=self.options)
                         if enhancer else None)
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
        """Run the swapper on one 128 px aligned BGR crop; returns the swapped BGR crop."""
        target = np.empty((1, 3, CROP_SIZE, CROP_SIZE), np.float32)
        prepare_target(crop_bgr, target)
        return output_to_bgr(self.runner.run(target, latent)[0])

    def prepare(
        self, frame_bgr: np.ndarray, faces: Sequence[Face], source: SourceIdentity
    ) -> list[FaceJob]:
        """Align each face to the 128 px ArcFace template (bicubic); one job per face.

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
        for face in faces:
            crop, to_crop = align_face(frame, face, CROP_SIZE, interpolation=cv2.INTER_CUBIC)
            jobs.append(FaceJob(face=face, matrix=to_crop, crop_size=CROP_SIZE, crop=crop))
        return jobs

    def forward(self, jobs: Sequence[FaceJob], source: SourceIdentity) -> list[FaceJob]:
        """Swap every job's crop; one model call per `max_batch` jobs, in order.

        Jobs may come from any number of frames; they share the one source identity.

        Raises:
            ConfigError: the source has no embedding.
            ValueError: a job has no crop (it was prepared by another engine).
        """
        if not jobs:
            return []
        latent = self.latent_for(source)
        missing = [index for index, job in enumerate(jobs) if job.crop is None]
        if missing or any(job.crop_size != CROP_SIZE for job in jobs):
            raise ValueError(f"inswapper forward() needs {CROP_SIZE} px jobs with crops (from "
                             f"its prepare()); jobs {missing} have no crop")
        crops = [job.crop for job in jobs]
        outputs: list[FrameBGR] = []
        for start in range(0, len(crops), self.max_batch):
            blob = prepare_targets(crops[start:start + self.max_batch])  # type: ignore[arg-type]
            latents = np.repeat(latent, blob.shape[0], axis=0)
            outputs += outputs_to_bgr(self.runner.run(blob, latents)[0])
        return [job.with_output(output) for job, output in zip(jobs, outputs, strict=True)]

    def paste(self, frame_bgr: np.ndarray, jobs: Sequence[FaceJob]) -> FrameBGR:
        """Blend each job's swapped crop into a copy of the frame (bicubic warp, feathered
        mask, optional colour match and confidence-scaled opacity), then enhance the faces.

        The enhancer runs after every face of the frame is pasted, its faces batched where its
        graph allows; it reads the pasted frame, as it did face by face before.

        Raises:
            ValueError: a job has no output.
        """
        require_outputs(jobs)
        output = np.array(frame_bgr, dtype=np.uint8, copy=True)
        for job in jobs:
            assert job.output is not None  # Checked above; narrows the type.
            paste_crop(output, job.output, job.matrix, self.mask, colour_match=self.colour_match,
                       blend=self.blend, blend_levels=self.blend_levels,
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
