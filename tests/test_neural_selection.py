"""Selection (one/many/reference, pose limits), head pose, the detections table's new columns,
the new config keys, and one render through the neural path on contract-faithful test models
(test fixtures, never a default, nothing about swap quality)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import ray

from fusionray.config import DetectorConfig, SelectionConfig, SwapperConfig
from fusionray.errors import ConfigError
from fusionray.faces.pose import MEAN_FACE_ARCFACE5, estimate_head_pose, rotation_from_angles
from fusionray.faces.select import select_faces
from fusionray.faces.table import faces_to_table, table_to_faces
from fusionray.jobs.pipeline import OutputPaths, render
from fusionray.types import Face
from tests import onnx_fixtures as fx
from tests.faces_fixtures import astronaut_bgr, blazeface, copy_blazeface_models, psnr
from tests.test_render import compose_config, decoded_frames


def _unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _face(x: float, size: float, *, embedding: np.ndarray | None = None,
          yaw: float = 0.0) -> Face:
    rotation = rotation_from_angles(yaw, 0.0, 0.0)
    model = (MEAN_FACE_ARCFACE5 - MEAN_FACE_ARCFACE5.mean(axis=0)) @ rotation.T
    keypoints = model[:, :2] * size / 112 + (x + size / 2, 100)
    return Face(bbox=np.array([x, 100 - size / 2, x + size, 100 + size / 2]),
                keypoints=keypoints, score=0.9, embedding=embedding)


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (25, 0, 0), (-60, 0, 0), (0, 20, 0),
                                              (10, -15, 30), (80, 0, 0)])
def test_pose_recovers_known_angles(yaw: float, pitch: float, roll: float) -> None:
    model = (MEAN_FACE_ARCFACE5 - MEAN_FACE_ARCFACE5.mean(axis=0)) @ rotation_from_angles(
        yaw, pitch, roll).T
    estimate = estimate_head_pose(model[:, :2] * 1.7 + (320, 240))
    np.testing.assert_allclose(estimate, (yaw, pitch, roll), atol=0.5)


def test_pose_of_real_frontal_face() -> None:
    face = blazeface("back").detect(astronaut_bgr())[0]
    yaw, pitch, roll = estimate_head_pose(face.keypoints, face.layout)
    assert abs(yaw) < 25 and abs(pitch) < 25 and abs(roll) < 15


def test_selection_modes_and_pose_limit() -> None:
    me, other = _unit(1), _unit(2)
    faces = [_face(0, 80, embedding=other), _face(200, 120, embedding=me),
             _face(400, 100, embedding=me, yaw=70)]
    assert [f.bbox[0] for f in select_faces(faces, SelectionConfig(mode="many"))] == [200, 400, 0]
    assert [f.bbox[0] for f in select_faces(faces, SelectionConfig(mode="one"))] == [200]
    limited = SelectionConfig(mode="many", max_yaw=45)
    assert [f.bbox[0] for f in select_faces(faces, limited)] == [200, 0]
    reference = SelectionConfig(mode="reference", reference_frame=0, reference_distance=0.5)
    assert [f.bbox[0] for f in select_faces(faces, reference, reference=me)] == [200, 400]
    assert select_faces(faces, reference, reference=-me) == []
    with pytest.raises(ConfigError, match="needs a reference face embedding"):
        select_faces(faces, reference)


def test_table_keeps_embeddings_and_pose() -> None:
    faces = {3: [_face(0, 80, embedding=_unit(4)), _face(100, 50)]}
    faces[3][0] = Face(bbox=faces[3][0].bbox, keypoints=faces[3][0].keypoints, score=0.5,
                       embedding=_unit(4), pose=(10.0, -5.0, 2.5))
    back = table_to_faces(faces_to_table(faces))[3]
    assert back[0].embedding is not None
    np.testing.assert_allclose(back[0].embedding, _unit(4), atol=1e-6)
    assert back[0].pose == (10.0, -5.0, 2.5)
    assert back[1].embedding is None and back[1].pose is None


@pytest.mark.parametrize("build, message", [
    (lambda: DetectorConfig(name="scrfd", model="back"),
     "Unknown detector.model for scrfd 'back'. Choose one of: 10g, 2.5g"),
    (lambda: DetectorConfig(name="scrfd", model="10g", input_size=600),
     "Invalid detector.input_size=600: must be a multiple of 32 in [128, 1280]"),
    (lambda: SwapperConfig(name="inswaper"),
     "Unknown swapper.name 'inswaper'. Choose one of: classic, inswapper"),
    (lambda: SwapperConfig(name="inswapper", enhancer="gfpgan_9"),
     "Unknown swapper.enhancer 'gfpgan_9'. Choose one of: none, gfpgan_1.4, gfpgan_1.2"),
    (lambda: SwapperConfig(name="inswapper", enhancer_blend=1.5),
     "Invalid swapper.enhancer_blend=1.5: must be in [0, 1]"),
    (lambda: SwapperConfig(enhancer="gfpgan_1.4"), "none with the classic engine"),
    (lambda: SwapperConfig(providers=("cuda", "tpu")),
     "Unknown swapper.providers entry 'tpu'"),
    (lambda: SelectionConfig(mode="reference"), "exactly one of them set"),
    (lambda: SelectionConfig(mode="reference", reference_image="a.png", reference_frame=3),
     "exactly one of them set"),
    (lambda: SelectionConfig(reference_distance=0), "reference_distance=0: must be in (0, 2]"),
    (lambda: SelectionConfig(max_yaw=120), "Invalid selection.max_yaw=120: must be in [0, 90]"),
])
def test_new_config_keys_are_validated(build: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()  # type: ignore[operator]
    assert message in str(caught.value)


def test_new_groups_compose() -> None:
    config = compose_config("+video=demo", "detector=scrfd", "swapper=inswapper",
                            "swapper.fp16=true", "swapper.enhancer=gfpgan_1.4",
                            "selection.mode=reference", "selection.reference_frame=0",
                            "models.shared_dirs=[/mnt/models]", "models.offline=true")
    assert (config.detector.name, config.detector.model, config.detector.nms_threshold) == (
        "scrfd", "10g", 0.4)
    assert config.swapper.name == "inswapper" and config.swapper.fp16
    assert config.models.shared_dirs == ("/mnt/models",)
    default = compose_config("+video=demo")
    assert (default.detector.name, default.swapper.name) == ("blazeface", "classic")


@pytest.fixture(scope="module")
def fixture_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = fx.import_fixtures(tmp_path_factory.mktemp("neural_models"),
                               inswapper_128=fx.build_identity_swapper(),
                               arcface_w600k_r50=fx.build_arcface_fixture())
    # The detector (and the target gate's verifier) is the real BlazeFace; offline, the loader
    # finds it only where the job looks (cache or shared folders), as for every other model.
    copy_blazeface_models(cache)
    return cache


@pytest.mark.ray
def test_render_through_the_neural_path(fixture_cache: Path, tmp_path: Path) -> None:
    """inswapper engine + reference selection end to end, with the identity swapper fixture:
    the real actors, model loading, embedding, selection, swap and paste-back run; the output
    equals the input within the round trip's precision."""
    output = tmp_path / "demo.mp4"
    config = compose_config(
        "+video=demo", f"output={output}", "progress=false", "chunk.frames=50",
        "quality=lossless", "preview_frames=0", "swapper=inswapper", "swapper.providers=[cpu]",
        f"models.cache_dir={fixture_cache}", "models.offline=true",
        "selection.mode=reference", "selection.reference_frame=0", "selection.max_yaw=60",
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        summary = render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    finally:
        ray.shutdown()
    assert summary.frames_with_faces >= 90
    run = json.loads(OutputPaths.for_video(output).run_json.read_text())
    assert "inswapper:CPUExecutionProvider" in run["providers"]
    original, swapped = decoded_frames(Path(summary.input)), decoded_frames(output)
    face = (slice(90, 230), slice(250, 390))
    assert min(psnr(a[face], b[face]) for a, b in zip(original, swapped, strict=True)) > 34
