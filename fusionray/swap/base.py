"""What every swap engine shares: the source identity, the per-face job record and the
`Swapper` interface.

A swap runs in three phases so that a pipeline can batch the model over faces of several frames
and overlap the CPU phases with it on other threads:

1. `prepare(frame_bgr, faces, source) -> list[FaceJob]`: CPU (plus the 68-point landmarker,
   where configured). Align each target face (the crop and the frame -> crop matrix) and split
   the crop into the model's units of work: with pixel boost, k² interleaved sub-images of the
   model's size (`FaceJob.sub_images`; one, the crop itself, at k = 1). Reads the frame only.
2. `forward(jobs, source) -> list[FaceJob]`: the model. Batched calls over every sub-image of
   jobs from any number of frames (split to the engine's `max_batch` rows), returning the jobs
   in the same order with `sub_outputs` (and, at k = 1, `output`) filled in. Touches no frame,
   so frames may be pasted meanwhile.
3. `paste(frame_bgr, jobs) -> frame_bgr`: CPU (plus the mask and enhancer models, where
   configured). Interleave each job's sub-outputs back (`FaceJob.model_output`), build its mask
   and composite it into a copy of its frame.

`swap(frame, faces, source)` is `paste(frame, forward(prepare(frame, faces, source), source))`.
Each face is aligned from the frame as given, so overlapping faces all see the original pixels
(not an earlier face's swap). All three phases are safe to call from several threads at once on
one engine (no shared mutable buffers; ONNX Runtime sessions are thread-safe for `run`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fusionray.swap.pixel_boost import explode_pixel_boost
from fusionray.types import Face, FloatArray, FrameBGR


@dataclass(frozen=True)
class SourceIdentity:
    """The face to put into the video, prepared once per job and shipped to every swap actor.

    Classic mode keeps an aligned crop; the neural engine keeps a normalised embedding. Small
    enough to pass through Ray's object store (a 256 px crop is 192 KiB).
    """

    crop: FrameBGR | None
    """(S, S, 3) uint8 BGR source face on the ArcFace template, or None (embedding-only engines).
    With several source images this is the pixel mean of their aligned crops (see
    `ClassicSwapper.prepare_source`)."""
    crop_size: int
    """S, side of `crop` in pixels (the swapper's crop size)."""
    image_count: int
    """How many source images were combined (>= 1)."""
    embedding: FloatArray | None = None
    """(512,) float32 L2-normalised identity embedding (neural engines), or None."""
    reference_embedding: FloatArray | None = None
    """(512,) float32 L2-normalised embedding of the face to replace in the video
    (`selection.mode=reference`), or None. Travels with the source: both are per job."""

    def __post_init__(self) -> None:
        if self.image_count < 1:
            raise ValueError(f"SourceIdentity.image_count must be >= 1, got {self.image_count}")
        if self.crop is None and self.embedding is None:
            raise ValueError("SourceIdentity needs a crop, an embedding, or both")
        if self.crop is not None:
            crop = np.asarray(self.crop)
            if crop.dtype != np.uint8 or crop.shape != (self.crop_size, self.crop_size, 3):
                raise ValueError(
                    f"SourceIdentity.crop must be uint8 {(self.crop_size, self.crop_size, 3)}, "
                    f"got {crop.dtype} {crop.shape}"
                )
            crop = crop.copy()
            crop.setflags(write=False)  # Shared by every frame: nobody may draw on it.
            object.__setattr__(self, "crop", crop)
        if self.embedding is not None:
            embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1)
            if embedding.shape != (512,):
                raise ValueError(f"SourceIdentity.embedding must be (512,), got {embedding.shape}")
            norm = float(np.linalg.norm(embedding))
            if not abs(norm - 1.0) < 1e-3:
                raise ValueError(f"SourceIdentity.embedding must be L2-normalised, norm is {norm}")
            object.__setattr__(self, "embedding", embedding)
        if self.reference_embedding is not None:
            reference = np.asarray(self.reference_embedding, dtype=np.float32).reshape(-1)
            if reference.shape != (512,):
                raise ValueError(f"SourceIdentity.reference_embedding must be (512,), got "
                                 f"{reference.shape}")
            object.__setattr__(self, "reference_embedding", reference)


@dataclass(frozen=True)
class FaceJob:
    """One target face on its way through `prepare` -> `forward` -> `paste`.

    Small and picklable (a 128 px job is about 100 KiB with its output), so a pipeline may queue
    it between threads or processes. Arrays are made read-only: several phases share them.
    """

    face: Face
    """The target face in frame pixels (after tracking and smoothing)."""
    matrix: npt.NDArray[np.float64]
    """(2, 3) float64 similarity mapping frame pixels to crop pixels (the alignment)."""
    crop_size: int
    """S, side of the aligned crop in pixels (128 for inswapper; the classic crop size)."""
    crop: FrameBGR | None = None
    """(S, S, 3) uint8 BGR target face aligned by `matrix`: what the model reads. None for
    engines that do not read the target (classic)."""
    output: FrameBGR | None = None
    """(S, S, 3) uint8 BGR face to paste, aligned like `crop`; None until `forward` (for a
    pixel-boosted job, until `paste` interleaves `sub_outputs`)."""
    boost: int = 1
    """k, sub-images per side: the model reads `crop` as k² interleaved (S/k)-pixel sub-images
    (`fusionray.swap.pixel_boost`); 1 = the crop itself."""
    sub_images: npt.NDArray[np.uint8] | None = None
    """(k², S/k, S/k, 3) uint8 BGR: `crop` split for the model (from `prepare`), one row of a
    model call each; None for engines without a model input (classic)."""
    sub_outputs: npt.NDArray[np.uint8] | None = None
    """(k², S/k, S/k, 3) uint8 BGR: the model's output per sub-image (from `forward`); `paste`
    interleaves them into the face it composites (`model_output`)."""
    landmarks_68: npt.NDArray[np.float64] | None = None
    """(68, 2) float64 frame pixels from the 68-point landmarker (`prepare`), or None; `paste`
    maps them into the crop for the area and mouth masks."""

    def __post_init__(self) -> None:
        matrix = np.array(self.matrix, dtype=np.float64)
        if matrix.shape != (2, 3):
            raise ValueError(f"FaceJob.matrix must be (2, 3), got {matrix.shape}")
        matrix.setflags(write=False)
        object.__setattr__(self, "matrix", matrix)
        expected = (self.crop_size, self.crop_size, 3)
        for field_name in ("crop", "output"):
            value = getattr(self, field_name)
            if value is None:
                continue
            array = np.asarray(value)
            if array.dtype != np.uint8 or array.shape != expected:
                raise ValueError(f"FaceJob.{field_name} must be uint8 {expected}, got "
                                 f"{array.dtype} {array.shape}")
            if array.flags.writeable:
                array = array.copy()
                array.setflags(write=False)
            object.__setattr__(self, field_name, array)
        if self.boost < 1 or self.crop_size % self.boost:
            raise ValueError(f"FaceJob.boost must be >= 1 and divide crop_size "
                             f"{self.crop_size}, got {self.boost}")
        side = self.crop_size // self.boost
        tiles = (self.boost**2, side, side, 3)
        for field_name in ("sub_images", "sub_outputs"):
            value = getattr(self, field_name)
            if value is None:
                continue
            array = np.asarray(value)
            if array.dtype != np.uint8 or array.shape != tiles:
                raise ValueError(f"FaceJob.{field_name} must be uint8 {tiles}, got "
                                 f"{array.dtype} {array.shape}")
            if array.flags.writeable:
                array = array.copy()
                array.setflags(write=False)
            object.__setattr__(self, field_name, array)
        if self.landmarks_68 is not None:
            points = np.array(self.landmarks_68, dtype=np.float64)
            if points.shape != (68, 2):
                raise ValueError(f"FaceJob.landmarks_68 must be (68, 2), got {points.shape}")
            points.setflags(write=False)
            object.__setattr__(self, "landmarks_68", points)

    @property
    def has_output(self) -> bool:
        """True once `forward` ran: `output` or `sub_outputs` is set."""
        return self.output is not None or self.sub_outputs is not None

    def model_output(self) -> FrameBGR:
        """(S, S, 3) uint8 BGR face to paste: `output`, or `sub_outputs` interleaved back.

        Raises:
            ValueError: the job did not go through `forward`.
        """
        if self.output is not None:
            return self.output
        if self.sub_outputs is None:
            raise ValueError("FaceJob has no output: run forward() first")
        return explode_pixel_boost(self.sub_outputs, self.boost)  # type: ignore[return-value]

    def with_sub_outputs(self, sub_outputs: npt.NDArray[np.uint8]) -> FaceJob:
        """This job with the model's per-sub-image outputs (what `forward` returns). Where
        boost is 1 the one sub-image is also the `output` (nothing to interleave)."""
        if self.boost == 1:
            return replace(self, sub_outputs=sub_outputs, output=np.asarray(sub_outputs)[0])
        return replace(self, sub_outputs=sub_outputs)

    def with_output(self, output: FrameBGR) -> FaceJob:
        """This job with `output` set (what `forward` returns)."""
        return replace(self, output=output)


def require_outputs(jobs: Sequence[FaceJob]) -> None:
    """Fail clearly when `paste` is given jobs that did not go through `forward`.

    Raises:
        ValueError: a job has no output (naming its position).
    """
    missing = [index for index, job in enumerate(jobs) if not job.has_output]
    if missing:
        raise ValueError(f"paste() needs jobs with outputs (from forward()); jobs {missing} "
                         "have none")


@runtime_checkable
class Swapper(Protocol):
    """Puts a source identity onto target faces. Models are loaded once, in `__init__`."""

    name: str
    """Engine name, e.g. `classic`."""
    max_batch: int
    """Most model rows one call takes (1 where the graph's batch is fixed): a face is one row,
    a pixel-boosted face `boost`² rows (its sub-images). `forward` splits longer job lists
    itself, so this only tells a pipeline how much work to gather."""

    def prepare_source(
        self, images: Sequence[np.ndarray], faces: Sequence[Face]
    ) -> SourceIdentity:
        """Build the identity from source images (BGR uint8) and one chosen face in each."""
        ...

    def prepare(
        self, frame_bgr: np.ndarray, faces: Sequence[Face], source: SourceIdentity
    ) -> list[FaceJob]:
        """Align each face of one (H, W, 3) uint8 BGR frame; one job per face, in order.

        Raises:
            ConfigError: `source` was prepared by another engine (or crop size).
        """
        ...

    def forward(self, jobs: Sequence[FaceJob], source: SourceIdentity) -> list[FaceJob]:
        """Run the model over jobs from any number of frames; the same jobs, in order, with
        their output set (`FaceJob.has_output`). Batched up to `max_batch` rows per call."""
        ...

    def paste(self, frame_bgr: np.ndarray, jobs: Sequence[FaceJob]) -> FrameBGR:
        """A new frame with every job's output composited, in order; `frame_bgr` untouched.

        Raises:
            ValueError: a job has no output.
        """
        ...

    def swap(
        self, frame_bgr: np.ndarray, faces: Sequence[Face], source: SourceIdentity
    ) -> FrameBGR:
        """A new frame with every face in `faces` swapped; `frame_bgr` is left untouched.
        Equal to `paste(frame_bgr, forward(prepare(frame_bgr, faces, source), source))`."""
        ...
