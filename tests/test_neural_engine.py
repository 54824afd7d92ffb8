"""The neural engine (SCRFD, ArcFace, inswapper, GFPGAN) on contract-faithful test models.

The models come from `tests/onnx_fixtures.py`: exactly the real contracts, trivially known
behaviour. They are imported into a temporary cache with `import_model` (so the contract check
runs) and driven by the real loading, preprocessing, swap and paste-back code on real photos,
with real BlazeFace detections. Nothing here measures swap quality.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import pytest
from insightface.utils.face_align import norm_crop

from fusionray.errors import ConfigError, FaceNotFoundError, ModelError
from fusionray.faces.align import ARCFACE_TEMPLATE_112
from fusionray.faces.embed import ArcFaceEmbedder, average_identity, normalise_embeddings
from fusionray.faces.enhance import FaceEnhancer
from fusionray.faces.scrfd import SCRFDDetector, letterbox
from fusionray.models.loader import ModelOptions, ModelRunner
from fusionray.swap.base import SourceIdentity
from fusionray.swap.inswapper import InswapperSwapper, load_emap, source_latent
from fusionray.types import Face, FrameBGR
from tests import onnx_fixtures as fx
from tests.faces_fixtures import astronaut_bgr, blazeface, psnr, tom_hanks_bgr
from tests.tolerances import assert_float32_close, float32_atol


def _cache(folder: Path, **models: bytes) -> ModelOptions:
    return ModelOptions(providers=("cpu",), cache_dir=fx.import_fixtures(folder, **models),
                        shared_dirs=(), offline=True)


@pytest.fixture(scope="module")
def identity_options(tmp_path_factory: pytest.TempPathFactory) -> ModelOptions:
    return _cache(tmp_path_factory.mktemp("identity"), inswapper_128=fx.build_identity_swapper(),
                  arcface_w600k_r50=fx.build_arcface_fixture(),
                  scrfd_10g=fx.build_scrfd_fixture(),
                  **{"gfpgan_1.4": fx.build_identity_enhancer()})


ARCFACE_TERMS = fx.ARCFACE_POOL**2 + 3 * (112 // fx.ARCFACE_POOL) ** 2
"""Longest float32 reduction behind an ArcFace fixture component: the pool, then the
projection over the pooled pixels."""


def _unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _identity(seed: int = 1) -> SourceIdentity:
    return SourceIdentity(crop=None, crop_size=128, image_count=1, embedding=_unit(seed))


def _tom_hanks_face(scale: int = 1) -> tuple[np.ndarray, Face]:
    """insightface's Tom Hanks photo is already ArcFace-aligned: its keypoints ARE the
    template (times `scale`), placed on a grey canvas."""
    image = cv2.resize(tom_hanks_bgr(), None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    canvas = np.full((480, 640, 3), 100, np.uint8)
    canvas[60:60 + image.shape[0], 200:200 + image.shape[1]] = image
    keypoints = ARCFACE_TEMPLATE_112 * scale + (200, 60)
    x1, y1 = keypoints.min(axis=0) - 30
    x2, y2 = keypoints.max(axis=0) + 30
    return canvas, Face(bbox=np.array([x1, y1, x2, y2]), keypoints=keypoints.astype(np.float32),
                        score=0.9)


def _face_box(face: Face, shape: tuple[int, ...]) -> tuple[slice, slice]:
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    return slice(max(y1, 0), min(y2, shape[0])), slice(max(x1, 0), min(x2, shape[1]))


@pytest.mark.parametrize("blend, colour_match", [("alpha", False), ("laplacian", True)])
def test_identity_swapper_round_trip(identity_options: ModelOptions, blend: str,
                                     colour_match: bool) -> None:
    """Align, swap (identity) and paste back: the face region comes back at >= 40 dB.

    The astronaut is scaled so her face is the size it has in the 128 px crop (eye distance
    about 35 px). A face larger than that is downsampled into the crop, and the model's 128 px
    resolution itself then limits the round trip (about 38 dB at her full-size 45 px eye
    distance): that is inswapper's resolution, not an alignment error.
    """
    swapper = InswapperSwapper(options=identity_options, blend=blend, colour_match=colour_match)
    # A uint8 BGR image resized stays uint8 BGR.
    image = cast(FrameBGR, cv2.resize(astronaut_bgr(), None, fx=0.75, fy=0.75,
                                      interpolation=cv2.INTER_AREA))
    faces = blazeface("back").detect(image)
    assert faces and faces[0].layout == "blazeface6"
    output = swapper.swap(image, faces[:1], _identity())
    rows, cols = _face_box(faces[0], image.shape)
    value = psnr(output[rows, cols], image[rows, cols])
    assert value >= 40.0, f"identity swapper PSNR {value:.1f} dB over the face box"
    assert np.array_equal(output[:rows.start], image[:rows.start])  # Outside: untouched.
    canvas, face = _tom_hanks_face()
    output = swapper.swap(canvas, [face], _identity())
    rows, cols = _face_box(face, canvas.shape)
    assert psnr(output[rows, cols], canvas[rows, cols]) >= 40.0


def test_colour_swapper_proves_emap_then_l2(tmp_path: Path) -> None:
    options = _cache(tmp_path, inswapper_128=fx.build_colour_swapper())
    swapper = InswapperSwapper(options=options)
    np.testing.assert_array_equal(swapper.emap, fx.fixture_emap())  # The LAST initializer.
    embedding = _unit(7)
    latent = embedding @ fx.fixture_emap()

    def colour(vector: np.ndarray) -> np.ndarray:
        rgb = np.clip(0.5 + fx.COLOUR_SCALE * vector[:3], 0, 1) * 255
        return rgb[::-1]  # BGR

    expected = colour(latent / np.linalg.norm(latent))
    image = astronaut_bgr()
    face = blazeface("back").detect(image)[0]
    output = swapper.swap(image, [face], _identity_with(embedding))
    nose = np.rint(face.keypoints[2]).astype(int)
    patch = output[nose[1] - 2:nose[1] + 3, nose[0] - 2:nose[0] + 3].reshape(-1, 3)
    np.testing.assert_allclose(patch.mean(axis=0), expected, atol=1.5)
    # The alternatives a wrong implementation would produce are far off.
    for wrong in (latent, embedding):  # No L2 normalisation; no emap.
        assert np.abs(colour(wrong) - expected).max() > 15
    # Each latent component is a 512-term float32 dot product: compare at that error scale
    # (relative to the vector, not per component), which still tells the wrong formulas apart.
    normed_latent = latent / np.linalg.norm(latent)
    assert_float32_close(source_latent(embedding, swapper.emap)[0], normed_latent, terms=512)
    for wrong in (latent, embedding):
        assert np.abs(wrong - normed_latent).max() > 100 * float32_atol(normed_latent, terms=512)


def _identity_with(embedding: np.ndarray) -> SourceIdentity:
    return SourceIdentity(crop=None, crop_size=128, image_count=1, embedding=embedding)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_arcface_preprocessing_matches_insightface(identity_options: ModelOptions) -> None:
    embedder = ArcFaceEmbedder(options=identity_options)
    assert embedder.runner.batchable
    canvas, face = _tom_hanks_face(scale=2)
    # The photo is grey; tint it so a channel-order mistake would show.
    canvas = np.clip(canvas * np.array([0.55, 0.8, 1.0]), 0, 255).astype(np.uint8)
    ours = embedder.embed(canvas, [face])[0]
    # Independent reference: insightface's own alignment, then the contract's normalisation.
    aligned = norm_crop(canvas, face.keypoints, 112)
    blob = ((aligned[..., ::-1].astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    reference = normalise_embeddings(fx.arcface_fixture_reference(blob))[0]
    assert float(ours @ reference) > 0.999
    bgr_blob = ((aligned.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    wrong = normalise_embeddings(fx.arcface_fixture_reference(bgr_blob))[0]
    assert float(ours @ wrong) < 0.99
    assert abs(float(np.linalg.norm(ours)) - 1.0) < 1e-5
    # One batched call equals separate calls.
    other = replace(face, keypoints=face.keypoints + 3.0)
    both = embedder.embed(canvas, [face, other])
    assert_float32_close(both[1], embedder.embed(canvas, [other])[0], terms=ARCFACE_TERMS)


def test_several_sources_are_averaged_as_normalised_embeddings(
    identity_options: ModelOptions,
) -> None:
    swapper = InswapperSwapper(options=identity_options)
    canvas, face = _tom_hanks_face()
    image = astronaut_bgr()
    astronaut = blazeface("back").detect(image)[0]
    identity = swapper.prepare_source([canvas, image], [face, astronaut])
    first = swapper.embedder.embed(canvas, [face])[0]
    second = swapper.embedder.embed(image, [astronaut])[0]
    mean = (first + second) / 2
    assert identity.embedding is not None
    assert_float32_close(identity.embedding, mean / np.linalg.norm(mean), terms=ARCFACE_TERMS)
    assert identity.image_count == 2 and identity.crop is None
    assert_float32_close(average_identity([first * 5, second]), identity.embedding,
                         terms=ARCFACE_TERMS)
    with pytest.raises(FaceNotFoundError):
        swapper.prepare_source([], [])


def test_scrfd_decoding_and_letterbox(identity_options: ModelOptions) -> None:
    detector = SCRFDDetector(input_size=640, **options_cache(identity_options))  # type: ignore[arg-type]
    # 320 × 240 frame -> letterboxed at scale 2 into 640 × 480 of the 640 input, padded below.
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[32:48, 48:64] = 255  # One stride-32 cell of the input: column 3, row 2.
    blob, scale = letterbox(frame, 640)
    assert scale == 2.0 and blob.shape == (1, 3, 640, 640)
    assert np.allclose(blob[0, :, 480:], -127.5 / 128)  # Padding is black, at the bottom.
    faces = detector.detect(frame)
    assert len(faces) == 1, faces  # Two anchors of one cell merged by NMS.
    anchor = np.array([96.0, 64.0])  # Top-left corner of the cell, input pixels.
    half = fx.SCRFD_BOX_HALF * 32
    # Pixels; float32 decoding of values up to 160 px (1 ulp = 1.5e-5), a stride is 16 px here.
    np.testing.assert_allclose(faces[0].bbox, np.r_[anchor - half, anchor + half] / 2, atol=1e-2)
    np.testing.assert_allclose(faces[0].keypoints, (anchor + fx.SCRFD_KPS * 32) / 2, atol=1e-2)
    assert faces[0].layout == "arcface5" and faces[0].score > 0.99
    assert detector.detect(np.zeros((240, 320, 3), np.uint8)) == []
    # A real photo through the real path (512 px, letterboxed at 1.25): the bright spacesuit
    # fires stride-32 cells; each face left after NMS is a fixture box on the cell grid.
    photo_faces = detector.detect(astronaut_bgr())
    assert photo_faces
    for face in photo_faces:
        cells = (face.bbox[:2] * 1.25 + half) / 32  # Anchor corner, in stride-32 cells.
        np.testing.assert_allclose(cells, np.rint(cells), atol=1e-3)
        np.testing.assert_allclose(face.bbox[2:] - face.bbox[:2], 2 * half / 1.25, atol=1e-2)
        assert face.score >= 0.5


def options_cache(options: ModelOptions) -> dict[str, object]:
    return {"cache_dir": options.cache_dir, "shared_dirs": (), "offline": True,
            "providers": ("cpu",)}


def test_enhancer_blend(identity_options: ModelOptions, tmp_path: Path) -> None:
    image = astronaut_bgr()
    face = blazeface("back").detect(image)[0]
    rows, cols = _face_box(face, image.shape)
    identity = image.copy()
    FaceEnhancer(blend=1.0, options=identity_options).enhance(identity, face)
    assert psnr(identity[rows, cols], image[rows, cols]) >= 35.0
    invert_options = _cache(tmp_path, **{"gfpgan_1.4": fx.build_invert_enhancer()})
    half, off = image.copy(), image.copy()
    FaceEnhancer(blend=0.5, options=invert_options).enhance(half, face)
    FaceEnhancer(blend=0.0, options=invert_options).enhance(off, face)
    assert np.array_equal(off, image)
    centre = np.rint(face.keypoints[2]).astype(int)
    # Half original, half its negative: mid grey at the face centre.
    np.testing.assert_allclose(half[centre[1], centre[0]].astype(float), 127.5, atol=3)
    swapper = InswapperSwapper(options=identity_options, enhancer="gfpgan_1.4",
                               enhancer_blend=1.0, soft_mask=True)
    output = swapper.swap(image, [face], _identity())
    assert psnr(output[rows, cols], image[rows, cols]) >= 35.0


def test_soft_mask_scales_by_confidence(tmp_path: Path) -> None:
    options = _cache(tmp_path, inswapper_128=fx.build_colour_swapper())
    image = astronaut_bgr()
    face = blazeface("back").detect(image)[0]
    nose = np.rint(face.keypoints[2]).astype(int)
    full = InswapperSwapper(options=options).swap(image, [face], _identity())
    soft = InswapperSwapper(options=options, soft_mask=True).swap(
        image, [replace(face, score=0.5)], _identity())
    mix = (full[nose[1], nose[0]].astype(float) + image[nose[1], nose[0]]) / 2
    np.testing.assert_allclose(soft[nose[1], nose[0]], mix, atol=1.5)


@pytest.mark.parametrize("builder, expected", [
    (lambda: fx.build_identity_swapper(swap_inputs=True),
     r"inswapper_128\.onnx\) is not inswapper_128: its inputs are \[source \[1, 512\] float32, "
     r"target \[1, 3, 128, 128\] float32\], expected \[target"),
    (fx.build_wrong_shape_swapper,
     r"is not inswapper_128: its inputs are \[target \[1, 3, 256, 256\]"),
    (lambda: fx.build_identity_swapper()[:4000], r"Cannot load model .*inswapper_128\.onnx"),
    (fx.build_arcface_fixture, r"is not inswapper_128: its inputs are \[input\.1"),
])
def test_wrong_model_files_are_rejected(tmp_path: Path, builder: object, expected: str) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "inswapper_128.onnx").write_bytes(builder())  # type: ignore[operator]
    # Allowed as unverified (none of these is the published file): the contract still holds.
    options = ModelOptions(cache_dir=cache, shared_dirs=(), offline=True, allow_unverified=True)
    with pytest.raises(ModelError, match=expected):
        InswapperSwapper(options=options)


def test_emap_must_be_the_last_initializer(tmp_path: Path) -> None:
    import onnx

    model = onnx.load_from_string(fx.build_colour_swapper())
    emap = model.graph.initializer.pop()
    model.graph.initializer.insert(0, emap)  # Still there, but not last.
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match=r"m\.onnx: expected the 512x512 emap as the last "
                                         r"initializer, found 'half' with shape \[\]"):
        load_emap(path)


def test_missing_model_offline_and_unknown_provider(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    options = ModelOptions(cache_dir=tmp_path, shared_dirs=(), offline=True)
    with pytest.raises(ModelError, match=r"fusionray models pull inswapper_128.*models import"):
        InswapperSwapper(options=options)
    with pytest.raises(ModelError, match="Unknown model 'inswapper_256'"):
        ModelRunner("inswapper_256", options)
    with pytest.raises(ConfigError, match="Unknown inswapper model 'x'"):
        InswapperSwapper(model="x", options=options)


def test_provider_not_installed(identity_options: ModelOptions,
                                caplog: pytest.LogCaptureFixture) -> None:
    strict = replace(identity_options, providers=("openvino",))
    with pytest.raises(ConfigError, match=r"None of the providers \['openvino'\] can run .*"
                                          r"Pick another provider .*cpu"):
        ModelRunner("inswapper_128", strict)
    with caplog.at_level(logging.INFO, logger="fusionray.models.session"):
        runner = ModelRunner("inswapper_128", replace(identity_options,
                                                      providers=("openvino", "cpu")))
    assert runner.provider == "CPUExecutionProvider"
    assert any("OpenVINOExecutionProvider" in r.message for r in caplog.records)
