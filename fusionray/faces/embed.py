"""ArcFace identity embeddings (insightface w600k_r50) for source identity and face selection.

Contract (DESIGN.md): the face aligned to the ArcFace 112 template, RGB, (x − 127.5) / 127.5,
NCHW; output [N, 512], which the caller L2-normalises. The batch dimension is free in the
published export, so all faces of a call go through in one run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from fusionray.errors import FaceNotFoundError
from fusionray.faces.align import align_face
from fusionray.models.loader import ModelOptions, ModelRunner
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
                 options: ModelOptions | None = None) -> None:
        """Open the model once. Raises ModelError when it is missing, corrupt or wrong."""
        self.runner = ModelRunner(model, options or ModelOptions())
        self.provider = self.runner.provider

    def embed(self, image_bgr: np.ndarray, faces: Sequence[Face]) -> FloatArray:
        """(N, 512) L2-normalised embeddings of `faces` in one (H, W, 3) uint8 BGR image."""
        if not faces:
            return np.zeros((0, 512), np.float32)
        crops = [align_face(np.asarray(image_bgr), face, ARCFACE_SIZE)[0] for face in faces]
        blob = prepare_arcface_blob(crops)
        if self.runner.batchable:
            raw = self.runner.run(blob)[0]
        else:
            raw = np.concatenate([self.runner.run(blob[i:i + 1])[0] for i in range(len(crops))])
        return normalise_embeddings(raw)

    def with_embeddings(self, image_bgr: np.ndarray, faces: Sequence[Face]) -> list[Face]:
        """`faces` with their `embedding` filled in."""
        embeddings = self.embed(image_bgr, faces)
        return [replace(face, embedding=row) for face, row in zip(faces, embeddings, strict=True)]
