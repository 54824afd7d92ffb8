"""Landmark jitter and bias, raw detections versus tracked and smoothed, on a known path.

A virtual camera films `skimage.data.astronaut()` along a smooth path (the demo's pan, zoom and
roll, optionally with a head-bob sway on top); the clip is encoded with x264 (crf 18) and
decoded, as real footage would be. The true landmark path is known analytically: BlazeFace's
landmarks on the still photo, mapped through each frame's camera matrix. Then for each setting:

- jitter: mean |second difference| of the landmarks (px/frame²; the true path's own is shown),
- noise jitter: the same of the landmarks' deviation from the true path, i.e. without the path's
  own acceleration (what a viewer sees as shake on a swaying face),
- bias: mean distance between the smoother applied to the noise-free true path and that path
  (the lag/overshoot the filter itself adds; 0 for raw),
- error: mean distance between the landmarks and the true path (includes BlazeFace's own
  systematic offset against the still-photo landmarks, which no temporal filter removes).

The smoothed landmarks come from `fusionray.faces.temporal.stabilize_faces`, the function the
swap stage runs, over the whole clip as one chunk (chunking does not change it).

    .venv/bin/python benchmarks/bench_jitter.py            # default setting
    .venv/bin/python benchmarks/bench_jitter.py --sweep    # plus a radius x strength grid
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

from fusionray.config import TemporalConfig
from fusionray.faces.blazeface import BlazeFaceDetector
from fusionray.faces.temporal import stabilize_faces
from fusionray.media.demo import DEMO_FPS, DEMO_HEIGHT, DEMO_WIDTH, camera_matrix
from fusionray.report.jitter import landmark_error, landmark_jitter
from fusionray.types import Face

WORLD_SIZE = 1024


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    seconds: float
    sway_px: float
    """Amplitude of an extra sinusoidal head-bob in frame pixels (0 = the demo path)."""
    sway_hz: float = 1.0


SCENARIOS = (
    Scenario("pan (demo path, 8 s)", seconds=8.0, sway_px=0.0),
    Scenario("pan + 1 Hz sway of 12 px", seconds=8.0, sway_px=12.0),
    Scenario("fast pan (demo path, 2 s)", seconds=2.0, sway_px=0.0),
)


def frame_matrix(scenario: Scenario, index: int, count: int) -> np.ndarray:
    """World-to-frame affine (2, 3) of frame `index`."""
    matrix = camera_matrix(index / (count - 1), world_size=WORLD_SIZE).copy()
    seconds = index / DEMO_FPS
    phase = 2.0 * math.pi * scenario.sway_hz * seconds
    matrix[0, 2] += scenario.sway_px * math.sin(phase)
    matrix[1, 2] += 0.5 * scenario.sway_px * math.sin(1.7 * phase)
    return matrix


def film(scenario: Scenario, world: np.ndarray, work: Path) -> tuple[list[np.ndarray],
                                                                      list[np.ndarray]]:
    """Frames as decoded from an x264 encode, and each frame's camera matrix."""
    count = round(scenario.seconds * DEMO_FPS)
    matrices = [frame_matrix(scenario, i, count) for i in range(count)]
    path = work / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=DEMO_FPS)
        stream.width, stream.height, stream.pix_fmt = DEMO_WIDTH, DEMO_HEIGHT, "yuv420p"
        stream.options = {"crf": "18", "preset": "medium", "threads": "1"}
        for index, matrix in enumerate(matrices):
            image: np.ndarray = cv2.warpAffine(world, matrix, (DEMO_WIDTH, DEMO_HEIGHT),
                                               flags=cv2.INTER_CUBIC,
                                               borderMode=cv2.BORDER_REFLECT)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = index, Fraction(1, DEMO_FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    return frames, matrices


def transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return (points.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def true_face(reference: Face, matrix: np.ndarray) -> Face:
    """The still photo's face mapped through a camera matrix (box: bounds of its corners)."""
    x1, y1, x2, y2 = reference.bbox
    corners = transform(np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]), matrix)
    return dataclasses.replace(
        reference,
        bbox=np.concatenate([corners.min(axis=0), corners.max(axis=0)]).astype(np.float32),
        keypoints=transform(reference.keypoints, matrix),
    )


def nearest(faces: list[Face], target: Face) -> Face | None:
    if not faces:
        return None
    return min(faces, key=lambda f: float(np.linalg.norm(f.keypoints - target.keypoints)))


def track_points(faces_by_frame: dict[int, list[Face]], truth: list[Face]) -> np.ndarray:
    """(T, N, 2) landmarks of the face nearest the true one in each frame (NaN: none)."""
    points = np.full((len(truth), *truth[0].keypoints.shape), np.nan)
    for index, target in enumerate(truth):
        face = nearest(faces_by_frame.get(index, []), target)
        if face is not None:
            points[index] = face.keypoints
    return points


def smoothed(faces_by_frame: dict[int, list[Face]], count: int,
             settings: TemporalConfig) -> dict[int, list[Face]]:
    return stabilize_faces(faces_by_frame, owned=range(count), read=range(count),
                           frame_count=count, settings=settings)


@dataclasses.dataclass(frozen=True)
class Measured:
    jitter: float
    noise_jitter: float
    error: float
    missed: int


def measure(points: np.ndarray, truth_points: np.ndarray) -> Measured:
    """Jitters over frame triples with landmarks, error over frames with landmarks, misses."""
    present = ~np.isnan(points).any(axis=(1, 2))
    triples = [t for t in range(1, len(points) - 1) if present[t - 1:t + 2].all()]
    deviation = points - truth_points
    return Measured(
        jitter=float(np.mean([landmark_jitter(points[t - 1:t + 2]) for t in triples])),
        noise_jitter=float(np.mean([landmark_jitter(deviation[t - 1:t + 2]) for t in triples])),
        error=landmark_error(points[present], truth_points[present]),
        missed=int((~present).sum()),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also tabulate radius x strength")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.machine import machine_line

    default = TemporalConfig()
    detector = BlazeFaceDetector(model="back", score_threshold=0.7, nms_threshold=0.3)
    world = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR),
                       (WORLD_SIZE, WORLD_SIZE), interpolation=cv2.INTER_CUBIC)
    references = detector.detect(world)
    if not references:
        print("BlazeFace found no face in the still photo", file=sys.stderr)
        return 1
    reference = references[0]
    print(machine_line())
    print(f"detector: BlazeFace back, {detector.provider}; "
          f"clips {DEMO_WIDTH}x{DEMO_HEIGHT} @ {DEMO_FPS} fps, x264 crf 18")
    print(f"default: radius={default.radius} strength={default.strength} "
          f"max_gap={default.max_gap} min_track_frames={default.min_track_frames}")
    settings_grid = [(default.radius, default.strength)]
    if args.sweep:
        settings_grid += [(r, s) for r in (2, 3, 4) for s in (1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
                          if (r, s) != (default.radius, default.strength)]
    print()
    print("| clip | setting | jitter px/frame² | reduction | noise jitter | reduction "
          "| bias px | error px | missed |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for scenario in SCENARIOS:
        with tempfile.TemporaryDirectory() as work:
            frames, matrices = film(scenario, world, Path(work))
        clock = time.perf_counter()
        detected = {i: faces for i, frame in enumerate(frames) if (faces := detector.detect(frame))}
        detect_ms = 1000 * (time.perf_counter() - clock) / len(frames)
        truth = [true_face(reference, m) for m in matrices]
        truth_points = np.stack([face.keypoints for face in truth]).astype(np.float64)
        count = len(frames)
        raw = measure(track_points(detected, truth), truth_points)
        print(f"| {scenario.name} | true path | {landmark_jitter(truth_points):.3f} | | 0 | | "
              f"| | |")
        print(f"| {scenario.name} | raw detections | {raw.jitter:.3f} | | "
              f"{raw.noise_jitter:.3f} | | 0 | {raw.error:.2f} | {raw.missed} |")
        smooth_ms = 0.0
        for radius, strength in settings_grid:
            settings = dataclasses.replace(default, radius=radius, strength=strength)
            clock = time.perf_counter()
            output = smoothed(detected, count, settings)
            smooth_ms = 1000 * (time.perf_counter() - clock) / count
            result = measure(track_points(output, truth), truth_points)
            lag = smoothed({i: [f] for i, f in enumerate(truth)}, count, settings)
            bias = landmark_error(track_points(lag, truth), truth_points)
            is_default = (radius, strength) == (default.radius, default.strength)
            label = f"r={radius} s={strength:g}" + (" (default)" if is_default else "")
            print(f"| {scenario.name} | {label} | {result.jitter:.3f} | "
                  f"{100 * (1 - result.jitter / raw.jitter):.0f}% | {result.noise_jitter:.3f} | "
                  f"{100 * (1 - result.noise_jitter / raw.noise_jitter):.0f}% | {bias:.3f} | "
                  f"{result.error:.2f} | {result.missed} |")
        print(f"<!-- {scenario.name}: detect {detect_ms:.1f} ms/frame, "
              f"temporal {smooth_ms:.2f} ms/frame -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
