"""The right faces, end to end through Ray: `selection.mode=one` on a group shot keeps one
person (chunk-invariant, across a face leaving the frame), `selection.mode=map` swaps each
person to their own source and leaves the others alone. Real face photos (insightface's t1
group photo, skimage's astronaut), the real BlazeFace, the classic engine, lossless output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage.data

from fusionray.jobs.pipeline import OutputPaths, render
from fusionray.types import FrameBGR
from tests import onnx_fixtures as fx
from tests.clips import write_face_clip
from tests.faces_fixtures import (
    INSIGHTFACE_IMAGES,
    astronaut_bgr,
    blazeface,
    copy_blazeface_models,
    read_bgr,
)
from tests.test_render import compose_config, decoded_frames

WIDTH, HEIGHT, FRAMES = 720, 288, 36
SLOTS = (100, 270, 440, 610)
"""Face centre x of each person; all at y = HEIGHT / 2."""


def face_patches() -> list[tuple[FrameBGR, float]]:
    """Four real faces: (square patch around the face, face box side within the patch)."""
    group = read_bgr(INSIGHTFACE_IMAGES / "t1.jpg")
    patches = []
    group_faces = blazeface("back").detect(group)
    # Three of t1's frontal faces around the astronaut (person 2); t1's third face is
    # tilted enough that the detector misses it on some frames.
    sources = [(group, group_faces[0]), (group, group_faces[1]),
               (astronaut_bgr(), blazeface("back").detect(astronaut_bgr())[0]),
               (group, group_faces[3])]
    for image, face in sources:
        x1, y1, x2, y2 = face.bbox
        side = max(x2 - x1, y2 - y1)
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, side * 0.65
        top, left = int(cy - half), int(cx - half)
        patch = image[max(0, top):int(cy + half), max(0, left):int(cx + half)]
        patches.append((np.ascontiguousarray(patch), float(side) * patch.shape[0] / (2 * half)))
    return patches


def compose_frame(frame: int, patches: list[tuple[FrameBGR, float]], sizes: list[float],
                  visible: list[bool]) -> FrameBGR:
    """The people at their slots, face boxes `sizes` px, drifting right 1 px a frame."""
    canvas = np.full((HEIGHT, WIDTH, 3), 96, np.uint8)
    for person, ((patch, face_side), size, shown) in enumerate(
            zip(patches, sizes, visible, strict=True)):
        if not shown:
            continue
        side = round(patch.shape[0] * size / face_side)
        scaled = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
        left = SLOTS[person] + frame - side // 2
        top = HEIGHT // 2 - side // 2
        canvas[top:top + side, left:left + side] = scaled
    return canvas


def write_group_clip(path: Path, sizes_at, visible_at) -> Path:
    """A lossless clip of `compose_frame` for FRAMES frames (25 fps)."""
    patches = face_patches()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "bgr24"
        stream.options = {"qp": "0", "preset": "ultrafast", "g": "12", "threads": "1"}
        for index in range(FRAMES):
            image = compose_frame(index, patches, sizes_at(index), visible_at(index))
            video_frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    return path


def person_of(bbox: list[float], frame: int) -> int:
    centre = (bbox[0] + bbox[2]) / 2 - frame
    return int(np.argmin([abs(centre - slot) for slot in SLOTS]))


HIDDEN = range(14, 18)
"""Person 2 leaves the frame (4 frames: longer than temporal.max_gap, so only the shot-level
track joins the two sides)."""


def breathing_sizes(frame: int) -> list[float]:
    """Similar sizes breathing out of phase: the largest face changes every few frames.
    Person 2 is the most prominent over the shot (larger on average, despite leaving)."""
    bases = (84.0, 84.0, 104.0, 84.0)
    return [base + 8 * math.sin(2 * math.pi * frame / 7 + 1.6 * person)
            for person, base in enumerate(bases)]


HANKS = INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png"


def render_group(tmp_path: Path, clip: Path, name: str, *overrides: str,
                 source: Path | None = HANKS) -> Path:
    """Render `clip` losslessly (FFV1) into `tmp_path/name`; returns the output path."""
    output = tmp_path / name / "out.mkv"
    config = compose_config(
        f"+video={clip}", f"output={output}", "progress=false", "preview_frames=0",
        "quality=lossless", "encode.codec=ffv1", *overrides,
        *([f"+source={source}"] if source is not None else []))
    render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    return output


@pytest.mark.ray
def test_mode_one_keeps_one_person_over_the_shot(local_ray, tmp_path: Path) -> None:
    clip = write_group_clip(tmp_path / "group.mkv", breathing_sizes,
                            lambda f: [True, True, f not in HIDDEN, True])
    whole = render_group(tmp_path, clip, "whole", "selection.mode=one", "chunk.frames=36")
    faces = pq.read_table(OutputPaths.for_video(whole).faces).to_pylist()
    # The per-frame rule would have swapped a different person every few frames.
    largest: dict[int, tuple[float, int]] = {}
    for row in faces:
        area = (row["bbox"][2] - row["bbox"][0]) * (row["bbox"][3] - row["bbox"][1])
        if area > largest.get(row["frame"], (0.0, -1))[0]:
            largest[row["frame"]] = (area, person_of(row["bbox"], row["frame"]))
    flips = sum(largest[f][1] != largest[f - 1][1] for f in range(1, FRAMES))
    assert flips >= 4
    assert {row["frame"] for row in faces} == set(range(FRAMES))
    swapped = {f: [person_of(r["bbox"], f) for r in faces if r["frame"] == f and r["swapped"]]
               for f in range(FRAMES)}
    assert all(swapped[f] == [2] for f in range(FRAMES) if f not in HIDDEN), swapped
    assert all(swapped[f] == [] for f in HIDDEN)
    run = (OutputPaths.for_video(whole).run_json).read_text()
    assert "shot selection (one): 4 face track(s), 1 swapped" in run
    # Chunk-invariant: 5-frame chunks (8 of them, edges inside the gap too) give the same video.
    chunked = render_group(tmp_path, clip, "chunked", "selection.mode=one", "chunk.frames=5")
    for a, b in zip(decoded_frames(whole), decoded_frames(chunked), strict=True):
        assert np.array_equal(a, b)


def face_region(frame: int, person: int, size: float) -> tuple[slice, slice]:
    centre_x, half = SLOTS[person] + frame, int(size * 0.75)
    return slice(HEIGHT // 2 - half, HEIGHT // 2 + half), slice(centre_x - half, centre_x + half)


@pytest.mark.ray
def test_mode_map_swaps_each_person_to_their_own_source(local_ray, tmp_path: Path) -> None:
    """Three people of fixed sizes (100, 90, 80 px: face 0, 1, 2 of any frame): person 0 to
    the astronaut, person 1 to Tom Hanks, person 2 has no entry and stays as it was."""
    sizes = [100.0, 90.0, 80.0, 0.0]
    clip = write_group_clip(tmp_path / "three.mkv", lambda f: sizes,
                            lambda f: [True, True, True, False])
    astronaut = tmp_path / "astronaut.png"
    cv2.imwrite(str(astronaut), astronaut_bgr())
    mapped = render_group(
        tmp_path, clip, "map", "selection.mode=map", "chunk.frames=12",
        f"selection.map=[{{source: '{astronaut}', reference_frame: 0, reference_face: 0}}, "
        f"{{source: '{HANKS}', reference_frame: 0, reference_face: 1}}]", source=None)
    everyone = render_group(tmp_path, clip, "many", "chunk.frames=12", source=astronaut)
    original, ours, theirs = (decoded_frames(p) for p in (clip, mapped, everyone))
    for frame in range(FRAMES):
        regions = [face_region(frame, person, sizes[person]) for person in range(3)]
        # Person 0: the astronaut in both renders (same track, same identity, same pixels).
        assert np.array_equal(ours[frame][regions[0]], theirs[frame][regions[0]])
        assert not np.array_equal(ours[frame][regions[0]], original[frame][regions[0]])
        # Person 1: Tom Hanks here, the astronaut there.
        assert not np.array_equal(ours[frame][regions[1]], theirs[frame][regions[1]])
        assert not np.array_equal(ours[frame][regions[1]], original[frame][regions[1]])
        # Person 2: nobody's; left alone.
        assert np.array_equal(ours[frame][regions[2]], original[frame][regions[2]])
    rows = pq.read_table(OutputPaths.for_video(mapped).faces).to_pylist()
    swapped = {person_of(r["bbox"], r["frame"]) for r in rows if r["swapped"]}
    assert swapped == {0, 1}


@pytest.fixture(scope="module")
def neural_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = fx.import_fixtures(tmp_path_factory.mktemp("identity_models"),
                               inswapper_128=fx.build_identity_swapper(),
                               arcface_w600k_r50=fx.build_arcface_fixture())
    copy_blazeface_models(cache)
    return cache


def _neural_identity(clip: Path, output: Path, models: Path, *extra: str) -> dict:
    """Render `clip` with the learned engine; run.json's identity block."""
    config = compose_config(
        f"+video={clip}", f"+source={HANKS}", f"output={output}", "progress=false",
        "preview_frames=0", "quality=lossless", "swapper=inswapper", "swapper.providers=[cpu]",
        f"models.cache_dir={models}", "models.offline=true", *extra)
    render(config, run_dir=output.parent, config_yaml="x: 1\n")
    return json.loads(OutputPaths.for_video(output).run_json.read_text())["identity"]


@pytest.mark.ray
def test_identity_score_in_run_json(local_ray, neural_models: Path, tmp_path: Path) -> None:
    """With a recognizer and `identity_every=1`, run.json scores every swapped face. The
    identity-contract swapper gives the target face back, so the output is the target
    (similarity to it near 1), not the source: the score must say so."""
    clip = write_face_clip(tmp_path / "face.mp4", frames=12)
    output = tmp_path / "out.mp4"
    identity = _neural_identity(clip, output, neural_models, "chunk.frames=5",
                                "identity_every=1")
    swapped = sum(row["swapped"] for row in
                  pq.read_table(OutputPaths.for_video(output).faces).to_pylist())
    assert swapped >= 10 and identity["faces"] == swapped and identity["every"] == 1
    assert identity["target_mean"] > 0.95 and identity["target_p95"] <= 1.0 + 1e-4
    assert identity["source_mean"] < identity["target_mean"] - 0.1
    assert identity["source_p05"] <= identity["source_mean"]


@pytest.mark.ray
def test_identity_score_samples_every_nth_frame_of_the_video(
    local_ray, neural_models: Path, tmp_path: Path
) -> None:
    """`identity_every=3` scores the swapped faces of frames 0, 3, 6, 9 only (a third of the
    recognizer passes), chosen by frame index: chunks of 5 and one chunk score the same faces
    the same. Off (0): no identity block, no scorer."""
    clip = write_face_clip(tmp_path / "face.mp4", frames=12)
    chunked, whole, off = (tmp_path / name for name in ("chunked.mp4", "whole.mp4", "off.mp4"))
    sampled = _neural_identity(clip, chunked, neural_models, "chunk.frames=5",
                               "chunk.keyframe_aligned=false", "identity_every=3")
    rows = pq.read_table(OutputPaths.for_video(chunked).faces).to_pylist()
    expected = sum(row["swapped"] for row in rows if row["frame"] % 3 == 0)
    assert expected >= 3 and sampled["faces"] == expected and sampled["every"] == 3
    assert sampled["faces"] < sum(row["swapped"] for row in rows)
    assert _neural_identity(clip, whole, neural_models, "identity_every=3") == sampled
    assert _neural_identity(clip, off, neural_models, "identity_every=0") is None


@pytest.mark.ray
def test_animal_close_up_is_not_swapped(local_ray, tmp_path: Path) -> None:
    """skimage's cat, panning slowly: BlazeFace calls its head a face (0.80) on most frames.
    The target gate (re-detection on the aligned crop) drops it; with the gate off, the same
    render swaps it, so the test can tell."""
    cat = np.ascontiguousarray(cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    clip = tmp_path / "cat.mkv"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264rgb", rate=25)
        stream.width, stream.height, stream.pix_fmt = 416, 288, "bgr24"
        stream.options = {"qp": "0", "preset": "ultrafast", "threads": "1"}
        for index in range(12):
            video_frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(cat[6:294, 2 * index:2 * index + 416]), format="bgr24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    gated = render_group(tmp_path, clip, "gated", "chunk.frames=6")
    rows = pq.read_table(OutputPaths.for_video(gated).faces).to_pylist()
    assert rows == []
    assert all(np.array_equal(a, b)
               for a, b in zip(decoded_frames(gated), decoded_frames(clip), strict=True))
    ungated = render_group(tmp_path, clip, "ungated", "chunk.frames=6",
                           "selection.verify_faces=false")
    rows = pq.read_table(OutputPaths.for_video(ungated).faces).to_pylist()
    assert sum(row["swapped"] for row in rows) >= 6


@pytest.mark.ray
def test_mode_map_by_reference_images(local_ray, neural_models: Path, tmp_path: Path) -> None:
    """People found by reference photos (two for person 0) through the recognizer. The
    contract-faithful ArcFace fixture separates these faces less than the real model does
    (same face 0.81-0.84 cosine, nearest other 0.57), hence reference_distance 0.3."""
    sizes = [100.0, 90.0, 80.0, 0.0]
    clip = write_group_clip(tmp_path / "three.mkv", lambda f: sizes,
                            lambda f: [True, True, True, False])
    patches = face_patches()
    references = []
    for name, image in (("p0", patches[0][0]), ("p0_small", cv2.resize(patches[0][0], None,
                                                                        fx=0.7, fy=0.7)),
                        ("p2", patches[2][0])):
        references.append(tmp_path / f"{name}.png")
        cv2.imwrite(str(references[-1]), image)
    astronaut = tmp_path / "astronaut.png"
    cv2.imwrite(str(astronaut), astronaut_bgr())
    mapped = render_group(
        tmp_path, clip, "map", "selection.mode=map", "chunk.frames=12",
        "selection.reference_distance=0.3", f"models.cache_dir={neural_models}",
        "models.offline=true",
        f"selection.map=[{{source: '{astronaut}', reference_image: ['{references[0]}', "
        f"'{references[1]}']}}, {{source: '{HANKS}', reference_image: '{references[2]}'}}]",
        source=None)
    rows = pq.read_table(OutputPaths.for_video(mapped).faces).to_pylist()
    swapped = {person_of(r["bbox"], r["frame"]) for r in rows if r["swapped"]}
    assert swapped == {0, 2}
    run = OutputPaths.for_video(mapped).run_json.read_text()
    assert "shot selection (map): 3 face track(s), 2 swapped" in run
