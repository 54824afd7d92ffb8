"""Face-model settings: every preset × engine × mask combination composes (or fails with the
one-line reason), master's learned-engine extras, and config -> engine options -> engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from fusionray.config import RenderConfig, SwapperConfig, register_configs, to_render_config
from fusionray.errors import ConfigError
from fusionray.faces.mask import MaskRecipe
from fusionray.models.loader import ModelOptions
from fusionray.swap.base import SourceIdentity
from fusionray.swap.inswapper import InswapperSwapper
from fusionray.swap.learned import SWAPPER_CONTRACTS, LearnedSwapper
from fusionray.swap.options import (
    face_model_names,
    face_model_options,
    learned_engine_options,
    learned_model_names,
)
from tests import face_model_fixtures as fm
from tests import onnx_fixtures as fx
from tests.faces_fixtures import astronaut_bgr, blazeface, psnr

CONF = Path(__file__).resolve().parents[1] / "conf"
QUALITIES = sorted(p.stem for p in (CONF / "quality").glob("*.yaml"))
ENGINES = sorted(p.stem for p in (CONF / "swapper").glob("*.yaml"))
MASK_SETS = {
    "box": ("[box]", ()),
    "occlusion": ("[box,occlusion]", ()),
    "many_occluders": ("[box,occlusion]", ("swapper.occluder=many",)),
    "region": ("[box,region]", ("swapper.mask_regions=[skin,brows,eyes,nose,lips]",)),
    "occlusion_region": ("[box,occlusion,region]", ()),
    "area": ("[box,area]", ("swapper.landmarker=2dfan4",)),
    "mouth": ("[box,mouth]", ()),
    "all": ("[box,occlusion,region,area,mouth]", ("swapper.landmarker=2dfan4",)),
}

register_configs()


def _compose(*overrides: str) -> RenderConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return to_render_config(cfg)


@pytest.mark.parametrize("masks", sorted(MASK_SETS))
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("quality", QUALITIES)
def test_every_preset_engine_and_mask_set_composes(quality: str, engine: str,
                                                   masks: str) -> None:
    value, extra = MASK_SETS[masks]
    overrides = ["+video=demo", f"quality={quality}", f"swapper={engine}",
                 f"swapper.masks={value}", *extra]
    if engine == "classic" and masks != "box":
        # The classic engine has no model masks; the reason names the key and the fix.
        with pytest.raises(ConfigError, match=r"swapper\.(masks|landmarker)=.*classic engine"):
            _compose(*overrides)
        return
    config = _compose(*overrides)
    assert list(config.swapper.masks) == value.strip("[]").split(",")
    recipe = config.swapper.mask_recipe()
    assert isinstance(recipe, MaskRecipe) and recipe.types == config.swapper.masks
    names = face_model_names(config.swapper)
    assert ("2dfan4" in names) == (config.swapper.landmarker == "2dfan4")
    assert ("xseg_1" in names) == ("occlusion" in config.swapper.masks)


@pytest.mark.parametrize("quality", QUALITIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_master_with_the_learned_engine_boosts_masks_and_enhances(quality: str,
                                                                  engine: str) -> None:
    swapper = _compose("+video=demo", f"quality={quality}", f"swapper={engine}").swapper
    if quality == "master" and engine != "classic":
        assert swapper.pixel_boost == 512
        assert set(swapper.masks) == {"box", "occlusion", "region"}
        assert swapper.enhancer != "none"
        assert face_model_names(swapper) == ("xseg_1", "bisenet_resnet_34")
    else:
        assert swapper.pixel_boost == 128 and swapper.masks == ("box",)


def test_master_extras_can_be_turned_off_on_the_command_line() -> None:
    swapper = _compose("+video=demo", "quality=master", "swapper=inswapper",
                       "swapper.pixel_boost=128", "swapper.masks=[box]").swapper
    assert swapper.pixel_boost == 128 and face_model_names(swapper) == ()


@pytest.mark.parametrize(("override", "expected"), [
    ("swapper.pixel_boost=300", "swapper.pixel_boost=300: must be one of 128, 256"),
    ("swapper.masks=[box,hair]", "Unknown mask 'hair'"),
    ("swapper.masks=[box,area]", "unless swapper.landmarker=2dfan4"),
    ("swapper.occluder=xseg_4", "Unknown swapper.occluder 'xseg_4'"),
    ("swapper.parser=bisenet_resnet_50", "Unknown swapper.parser"),
    ("swapper.mask_regions=[beard]", "Unknown mask region 'beard'"),
    ("swapper.mouth_blur=2.0", "mouth mask blur=2.0: must be in"),
])
def test_bad_face_model_settings_name_key_and_choices(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("[", r"\[")):
        _compose("+video=demo", "swapper=inswapper", override)


def test_classic_engine_refuses_pixel_boost() -> None:
    with pytest.raises(ConfigError, match="128 with the classic engine"):
        SwapperConfig(name="classic", pixel_boost=256)
    assert face_model_options(SwapperConfig(name="classic")) == {}


def test_master_settings_build_a_working_engine(tmp_path: Path) -> None:
    """config -> face_model_options -> InswapperSwapper, on fixture models: it loads exactly
    the models face_model_names lists, swaps at 512 (16 sub-images, batched), and
    the identity models give the face back."""
    swapper_config = _compose("+video=demo", "quality=master", "swapper=inswapper",
                              "swapper.enhancer=none",
                              "swapper.mask_regions=[skin,brows,eyes,nose,mouth,lips]").swapper
    cache = fx.import_fixtures(tmp_path, inswapper_128=fx.build_identity_swapper(),
                               xseg_1=fm.build_xseg_fixture(),
                               bisenet_resnet_34=fm.build_bisenet_fixture())
    options = ModelOptions(providers=("cpu",), cache_dir=cache, shared_dirs=(), offline=True)
    engine = InswapperSwapper(options=options, **face_model_options(swapper_config))
    assert engine.crop_size == 512 and engine.occluder is not None and engine.parser is not None
    loaded = [runner.spec.name for runner in engine.occluder.runners] + [
        engine.parser.runner.spec.name]
    assert tuple(loaded) == face_model_names(swapper_config)
    image = astronaut_bgr()
    face = blazeface("back").detect(image)[0]
    vector = np.random.default_rng(2).standard_normal(512).astype(np.float32)
    source = SourceIdentity(crop=None, crop_size=128, image_count=1,
                            embedding=vector / np.linalg.norm(vector))
    output = engine.swap(image, [face], source)
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    assert psnr(output[y1:y2, x1:x2], image[y1:y2, x1:x2]) >= 40.0


def test_learned_engine_from_config(tmp_path: Path) -> None:
    """swapper=learned: model, weight and boost reach the engine; pixel_boost 128 is the
    model's own size; the converter is among the models to fetch."""
    settings = _compose("+video=demo", "swapper=learned", "swapper.model=ghost_3_256",
                        "swapper.weight=0.7").swapper
    assert learned_model_names(settings) == ("ghost_3_256", "crossface_ghost")
    cache = fx.import_fixtures(tmp_path, ghost_3_256=fm.build_learned_identity(
        SWAPPER_CONTRACTS["ghost_3_256"]),
        crossface_ghost=fm.build_converter_fixture())
    options = ModelOptions(providers=("cpu",), cache_dir=cache, shared_dirs=(), offline=True)
    engine = LearnedSwapper(options=options, **learned_engine_options(settings))
    assert (engine.crop_size, engine.weight, engine.contract.name) == (256, 0.7, "ghost_3_256")
    with pytest.raises(ConfigError, match="one of 256, 512, 768, 1024 for ghost_3_256"):
        _compose("+video=demo", "swapper=learned", "swapper.model=ghost_3_256",
                 "swapper.pixel_boost=384")


@pytest.mark.parametrize(("overrides", "expected"), [
    (("swapper=inswapper", "swapper.weight=0.7"), "0.5 with the inswapper engine"),
    (("swapper=classic", "swapper.weight=0.2"), "0.5 with the classic engine"),
    (("swapper=learned", "swapper.model=blendswap_256", "swapper.weight=0.7"),
     "0.5 with blendswap_256 (its source is a face image"),
    (("swapper=learned", "swapper.model=uniface_256", "swapper.weight=0.3"),
     "0.5 with uniface_256"),
])
def test_weight_is_refused_where_nothing_would_use_it(overrides: tuple[str, ...],
                                                      expected: str) -> None:
    """swapper.weight mixes target identity into an embedding source; an engine or model
    without one would accept the key and do nothing, so it is refused, naming the key."""
    with pytest.raises(ConfigError, match=r"swapper\.weight=.*" + expected.replace(
            "(", r"\(")):
        _compose("+video=demo", *overrides)
    for model in ("hyperswap_1a_256", "simswap_256", "ghost_2_256"):
        assert _compose("+video=demo", "swapper=learned", f"swapper.model={model}",
                        "swapper.weight=0.7").swapper.weight == 0.7


@pytest.mark.parametrize("model", sorted(SWAPPER_CONTRACTS))
@pytest.mark.parametrize("quality", QUALITIES)
def test_every_preset_composes_with_every_learned_model(quality: str, model: str) -> None:
    """quality=master's pixel boost 512 is a multiple of every model's size (256 or 512);
    the other presets leave each model at its own size."""
    swapper = _compose("+video=demo", f"quality={quality}", "swapper=learned",
                       f"swapper.model={model}").swapper
    options = learned_engine_options(swapper)
    size = SWAPPER_CONTRACTS[model].size
    if quality == "master":
        assert options["pixel_boost"] == 512 and 512 % size == 0
        assert face_model_names(swapper) == ("xseg_1", "bisenet_resnet_34")
    else:
        assert options["pixel_boost"] is None and face_model_names(swapper) == ()
    assert learned_model_names(swapper)[0] == model
