"""The table-driven swappers (hyperswap, simswap, ghost, blendswap, uniface) on fixtures with
their exact contracts: each gives the face back through an identity model, and colour models
prove how the source input is prepared (normalisation, converter, image) and weighted."""

from __future__ import annotations

from collections.abc import Sequence
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
    return canvas, Face(bbox=np.array([x1, y1, x2, y2]), keypoints=keypoints.astype(np.float32),
                        score=0.9)


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
    assert contract.source_template is not None and size is not None  # a frame source has both
    assert source.crop is not None and source.crop.shape == (size, size, 3)
    expected = cv2.warpAffine(canvas, template_matrix(face, contract.source_template, size),
                              (size, size), flags=cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(source.crop, expected)
    colour = _nose_colour(swapper.swap(canvas, [face], source), face)
    np.testing.assert_allclose(colour, expected.reshape(-1, 3).mean(axis=0), atol=1.5)


def test_pixel_boost_on_a_256_model(tmp_path: Path) -> None:
    swapper = LearnedSwapper(model="hyperswap_1b_256", pixel_boost=512, max_batch=1,
                             options=_options(tmp_path, **_models("hyperswap_1b_256",
                                                                  fm.build_learned_identity)))
    calls: list[int] = []
    run = swapper.runner.run

    def counting_run(*inputs: np.ndarray, outputs: Sequence[int] | None = None
                     ) -> list[np.ndarray]:
        calls.append(1)
        return run(*inputs, outputs=outputs)

    swapper.runner.run = counting_run  # type: ignore[method-assign]
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
    # An image-source model has no embedding to mix the target into: refused, not ignored.
    with pytest.raises(ConfigError, match=r"weight=0\.7: must be 0\.5 with blendswap_256"):
        LearnedSwapper(model="blendswap_256", weight=0.7, options=options)


def test_phases_batch_sub_images_of_several_frames(tmp_path: Path) -> None:
    """prepare/forward/paste: every sub-image of every job in calls of max_batch rows, each row
    with its own job's source (the target embeddings differ when weight != 0.5)."""
    swapper = LearnedSwapper(model="hyperswap_1b_256", pixel_boost=512, max_batch=8, weight=0.0,
                             options=_options(tmp_path, **_models("hyperswap_1b_256",
                                                                  fm.build_learned_identity)))
    assert swapper.runner.batchable and swapper.max_batch == 8 and swapper.notes == ()
    canvas, face = _face(scale=4.0)
    frames = [(canvas, [Face(bbox=face.bbox, keypoints=face.keypoints, score=0.9,
                             embedding=_unit(seed))]) for seed in (11, 12, 13)]
    source = SourceIdentity(crop=None, crop_size=256, image_count=1, embedding=_unit(1))
    jobs = [job for frame, faces in frames for job in swapper.prepare(frame, faces, source)]
    assert [(job.boost, None if job.sub_images is None else job.sub_images.shape)
            for job in jobs] == [(2, (4, 256, 256, 3))] * 3
    calls: list[tuple[int, np.ndarray]] = []
    run = swapper.runner.run

    def recording_run(*inputs: np.ndarray, outputs: Sequence[int] | None = None
                      ) -> list[np.ndarray]:
        feeds = dict(zip(swapper.runner.input_names, inputs, strict=True))
        calls.append((feeds["target"].shape[0], feeds["source"].copy()))
        return run(*inputs, outputs=outputs)

    swapper.runner.run = recording_run  # type: ignore[method-assign]
    done = swapper.forward(jobs, source)
    assert [rows for rows, _ in calls] == [8, 4]  # Twelve sub-images of three frames.
    sources = np.concatenate([rows for _, rows in calls])
    for index, job in enumerate(jobs):
        expected = swapper.source_input(source, job.face.embedding)
        np.testing.assert_allclose(sources[index * 4:(index + 1) * 4],
                                   np.repeat(expected, 4, axis=0), rtol=0, atol=1e-6)
        # The identity model gives each row its own target back: nothing was mixed up.
        assert done[index].output is None and done[index].sub_outputs is not None
        np.testing.assert_array_equal(done[index].sub_outputs, job.sub_images)
        np.testing.assert_array_equal(done[index].model_output(), job.crop)
    assert np.abs(sources[0] - sources[4]).max() > 0.01  # The targets' mix differs per job.
    swapper.runner.run = run  # type: ignore[method-assign]
    for (frame, faces), job in zip(frames, done, strict=True):
        np.testing.assert_array_equal(swapper.paste(frame, [job]),
                                      swapper.swap(frame, faces, source))


def test_fixed_batch_learned_graph_stays_at_one_with_a_note(tmp_path: Path) -> None:
    """The colour fixture reshapes to a constant [1, 3, 1, 1]: its batch cannot be freed."""
    swapper = LearnedSwapper(model="hyperswap_1a_256", options=_options(
        tmp_path, **_models("hyperswap_1a_256", fm.build_learned_colour)))
    assert swapper.max_batch == 1 and not swapper.runner.batchable
    assert len(swapper.notes) == 1 and swapper.notes[0].startswith(
        "hyperswap_1a_256: batch stays at 1")
    canvas, face = _face(scale=2.0)
    source = SourceIdentity(crop=None, crop_size=256, image_count=1, embedding=_unit(4))
    jobs = swapper.forward(swapper.prepare(canvas, [face, face], source), source)
    assert [job.output is not None for job in jobs] == [True, True]
    with pytest.raises(ValueError, match=r"needs jobs with outputs .* jobs \[0\] have none"):
        swapper.paste(canvas, swapper.prepare(canvas, [face], source))
