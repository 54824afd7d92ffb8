"""ArcFace identity embeddings (insightface w600k_r50) for source identity and face selection.

Contract (DESIGN.md): the face aligned to the ArcFace 112 template, RGB, (x − 127.5) / 127.5,
NCHW; output [N, 512], which the caller L2-normalises. The batch dimension is free in the
published export (an export with batch 1 gets it freed where its graph allows, see
`fusionray.models.batch`), so the faces of a call, across any number of images, go through in
as few runs as `max_batch` allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from fusionray.errors import ConfigError, FaceNotFoundError
from fusionray.faces.align import align_face
from fusionray.models.batch import open_batched_runner
from fusionray.models.loader import ModelOptions
from fusionray.types import Face, FloatArray

ARCFACE_SIZE = 112
RECOGNIZER_MODELS = ("arcface_w600k_r50",)


def prepare_arcface_blob(crops_bgr: Sequence[np.ndarray]) -> npt.NDArray[np.float32]:
    """(N, 112, 112, 3) uint8 BGR aligned crops -> (N, 3, 112, 112) float32 network input."""
    stack = np.stack([np.asarray(crop)[..., ::-1] for crop in crops_bgr]).astype(np.float32)
    return np.ascontiguousarray(((stack - 127.5) / 127.5).transpose(0, 3, 1, 2))


def normalise_embeddings(raw: npt.ArrayLike) -> FloatArray:
    """L2-normalise each row of (N, 512); rows of zeros stay zero."""
    values = np.asarray(raw, dtype=np.float32).reshape(-1, 512)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return (values / np.maximum(norms, 1e-12)).astype(np.float32)


def average_identity(embeddings: Sequence[npt.ArrayLike]) -> FloatArray:
    """Mean of normalised embeddings, normalised again: several photos, one identity (512,).

    Raises:
        FaceNotFoundError: no embeddings.
    """
    if not embeddings:
        raise FaceNotFoundError("No source face given: need at least one image with a face")
    rows = normalise_embeddings(np.stack([np.asarray(e).reshape(-1) for e in embeddings]))
    return normalise_embeddings(rows.mean(axis=0))[0]


def cosine_distance(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """1 − cosine similarity of two embeddings: 0 same direction, 1 orthogonal, 2 opposite."""
    left = normalise_embeddings(a)[0]
    right = normalise_embeddings(b)[0]
    return float(1.0 - left @ right)


class ArcFaceEmbedder:
    """ArcFace on an ONNX Runtime session."""

    name = "arcface"

    def __init__(self, *, model: str = "arcface_w600k_r50",
                 options: ModelOptions | None = None, max_batch: int = 32) -> None:
        """Open the model once. Raises ModelError when it is missing, corrupt or wrong.

        Args:
            model: one of `RECOGNIZER_MODELS`.
            options: providers, threads, model folders.
            max_batch: most faces per model call (>= 1; 1 where the graph's batch is fixed).
        """
        if max_batch < 1:
            raise ConfigError(f"Invalid max_batch={max_batch!r}: must be >= 1")
        self.runner, _, plan = open_batched_runner(model, options or ModelOptions())
        self.provider = self.runner.provider
        self.max_batch = max_batch if self.runner.batchable else 1
        self.notes: tuple[str, ...] = (plan.note,) if plan.note else ()
        """What run.json should say about the embedder (e.g. why its batch stays at 1)."""

    def embed(self, image_bgr: np.ndarray, faces: Sequence[Face]) -> FloatArray:
        """(N, 512) L2-normalised embeddings of `faces` in one (H, W, 3) uint8 BGR image."""
        return self.embed_many([(image_bgr, faces)])[0]

    def embed_many(
        self, items: Sequence[tuple[np.ndarray, Sequence[Face]]]
    ) -> list[FloatArray]:
        """Embeddings of the faces of several images, batched across images.

        Args:
            items: (image, faces) pairs: (H, W, 3) uint8 BGR image and faces in its pixels.

        Returns:
            One (N_i, 512) float32 L2-normalised array per item, in order ((0, 512) for none).
        """
        crops = [align_face(np.asarray(image), face, ARCFACE_SIZE)[0]
                 for image, faces in items for face in faces]
        if not crops:
            return [np.zeros((0, 512), np.float32) for _ in items]
        blob = prepare_arcface_blob(crops)
        raw = np.concatenate([self.runner.run(blob[start:start + self.max_batch])[0]
                              for start in range(0, len(crops), self.max_batch)])
        embeddings = normalise_embeddings(raw)
        result, start = [], 0
        for _, faces in items:
            result.append(embeddings[start:start + len(faces)])
            start += len(faces)
        return result

    def with_embeddings(self, image_bgr: np.ndarray, faces: Sequence[Face]) -> list[Face]:
        """`faces` with their `embedding` filled in."""
        embeddings = self.embed(image_bgr, faces)
        return [replace(face, embedding=row) for face, row in zip(faces, embeddings, strict=True)]
