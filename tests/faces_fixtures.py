"""Real images and cached detectors shared by the face, model and swap tests."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import cast

import cv2
import insightface
import numpy as np
import skimage.data

from fusionray.faces.blazeface import BlazeFaceDetector
from fusionray.types import FrameBGR

INSIGHTFACE_IMAGES = Path(insightface.__file__).parent / "data" / "images"


def astronaut_bgr() -> FrameBGR:
    """skimage's astronaut (Eileen Collins), 512×512, one frontal face near the top centre."""
    return np.ascontiguousarray(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))


def tom_hanks_bgr() -> FrameBGR:
    """insightface's 112×112 Tom Hanks photo: a tight, slightly turned, greyscale face."""
    return read_bgr(INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png")


def read_bgr(path: Path) -> FrameBGR:
    """An 8-bit image file (PNG, JPEG) read as uint8 BGR; fails if it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return cast(FrameBGR, image)  # IMREAD_COLOR of an 8-bit image: uint8 BGR


def astronaut_on_canvas(face_width: float, *, width: int = 1280, height: int = 720) -> tuple[
    FrameBGR, tuple[int, int, float]
]:
    """The astronaut scaled so her face box is about `face_width` px, on a grey canvas.

    Returns:
        The canvas and (x offset, y offset, scale) of the pasted astronaut.
    """
    scale = face_width / 94.0  # The front model's box on the full astronaut is 94 px wide.
    small = cv2.resize(astronaut_bgr(), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 90, np.uint8)
    x0, y0 = 600, 150
    canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return canvas, (x0, y0, scale)


@functools.cache
def blazeface(model: str = "back", tiles: int = 1) -> BlazeFaceDetector:
    """A detector per variant, built once per test session (models in the default cache)."""
    return BlazeFaceDetector(model=model, score_threshold=0.7, nms_threshold=0.3, tiles=tiles)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when identical)."""
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def copy_blazeface_models(cache: Path) -> None:
    """Put the real BlazeFace models into an offline model cache: back (the video detector)
    and front (the target and source gates' verifier, loaded by every job that verifies)."""
    for model in ("back", "front"):
        published = blazeface(model).runner.path
        shutil.copyfile(published, cache / published.name)
