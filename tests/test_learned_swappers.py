"""The table-driven swappers (hyperswap, simswap, ghost, blendswap, uniface) on fixtures with
their exact contracts: each gives the face back through an identity model, and colour models
prove how the source input is prepared (normalisation, converter, image) and weighted."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fusionray.errors import ConfigError
from fusionray.faces.align import ARCFACE_TEMPLATE_112
from fusionray.models.catalog import get_model_spec
from fusionray.models.loader import ModelOptions
from fusionray.swap.base import SourceIdentity
from fusionray.swap.learned import (
    LEARNED_SWAPPERS,
    SWAPPER_CONTRACTS,
    LearnedSwapper,
    balance_weight,
    template_matrix,
)
from fusionray.types import Face
from tests import face_model_fixtures as fm
from tests import onnx_fixtures as fx
from tests.faces_fixtures import psnr, tom_hanks_bgr


def _options(folder: Path, **models: bytes) -> ModelOptions:
    return ModelOptions(providers=("cpu",), cache_dir=fx.import_fixtures(folder, **models),
                        shared_dirs=(), offline=True)


def _models(name: str, build: object) -> dict[str, bytes]:
    contract = SWAPPER_CONTRACTS[name]
    models = {name: build(contract)}  # type: ignore[operator]
    if contract.converter:
        models[contract.converter] = fm.build_converter_fixture()
    return models


def _unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _face(scale: float) -> tuple[np.ndarray, Face]:
    image = cv2.resize(tom_hanks_bgr(), None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    canvas = np.full((720, 960, 3), 100, np.uint8)
    canvas[40:40 + image.shape[0], 200:200 + image.shape[1]] = image
    keypoints = ARCFACE_TEMPLATE_112 * scale + (200, 40)
    x1, y1 = keypoints.min(axis=0) - 25 * scale
    x2, y2 = keypoints.max(axis=0) + 25 * scale
    return canvas, Face(bbox=np.array([x1, y1, x2, y2]), keypoints=keypoints, score=0.9)


def test_every_contract_is_catalogued_with_its_converter() -> None:
    for name, contract in SWAPPER_CONTRACTS.items():
        spec = get_model_spec(name)
        assert spec.role == "swapper" and spec.input_size == contract.size
        assert [t.name for t in spec.inputs] == ["target", "source"]
        if contract.converter:
            assert get_model_spec(contract.converter).role == "converter"
    assert set(LEARNED_SWAPPERS) == {
        "hyperswap_1a_256", "hyperswap_1b_256", "hyperswap_1c_256", "simswap_256",
        "simswap_unofficial_512", "ghost_1_256", "ghost_2_256", "ghost_3_256", "blendswap_256",
        "uniface_256"}


@pytest.mark.parametrize("name", LEARNED_SWAPPERS)
def test_identity_model_gives_the_face_back(tmp_path: Path, name: str) -> None:
    contract = SWAPPER_CONTRACTS[name]
    swapper = LearnedSwapper(model=name, options=_options(
        tmp_path, **_models(name, fm.build_learned_identity)))
    canvas, face = _face(scale=contract.size / 128)
    source = SourceIdentity(crop=None, crop_size=contract.size, image_count=1,
                            embedding=_unit(1))
    if contract.source == "frame":
        source = swapper.prepare_source([canvas], [Face(
            bbox=face.bbox, keypoints=face.keypoints, score=0.9, embedding=_unit(1))])
    output = swapper.swap(canvas, [face], source)
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    value = psnr(output[y1:y2, x1:x2], canvas[y1:y2, x1:x2])
    assert value >= 40.0, f"{name}: {value:.1f} dB"


def _nose_colour(output: np.ndarray, face: Face) -> np.ndarray:
    x, y = np.rint(face.keypoints[2]).astype(int)
    return output[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3).mean(axis=0)


def _expected(vector: np.ndarray) -> np.ndarray:
    rgb = np.clip(0.5 + fm.LEARNED_COLOUR_SCALE * vector[:3], 0, 1) * 255
    return rgb[::-1]


@pytest.mark.parametrize("name", ["hyperswap_1a_256", "simswap_256", "ghost_1_256"])
def test_source_input_is_prepared_by_the_contract(tmp_path: Path, name: str) -> None:
    contract = SWAPPER_CONTRACTS[name]
    swapper = LearnedSwapper(model=name, options=_options(
        tmp_path, **_models(name, fm.build_learned_colour)))
    canvas, face = _face(scale=2.0)
    embedding = _unit(4)
    source = SourceIdentity(crop=None, crop_size=256, image_count=1, embedding=embedding)
    converted = embedding @ fm.converter_matrix()
    prepared = {"embedding_norm": embedding, "converted": converted,
                "converted_norm": converted / np.linalg.norm(converted)}[contract.source]
    np.testing.assert_allclose(_nose_colour(swapper.swap(canvas, [face], source), face),
                               _expected(prepared), atol=1.5)
    # What a wrong preparation would give is far off (raw embedding for converted models,
    # unnormalised conversion for converted_norm).
    wrong = embedding if contract.source != "embedding_norm" else converted
    assert np.abs(_expected(wrong) - _expected(prepared)).max() > 10


@pytest.mark.parametrize("weight", [0.0, 0.25, 1.0])
def test_weight_balances_source_and_target_identity(tmp_path: Path, weight: float) -> None:
    swapper = LearnedSwapper(model="hyperswap_1a_256", weight=weight, options=_options(
        tmp_path, **_models("hyperswap_1a_256", fm.build_learned_colour)))
    canvas, face = _face(scale=2.0)
    target = _unit(9)
    face = Face(bbox=face.bbox, keypoints=face.keypoints, score=0.9, embedding=target)
    source_embedding = _unit(4)
    source = SourceIdentity(crop=None, crop_size=256, image_count=1, embedding=source_embedding)
    shift = balance_weight(weight)
    assert shift == pytest.approx({0.0: 0.35, 0.25: 0.175, 1.0: -0.35}[weight])
    mixed = source_embedding * (1 - shift) + target * shift
    np.testing.assert_allclose(_nose_colour(swapper.swap(canvas, [face], source), face),
                               _expected(mixed), atol=1.5)


@pytest.mark.parametrize("name", ["blendswap_256", "uniface_256"])
def test_image_source_is_the_aligned_source_face(tmp_path: Path, name: str) -> None:
    contract = SWAPPER_CONTRACTS[name]
    swapper = LearnedSwapper(model=name, options=_options(
        tmp_path, **_models(name, fm.build_learned_colour)))
    canvas, face = _face(scale=2.0)
    face = Face(bbox=face.bbox, keypoints=face.keypoints, score=0.9,
                          embedding=_unit(2))
    source = swapper.prepare_source([canvas], [face])
    size = contract.source_size
    assert source.crop is not None and source.crop.shape == (size, size, 3)
    expected = cv2.warpAffine(canvas, template_matrix(face, contract.source_template, size),
                              (size, size), flags=cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(source.crop, expected)
    colour = _nose_colour(swapper.swap(canvas, [face], source), face)
    np.testing.assert_allclose(colour, expected.reshape(-1, 3).mean(axis=0), atol=1.5)


def test_pixel_boost_on_a_256_model(tmp_path: Path) -> None:
    swapper = LearnedSwapper(model="hyperswap_1b_256", pixel_boost=512, options=_options(
        tmp_path, **_models("hyperswap_1b_256", fm.build_learned_identity)))
    calls = []
    run = swapper.runner.run
    swapper.runner.run = lambda *inputs: calls.append(1) or run(*inputs)  # type: ignore[method-assign]
    canvas, face = _face(scale=4.0)
    source = SourceIdentity(crop=None, crop_size=256, image_count=1, embedding=_unit(1))
    output = swapper.swap(canvas, [face], source)
    assert len(calls) == 4
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    assert psnr(output[y1:y2, x1:x2], canvas[y1:y2, x1:x2]) >= 40.0
    with pytest.raises(ConfigError, match="multiple of the model's 256"):
        LearnedSwapper(model="hyperswap_1b_256", pixel_boost=384, options=swapper.options)


def test_bad_model_and_weight_are_refused(tmp_path: Path) -> None:
    options = _options(tmp_path, **_models("ghost_2_256", fm.build_learned_identity))
    with pytest.raises(ConfigError, match="Unknown swapper model 'ghost_9_256'"):
        LearnedSwapper(model="ghost_9_256", options=options)
    with pytest.raises(ConfigError, match=r"weight=1\.5: must be in \[0, 1\]"):
        LearnedSwapper(model="ghost_2_256", weight=1.5, options=options)
