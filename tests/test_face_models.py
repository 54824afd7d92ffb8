"""Pixel boost, masks and 68-point landmarks on contract-faithful test models.

Models come from `tests/onnx_fixtures.py` and `tests/face_model_fixtures.py`, imported through
the real `import` path (so each contract is checked) and run by the real engine code.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fusionray.errors import ConfigError
from fusionray.faces.align import ARCFACE_TEMPLATE_112, arcface_template
from fusionray.faces.landmarks68 import (
    FaceLandmarker68,
    landmark_crop_matrix,
    landmarks_5_from_68,
)
from fusionray.faces.mask import (
    MaskRecipe,
    build_area_mask,
    build_crop_mask,
    build_face_mask,
    build_mouth_mask,
    combine_masks,
    refine_mask,
)
from fusionray.faces.occlusion import FaceOccluder, occluder_model_names
from fusionray.faces.parser import FaceParser, region_classes
from fusionray.models.loader import ModelOptions, ModelRunner
from fusionray.swap.base import SourceIdentity
from fusionray.swap.inswapper import InswapperSwapper
from fusionray.swap.pixel_boost import (
    PIXEL_BOOST_SIZES,
    boost_factor,
    explode_pixel_boost,
    implode_pixel_boost,
)
from fusionray.types import Face
from tests import face_model_fixtures as fm
from tests import onnx_fixtures as fx
from tests.faces_fixtures import astronaut_bgr, blazeface, psnr, tom_hanks_bgr


def _options(folder: Path, **models: bytes) -> ModelOptions:
    return ModelOptions(providers=("cpu",), cache_dir=fx.import_fixtures(folder, **models),
                        shared_dirs=(), offline=True)


def _identity(seed: int = 1) -> SourceIdentity:
    vector = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return SourceIdentity(crop=None, crop_size=128, image_count=1,
                          embedding=vector / np.linalg.norm(vector))


def _tom_hanks_face(scale: float) -> tuple[np.ndarray, Face]:
    """insightface's Tom Hanks photo is ArcFace-aligned: its keypoints are the template."""
    image = cv2.resize(tom_hanks_bgr(), None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    canvas = np.full((720, 960, 3), 100, np.uint8)
    canvas[60:60 + image.shape[0], 200:200 + image.shape[1]] = image
    keypoints = ARCFACE_TEMPLATE_112 * scale + (200, 60)
    x1, y1 = keypoints.min(axis=0) - 30 * scale
    x2, y2 = keypoints.max(axis=0) + 30 * scale
    return canvas, Face(bbox=np.array([x1, y1, x2, y2]), keypoints=keypoints.astype(np.float32),
                        score=0.9)


def _box(face: Face, shape: tuple[int, ...]) -> tuple[slice, slice]:
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    return slice(max(y1, 0), min(y2, shape[0])), slice(max(x1, 0), min(x2, shape[1]))


class _CountingRunner:
    """Wraps a ModelRunner and counts calls and sub-images (batch rows) it is given."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.calls = 0
        self.rows = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.runner, name)

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        self.calls += 1
        self.rows += inputs[0].shape[0]
        return self.runner.run(*inputs)


# --- pixel boost: pure space-to-depth ---------------------------------------------------------

@pytest.mark.parametrize("size", PIXEL_BOOST_SIZES)
def test_implode_is_interleaved_and_explode_inverts_it(size: int) -> None:
    factor = boost_factor(size, 128)
    crop = np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)
    tiles = implode_pixel_boost(crop, factor)
    assert tiles.shape == (factor * factor, 128, 128, 3)
    for i in range(factor):
        for j in range(factor):
            np.testing.assert_array_equal(tiles[i * factor + j], crop[i::factor, j::factor])
    np.testing.assert_array_equal(explode_pixel_boost(tiles, factor), crop)


def test_pixel_boost_rejects_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="multiple of the model's 128"):
        boost_factor(200, 128)
    with pytest.raises(ValueError, match="divides by 3"):
        implode_pixel_boost(np.zeros((256, 256, 3), np.uint8), 3)
    with pytest.raises(ValueError, match="4² square sub-images"):
        explode_pixel_boost(np.zeros((9, 128, 128, 3), np.uint8), 4)


@pytest.fixture(scope="module")
def identity_options(tmp_path_factory: pytest.TempPathFactory) -> ModelOptions:
    return _options(tmp_path_factory.mktemp("boost"), inswapper_128=fx.build_identity_swapper())


@pytest.mark.parametrize("size", PIXEL_BOOST_SIZES)
def test_identity_swapper_gives_the_face_back_at_every_boost(identity_options: ModelOptions,
                                                             size: int) -> None:
    """Align at N, split, swap (identity), interleave, paste: >= 40 dB over the face box, and
    one model call per sub-image at batch 1 (max_batch counts 128 px rows)."""
    swapper = InswapperSwapper(options=identity_options, pixel_boost=size, max_batch=1)
    counter = _CountingRunner(swapper.runner)
    swapper.runner = counter  # type: ignore[assignment]
    # A face as large as the boosted crop shows it (up to what fits the canvas; larger crops
    # then upsample the face, which the round trip must survive too).
    canvas, face = _tom_hanks_face(scale=min(size / 128, 4.0))
    output = swapper.swap(canvas, [face], _identity())
    rows, cols = _box(face, canvas.shape)
    value = psnr(output[rows, cols], canvas[rows, cols])
    assert value >= 40.0, f"pixel_boost={size}: {value:.1f} dB"
    factor = size // 128
    assert (counter.calls, counter.rows) == (factor**2, factor**2)


def test_batch_free_graph_takes_every_sub_image_in_one_call(tmp_path: Path) -> None:
    options = _options(tmp_path, inswapper_128=fm.build_batch_identity_swapper())
    swapper = InswapperSwapper(options=options, pixel_boost=512, max_batch=16)
    assert swapper.runner.batchable and swapper.max_batch == 16
    counter = _CountingRunner(swapper.runner)
    swapper.runner = counter  # type: ignore[assignment]
    canvas, face = _tom_hanks_face(scale=4.0)
    output = swapper.swap(canvas, [face], _identity())
    assert (counter.calls, counter.rows) == (1, 16)
    rows, cols = _box(face, canvas.shape)
    assert psnr(output[rows, cols], canvas[rows, cols]) >= 40.0


def test_pixel_boost_keeps_detail_that_128_loses(identity_options: ModelOptions) -> None:
    """The point of boosting: a large face through the 128 px model loses detail; boosted, it
    does not. (The identity model makes the difference pure resolution.)"""
    canvas, face = _tom_hanks_face(scale=4.0)
    rows, cols = _box(face, canvas.shape)
    values = {}
    for size in (128, 512):
        output = InswapperSwapper(options=identity_options, pixel_boost=size).swap(
            canvas, [face], _identity())
        values[size] = psnr(output[rows, cols], canvas[rows, cols])
    assert values[512] >= values[128] + 5.0, values


def test_pixel_boost_choice_is_checked(identity_options: ModelOptions) -> None:
    with pytest.raises(ConfigError, match=r"Unknown pixel_boost 200\. Choose one of: 128, 256"):
        InswapperSwapper(options=identity_options, pixel_boost=200)


# --- masks: pure ------------------------------------------------------------------------------

def test_refine_mask_grows_shrinks_and_feathers_inward() -> None:
    square = np.zeros((256, 256), np.float32)
    square[64:192, 64:192] = 1.0
    grown = refine_mask(square, padding=0.05, blur=0.0)  # 13 px
    shrunk = refine_mask(square, padding=-0.05, blur=0.0)
    assert grown[64 - 12, 128] == 1.0 and grown[64 - 15, 128] == 0.0
    assert shrunk[64 + 12, 128] == 0.0 and shrunk[64 + 15, 128] == 1.0
    soft = refine_mask(square, padding=0.0, blur=0.25)
    assert soft[60, 128] == 0.0  # Nothing leaks outside the region ...
    assert 0.0 < soft[70, 128] < 1.0 and soft[128, 128] == 1.0  # ... the band lies inside.
    with pytest.raises(ConfigError, match=r"padding=0.5: must be in \[-0.3, 0.3\]"):
        refine_mask(square, padding=0.5, blur=0.0)


def test_area_masks_cover_their_landmarks() -> None:
    size = 256
    landmarks = fm.synthetic_landmarks_68(arcface_template(size))
    mouth = build_area_mask(landmarks, size, ("mouth",), blur=0.0)
    upper = build_area_mask(landmarks, size, ("upper-face",), blur=0.0)
    centre = np.rint(landmarks[48:60].mean(axis=0)).astype(int)
    eye = np.rint(landmarks[36:42].mean(axis=0)).astype(int)
    assert mouth[centre[1], centre[0]] == 1.0 and mouth[eye[1], eye[0]] == 0.0
    assert upper[eye[1], eye[0]] == 1.0 and upper[centre[1], centre[0]] == 0.0
    both = build_area_mask(landmarks, size, ("upper-face", "mouth"), blur=0.0)
    assert both.sum() >= max(mouth.sum(), upper.sum())
    with pytest.raises(ConfigError, match="Unknown mask area 'chin'"):
        build_area_mask(landmarks, size, ("chin",))


@pytest.mark.parametrize("with_landmarks", [False, True])
def test_mouth_mask_keeps_the_mouth_and_nothing_else(with_landmarks: bool) -> None:
    size = 256
    template = arcface_template(size)
    landmarks = fm.synthetic_landmarks_68(template) if with_landmarks else None
    mask = build_mouth_mask(size, landmarks)
    for corner in template[3:5]:
        x, y = np.rint(corner).astype(int)
        assert mask[y, x] == 0.0  # Lips fully kept (padding covers the corners).
    for point in template[:3]:
        x, y = np.rint(point).astype(int)
        assert mask[y, x] > 0.99  # Eyes and nose swapped (the feather ends before them).


def test_crop_mask_is_the_per_pixel_minimum() -> None:
    size = 128
    box = build_face_mask(size)
    occlusion = np.ones((size, size), np.float32)
    occlusion[:, :40] = 0.0
    region = np.ones((size, size), np.float32)
    region[90:, :] = 0.0
    recipe = MaskRecipe(types=("box", "occlusion", "region"), occlusion_blur=0.0,
                        region_blur=0.0)
    combined = build_crop_mask(recipe, box, occlusion=occlusion, region=region)
    np.testing.assert_array_equal(combined, np.minimum(np.minimum(box, occlusion), region))
    np.testing.assert_array_equal(combine_masks([box]), box)
    with pytest.raises(ValueError, match="no occluder output"):
        build_crop_mask(recipe, box, region=region)
    with pytest.raises(ConfigError, match="Unknown mask 'hair'"):
        MaskRecipe(types=("box", "hair"))


# --- mask and landmark models on fixtures -----------------------------------------------------

def test_occluder_many_is_the_minimum_of_three(tmp_path: Path) -> None:
    options = _options(tmp_path, xseg_1=fm.build_xseg_fixture(), xseg_2=fm.build_xseg_fixture(),
                       xseg_3=fm.build_xseg_fixture())
    assert occluder_model_names("many") == ("xseg_1", "xseg_2", "xseg_3")
    occluder = FaceOccluder("many", options=options)
    assert len(occluder.runners) == 3
    crop = np.full((512, 512, 3), 180, np.uint8)
    crop[300:, 100:400] = 0  # A dark hand over the chin.
    mask = occluder.mask(crop)
    assert mask.shape == (512, 512)
    assert mask[100, 256] > 0.99 and mask[420, 256] < 0.01
    with pytest.raises(ConfigError, match="Unknown occluder 'xseg_9'"):
        occluder_model_names("xseg_9")


def test_parser_selects_regions_by_class(tmp_path: Path) -> None:
    options = _options(tmp_path, bisenet_resnet_34=fm.build_bisenet_fixture())
    crop = np.zeros((256, 256, 3), np.uint8)
    crop[:, :128] = (40, 40, 230)   # Red (BGR): skin for the fixture.
    crop[:, 128:] = (230, 40, 40)   # Blue: hair.
    skin = FaceParser(regions=("skin",), options=options).mask(crop)
    assert skin[128, 20] == 1.0 and skin[128, 230] == 0.0
    lips = FaceParser(regions=("lips",), options=options).mask(crop)
    assert lips.max() == 0.0  # No pixel parses as lips.
    assert region_classes(("lips", "brows")) == (2, 3, 12, 13)
    with pytest.raises(ConfigError, match="Unknown mask region 'beard'"):
        region_classes(("beard",))


def _landmark_setup(tmp_path: Path) -> tuple[ModelOptions, np.ndarray, Face, np.ndarray]:
    """A BlazeFace-layout face and a 2DFAN4 fixture whose constant output, mapped back through
    that face's crop, is a known set of 68 frame points."""
    image = astronaut_bgr()
    face = blazeface("back").detect(image)[0]
    assert face.layout == "blazeface6"
    # The 68 points the fixture will report: a synthetic face on the detector's eye line.
    eyes = face.keypoints[:2].astype(np.float64)
    eye_distance = float(np.linalg.norm(eyes[1] - eyes[0]))
    template = ARCFACE_TEMPLATE_112 * (eye_distance / 35.2372)
    template += eyes[0] - template[0]
    expected = fm.synthetic_landmarks_68(template)
    to_crop = landmark_crop_matrix(face)
    points_64 = np.concatenate([(expected @ to_crop[:, :2].T + to_crop[:, 2]) / 4.0,
                                np.ones((68, 1))], axis=1)
    options = _options(tmp_path, **{"2dfan4": fm.build_landmark_fixture(points_64)},
                       inswapper_128=fx.build_colour_swapper())
    return options, image, face, expected


def test_landmarker_maps_points_back_and_refits_blazeface(tmp_path: Path) -> None:
    options, image, face, expected = _landmark_setup(tmp_path)
    landmarker = FaceLandmarker68(options=options)
    landmarks, score = landmarker.detect(image, face)
    np.testing.assert_allclose(landmarks, expected, atol=1e-3)
    assert score == pytest.approx(1.0)  # Peak 0.9 maps to full confidence.
    refined, used = landmarker.refine(image, face)
    assert used is not None and refined.layout == "arcface5"
    np.testing.assert_allclose(refined.keypoints, landmarks_5_from_68(expected), atol=1e-3)
    assert refined.pose is not None and abs(refined.pose[0]) < 10  # Synthetic face: frontal.
    np.testing.assert_array_equal(refined.bbox, face.bbox)


def test_uncertain_landmarks_keep_the_detector_points(tmp_path: Path) -> None:
    _, image, face, _ = _landmark_setup(tmp_path / "a")
    options = _options(tmp_path / "b", **{"2dfan4": fm.build_landmark_fixture(
        np.zeros((68, 3)), peak=0.2)})
    refined, used = FaceLandmarker68(options=options).refine(image, face)
    assert used is None and refined is face


def test_mouth_mask_keeps_the_target_mouth_in_a_swap(tmp_path: Path) -> None:
    """Colour swapper (flat colour face) with box + mouth masks and 68 landmarks: the mouth
    keeps the target's pixels, the cheeks and eyes take the swapped colour."""
    options, image, face, expected = _landmark_setup(tmp_path)
    swapper = InswapperSwapper(options=options, masks=MaskRecipe(types=("box", "mouth")),
                               landmarker="2dfan4")
    output = swapper.swap(image, [face], _identity())
    mouth = np.rint(expected[48:60].mean(axis=0)).astype(int)
    nose = np.rint(expected[30]).astype(int)
    patch = (slice(mouth[1] - 1, mouth[1] + 2), slice(mouth[0] - 1, mouth[0] + 2))
    np.testing.assert_array_equal(output[patch], image[patch])
    assert np.abs(output[nose[1], nose[0]].astype(int) - image[nose[1], nose[0]]).max() > 20
    plain = InswapperSwapper(options=options).swap(image, [face], _identity())
    assert np.abs(plain[patch].astype(int) - image[patch]).max() > 20  # Box alone: swapped.


def test_occlusion_keeps_what_covers_the_face(tmp_path: Path) -> None:
    options = _options(tmp_path, inswapper_128=fx.build_colour_swapper(),
                       xseg_1=fm.build_xseg_fixture())
    image = astronaut_bgr()
    face = blazeface("back").detect(image)[0]
    nose = np.rint(face.keypoints[2]).astype(int)
    covered = image.copy()
    covered[nose[1] - 12:nose[1] + 12, nose[0] - 12:nose[0] + 12] = 0  # A dark finger.
    swapper = InswapperSwapper(options=options, masks=MaskRecipe(
        types=("box", "occlusion"), occlusion_blur=0.05))
    output = swapper.swap(covered, [face], _identity())
    finger = (slice(nose[1] - 4, nose[1] + 4), slice(nose[0] - 4, nose[0] + 4))
    np.testing.assert_array_equal(output[finger], covered[finger])
    cheek = np.rint(face.keypoints[0] + (0, 25)).astype(int)
    assert np.abs(output[cheek[1], cheek[0]].astype(int) - covered[cheek[1], cheek[0]]).max() > 20


def test_area_mask_needs_a_landmarker(identity_options: ModelOptions) -> None:
    with pytest.raises(ConfigError, match=r"swapper\.landmarker=2dfan4"):
        InswapperSwapper(options=identity_options, masks=MaskRecipe(types=("box", "area")))
