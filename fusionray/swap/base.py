"""What every swap engine shares: the prepared source identity and the `Swapper` interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

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


@runtime_checkable
class Swapper(Protocol):
    """Puts a source identity onto target faces. Models are loaded once, in `__init__`."""

    name: str
    """Engine name, e.g. `classic`."""

    def prepare_source(
        self, images: Sequence[np.ndarray], faces: Sequence[Face]
    ) -> SourceIdentity:
        """Build the identity from source images (BGR uint8) and one chosen face in each."""
        ...

    def swap(
        self, frame_bgr: np.ndarray, faces: Sequence[Face], source: SourceIdentity
    ) -> np.ndarray:
        """A new frame with every face in `faces` swapped; `frame_bgr` is left untouched."""
        ...
