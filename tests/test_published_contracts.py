"""The face-model contracts fusionray's tables hold, pinned to the values their publisher's code
uses (FaceFusion 3.8: face_swapper, face_enhancer, face_masker, face_landmarker, face_helper,
pixel_boost, choices).

The contract-faithful fixtures in `tests/face_model_fixtures.py` are built from fusionray's own
tables, so a wrong fact there would be copied into the fixture and pass every round trip. These
literals are the independent statement: each was read from the publisher's model tables, and a
change to a table must change them too, on the same evidence.
"""

from __future__ import annotations

import numpy as np
import pytest

from fusionray.faces.align import WARP_TEMPLATES
from fusionray.faces.enhance import ENHANCER_CONTRACTS
from fusionray.faces.landmarks68 import BOX_SIDE, CROP_SIZE, HEATMAP_SIZE
from fusionray.faces.mask import FACE_MASK_AREAS
from fusionray.faces.occlusion import OCCLUDER_CHOICES
from fusionray.faces.parser import FACE_REGIONS
from fusionray.models.catalog import MODELS, UrlSource
from fusionray.swap.learned import SWAPPER_CONTRACTS
from fusionray.swap.pixel_boost import PIXEL_BOOST_SIZES, implode_pixel_boost

HALF, IMAGENET_MEAN, IMAGENET_STD = (0.5,) * 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ZERO, ONE = (0.0,) * 3, (1.0,) * 3

# name: (template, size, mean, std, source, output de-normalised, converter, source image
# template and size). Source kinds: "embedding_norm" (hyperswap: the normalised ArcFace
# embedding), "converted" (ghost: the converter's output as is), "converted_norm" (simswap: the
# converter's output, normalised), "frame" (blendswap, uniface: an aligned source face, RGB/255).
# De-normalised output: ghost, hyperswap and uniface (× std + mean); the rest are read as [0, 1].
PUBLISHED_SWAPPERS = {
    **{f"hyperswap_{v}_256": ("arcface_128", 256, HALF, HALF, "embedding_norm", True, None,
                              None, None) for v in ("1a", "1b", "1c")},
    "simswap_256": ("arcface_112_v1", 256, IMAGENET_MEAN, IMAGENET_STD, "converted_norm", False,
                    "crossface_simswap", None, None),
    "simswap_unofficial_512": ("arcface_112_v1", 512, ZERO, ONE, "converted_norm", False,
                               "crossface_simswap", None, None),
    **{f"ghost_{v}_256": ("arcface_112_v1", 256, HALF, HALF, "converted", True,
                          "crossface_ghost", None, None) for v in ("1", "2", "3")},
    "blendswap_256": ("ffhq_512", 256, ZERO, ONE, "frame", False, None, "arcface_112_v2", 112),
    "uniface_256": ("ffhq_512", 256, HALF, HALF, "frame", True, None, "ffhq_512", 256),
}

# name: (template, size); every enhancer is fed (RGB / 255 − 0.5) / 0.5 and read in [−1, 1].
PUBLISHED_ENHANCERS = {
    "codeformer": ("ffhq_512", 512), "gfpgan_1.2": ("ffhq_512", 512),
    "gfpgan_1.3": ("ffhq_512", 512), "gfpgan_1.4": ("ffhq_512", 512),
    "gpen_bfr_256": ("arcface_128", 256), "gpen_bfr_512": ("ffhq_512", 512),
    "gpen_bfr_1024": ("ffhq_512", 1024), "restoreformer_plus_plus": ("ffhq_512", 512),
}

# Five-point templates as fractions of the crop side (FaceFusion's WARP_TEMPLATE_SET).
PUBLISHED_TEMPLATES = {
    "arcface_112_v1": [[0.35473214, 0.45658929], [0.64526786, 0.45658929],
                       [0.50000000, 0.61154464], [0.37913393, 0.77687500],
                       [0.62086607, 0.77687500]],
    "arcface_112_v2": [[0.34191607, 0.46157411], [0.65653393, 0.45983393],
                       [0.50022500, 0.64050536], [0.37097589, 0.82469196],
                       [0.63151696, 0.82325089]],
    "arcface_128": [[0.36167656, 0.40387734], [0.63696719, 0.40235469],
                    [0.50019687, 0.56044219], [0.38710391, 0.72160547],
                    [0.61507734, 0.72034453]],
    "ffhq_512": [[0.37691676, 0.46864664], [0.62285697, 0.46912813],
                 [0.50123859, 0.61331904], [0.39308822, 0.72541100],
                 [0.61150205, 0.72490465]],
}

# 68-point indices whose convex hull is each area mask (FaceFusion's face_mask_area_set).
PUBLISHED_MASK_AREAS = {
    "upper-face": (0, 1, 2, 31, 32, 33, 34, 35, 14, 15, 16, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                   17),
    "lower-face": (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 35, 34, 33, 32, 31),
    "mouth": tuple(range(48, 68)),
}

# Release of FaceFusion's model assets each file is published in.
PUBLISHED_RELEASES = {
    "xseg_1": "3.1.0", "xseg_2": "3.1.0", "xseg_3": "3.2.0", "bisenet_resnet_18": "3.1.0",
    "bisenet_resnet_34": "3.0.0", "2dfan4": "3.0.0", "crossface_simswap": "3.4.0",
    "crossface_ghost": "3.4.0", "hyperswap_1a_256": "3.3.0", "hyperswap_1b_256": "3.3.0",
    "hyperswap_1c_256": "3.3.0", "simswap_256": "3.0.0", "simswap_unofficial_512": "3.0.0",
    "ghost_1_256": "3.0.0", "ghost_2_256": "3.0.0", "ghost_3_256": "3.0.0",
    "blendswap_256": "3.0.0", "uniface_256": "3.0.0", "codeformer": "3.0.0",
    "gfpgan_1.2": "3.0.0", "gfpgan_1.3": "3.0.0", "gpen_bfr_256": "3.0.0",
    "gpen_bfr_512": "3.0.0", "gpen_bfr_1024": "3.0.0", "restoreformer_plus_plus": "3.0.0",
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_SWAPPERS))
def test_swapper_contract_is_the_published_one(name: str) -> None:
    contract = SWAPPER_CONTRACTS[name]
    actual = (contract.template, contract.size, contract.mean, contract.std, contract.source,
              contract.output_normalised, contract.converter, contract.source_template,
              contract.source_size)
    assert actual == PUBLISHED_SWAPPERS[name]
    assert set(SWAPPER_CONTRACTS) == set(PUBLISHED_SWAPPERS)


def test_enhancer_contracts_are_the_published_ones() -> None:
    assert {name: (c.template, c.size) for name, c in ENHANCER_CONTRACTS.items()} == \
        PUBLISHED_ENHANCERS
    assert [name for name, c in ENHANCER_CONTRACTS.items() if c.fidelity_input] == ["codeformer"]
    weight = MODELS["codeformer"].inputs[1]
    assert (weight.name, weight.shape, weight.dtype) == ("weight", (1,), "float64")


def test_templates_are_the_published_ones() -> None:
    for name, points in PUBLISHED_TEMPLATES.items():
        np.testing.assert_array_equal(WARP_TEMPLATES[name], np.array(points))


def test_mask_and_landmark_facts_are_the_published_ones() -> None:
    assert FACE_MASK_AREAS == PUBLISHED_MASK_AREAS
    assert FACE_REGIONS == {"skin": 1, "left-eyebrow": 2, "right-eyebrow": 3, "left-eye": 4,
                            "right-eye": 5, "glasses": 6, "nose": 10, "mouth": 11,
                            "upper-lip": 12, "lower-lip": 13}
    assert OCCLUDER_CHOICES == ("xseg_1", "xseg_2", "xseg_3", "many")
    for name in ("xseg_1", "xseg_2", "xseg_3"):
        spec = MODELS[name]
        assert (spec.inputs[0].name, spec.inputs[0].shape[1:]) == ("input", (256, 256, 3))
    for name in ("bisenet_resnet_18", "bisenet_resnet_34"):
        spec = MODELS[name]
        assert (spec.inputs[0].shape[1:], spec.outputs[0].shape[1:]) == ((3, 512, 512),
                                                                         (19, 512, 512))
    # 2DFAN4: a 256 px crop with the box's longer side at 195 px; points in 64 px heatmap units.
    assert (CROP_SIZE, BOX_SIDE, HEATMAP_SIZE) == (256, 195.0, 64)


@pytest.mark.parametrize("name", sorted(PUBLISHED_RELEASES))
def test_face_models_come_from_their_published_release(name: str) -> None:
    urls = [source.url for source in MODELS[name].sources if isinstance(source, UrlSource)]
    assert urls and all(f"models-{PUBLISHED_RELEASES[name]}/" in url and
                        url.endswith(f"/{name}.onnx") for url in urls)


def test_pixel_boost_is_the_published_space_to_depth() -> None:
    """FaceFusion's implode: reshape (M, k, M, k, 3), axes (1, 3, 0, 2, 4), k² × (M, M, 3);
    the sizes are its inswapper choices."""
    assert PIXEL_BOOST_SIZES == (128, 256, 384, 512, 768, 1024)
    crop = np.arange(12 * 12 * 3).reshape(12, 12, 3)
    published = crop.reshape(4, 3, 4, 3, 3).transpose(1, 3, 0, 2, 4).reshape(9, 4, 4, 3)
    np.testing.assert_array_equal(implode_pixel_boost(crop, 3), published)
