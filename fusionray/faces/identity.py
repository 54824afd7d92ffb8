"""Identity score: how much the swapped faces look like the source, and unlike the target (pure).

With a recognizer (ArcFace) each swapped face is embedded again, cut from the output frame with
the same landmarks as the target face it replaced. Two cosine similarities per face:

- to the source identity: higher is a more convincing swap (an identity-preserving swap on
  ArcFace gives 0.6–0.8; two different people about 0);
- to the original target face: lower means less of the target's identity leaks through.

A run reports their mean and 5th percentile over the scored faces (`summarize_identity`), so
a sweep can set identity against quality settings. Embeddings come L2-normalised, so the
cosine is their dot product.

Scoring costs two recognizer passes a face (on CPU, an ArcFace R50 pair is about a tenth of an
inswapper_128 swap), so by default only the faces of every 5th frame are scored
(`identity_every`, `scored_frame`): a mean and a 5th percentile over a regular sample of the
shot, for a fifth of the cost. Which frames are scored depends on the frame's index in the
video alone, so chunking never changes the score, and two runs of a sweep score the same frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def scored_frame(index: int, every: int) -> bool:
    """Whether the swapped faces of video frame `index` are scored: every `every`th frame from
    frame 0 (`every` 1 = all, 0 = none)."""
    return every > 0 and index % every == 0


def identity_similarities(
    original: npt.ArrayLike, swapped: npt.ArrayLike, source: npt.ArrayLike
) -> npt.NDArray[np.float32]:
    """(N, 2) float32: per face, cos(swapped, source) and cos(swapped, original).

    Args:
        original: (N, 512) L2-normalised embeddings of the target faces before the swap.
        swapped: (N, 512) embeddings of the same faces after it.
        source: (512,) L2-normalised source identity.

    Raises:
        ValueError: shapes that do not pair up.
    """
    before = np.asarray(original, dtype=np.float64).reshape(-1, 512)
    after = np.asarray(swapped, dtype=np.float64).reshape(-1, 512)
    identity = np.asarray(source, dtype=np.float64).reshape(512)
    if before.shape != after.shape:
        raise ValueError(f"Need one swapped embedding per original face, got {before.shape[0]} "
                         f"original and {after.shape[0]} swapped")
    after_unit = after / np.maximum(np.linalg.norm(after, axis=1, keepdims=True), 1e-12)
    before_unit = before / np.maximum(np.linalg.norm(before, axis=1, keepdims=True), 1e-12)
    identity_unit = identity / max(float(np.linalg.norm(identity)), 1e-12)
    to_source = after_unit @ identity_unit
    to_target = np.sum(after_unit * before_unit, axis=1)
    return np.stack([to_source, to_target], axis=1).astype(np.float32)


def summarize_identity(scores: Sequence[npt.ArrayLike], *, every: int
                       ) -> dict[str, float | int] | None:
    """run.json's `identity` block from the chunks' (N, 2) scores, or None when there are none.

    Args:
        every: the job's `identity_every` (which frames were scored), reported as `every`.

    Returns:
        `faces` (how many swapped faces were scored), `every`, `source_mean`, `source_p05`
        (5th percentile: the worst frames), `target_mean` and `target_p95` (the most
        target-like frames), rounded to 4 decimals.
    """
    arrays = [np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in scores]
    stacked = np.concatenate(arrays) if arrays else np.zeros((0, 2))
    if stacked.shape[0] == 0:
        return None
    return {
        "faces": int(stacked.shape[0]),
        "every": every,
        "source_mean": round(float(stacked[:, 0].mean()), 4),
        "source_p05": round(float(np.percentile(stacked[:, 0], 5)), 4),
        "target_mean": round(float(stacked[:, 1].mean()), 4),
        "target_p95": round(float(np.percentile(stacked[:, 1], 95)), 4),
    }
