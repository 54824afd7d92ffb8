"""Every table-driven enhancer on fixtures with its exact contract: alignment template and size,
[-1, 1] range, blend, and CodeFormer's float64 fidelity input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusionray.errors import ConfigError
from fusionray.faces.align import WARP_TEMPLATES, warp_template_matrix
from fusionray.faces.enhance import ENHANCER_CONTRACTS, ENHANCER_MODELS, FaceEnhancer
from fusionray.models.catalog import get_model_spec
from fusionray.models.loader import ModelOptions
from tests import face_model_fixtures as fm
from tests import onnx_fixtures as fx
from tests.faces_fixtures import astronaut_bgr, blazeface, psnr


def _options(folder: Path, **models: bytes) -> ModelOptions:
    return ModelOptions(providers=("cpu",), cache_dir=fx.import_fixtures(folder, **models),
                        shared_dirs=(), offline=True)


def test_every_enhancer_is_catalogued_with_its_size() -> None:
    assert set(ENHANCER_MODELS) == {"codeformer", "gfpgan_1.2", "gfpgan_1.3", "gfpgan_1.4",
                                    "gpen_bfr_256", "gpen_bfr_512", "gpen_bfr_1024",
                                    "restoreformer_plus_plus"}
    for name, contract in ENHANCER_CONTRACTS.items():
        spec = get_model_spec(name)
        assert spec.role == "enhancer" and spec.input_size == contract.size
        assert (len(spec.inputs) == 2) == contract.fidelity_input


@pytest.mark.parametrize("name", [n for n in ENHANCER_MODELS if n != "codeformer"])
def test_identity_enhancer_gives_the_face_back_and_blend_mixes(tmp_path: Path,
                                                               name: str) -> None:
    contract = ENHANCER_CONTRACTS[name]
    image = astronaut_bgr()
    face = blazeface("back").detect(image)[0]
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    identity = image.copy()
    FaceEnhancer(model=name, blend=1.0, options=_options(
        tmp_path / "id", **{name: fm.build_enhancer_fixture(contract.size,
                                                           fidelity_input=False)})
                 ).enhance(identity, face)
    assert psnr(identity[y1:y2, x1:x2], image[y1:y2, x1:x2]) >= 35.0
    half = image.copy()
    FaceEnhancer(model=name, blend=0.5, options=_options(
        tmp_path / "neg", **{name: fm.build_enhancer_fixture(contract.size,
                                                            fidelity_input=False, invert=True)})
                 ).enhance(half, face)
    x, y = np.rint(face.keypoints[2]).astype(int)
    np.testing.assert_allclose(half[y, x].astype(float), 127.5, atol=3)


def test_each_enhancer_aligns_to_its_template() -> None:
    face = blazeface("back").detect(astronaut_bgr())[0]
    nose = np.append(face.keypoints[2].astype(np.float64), 1.0)
    for name in ("gpen_bfr_256", "gpen_bfr_1024"):
        contract = ENHANCER_CONTRACTS[name]
        matrix = warp_template_matrix(face, contract.template, contract.size)
        expected = WARP_TEMPLATES[contract.template][2] * contract.size
        assert np.linalg.norm(matrix @ nose - expected) < 0.08 * contract.size


@pytest.mark.parametrize("fidelity", [0.0, 0.5, 1.0])
def test_codeformer_gets_its_fidelity_as_float64(tmp_path: Path, fidelity: float) -> None:
    options = _options(tmp_path, codeformer=fm.build_enhancer_fixture(512, fidelity_input=True))
    image = astronaut_bgr()
    face = blazeface("back").detect(image)[0]
    output = image.copy()
    FaceEnhancer(model="codeformer", blend=1.0, fidelity=fidelity, options=options).enhance(
        output, face)
    x, y = np.rint(face.keypoints[2]).astype(int)
    # The fixture paints 2·weight − 1 in [-1, 1], i.e. weight × 255 in pixels.
    np.testing.assert_allclose(output[y, x].astype(float), fidelity * 255.0, atol=2)


def test_bad_enhancer_options_are_refused(tmp_path: Path) -> None:
    options = _options(tmp_path, codeformer=fm.build_enhancer_fixture(512, fidelity_input=True))
    with pytest.raises(ConfigError, match="Unknown enhancer 'gfpgan_9'"):
        FaceEnhancer(model="gfpgan_9", options=options)
    with pytest.raises(ConfigError, match=r"fidelity=2\.0: must be in \[0, 1\]"):
        FaceEnhancer(model="codeformer", fidelity=2.0, options=options)
