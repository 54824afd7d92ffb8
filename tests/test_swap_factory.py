"""The render path's engine construction (`fusionray.swap.factory`): a composed config goes to
the engine the render stage builds, with every face-model feature the preset asks for, loading
exactly the models the driver fetches up front."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from fusionray.actors import stages
from fusionray.config import RenderConfig, register_configs, to_render_config
from fusionray.errors import ConfigError
from fusionray.models.providers import GPU_CALL_BATCH, call_batch
from fusionray.swap import factory
from fusionray.swap.base import SourceIdentity
from fusionray.swap.classic import ClassicSwapper
from fusionray.swap.factory import swap_model_names, swapper_from_config
from fusionray.swap.inswapper import InswapperSwapper
from fusionray.swap.learned import SWAPPER_CONTRACTS, LearnedSwapper
from tests import face_model_fixtures as fm
from tests import onnx_fixtures as fx
from tests.faces_fixtures import astronaut_bgr, blazeface, psnr

CONF = Path(__file__).resolve().parents[1] / "conf"

register_configs()


def _compose(cache: Path, *overrides: str) -> RenderConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "+video=demo", f"models.cache_dir={cache}", "models.offline=true",
            "swapper.providers=[cpu]", *overrides])
    return to_render_config(cfg)


def _loaded(engine: InswapperSwapper | LearnedSwapper) -> list[str]:
    """Catalogue names of the models an engine opened, in swap_model_names' order."""
    names = [engine.runner.spec.name]
    if isinstance(engine, LearnedSwapper) and engine.converter is not None:
        names.append(engine.converter.spec.name)
    if engine.enhancer is not None:
        names.append(engine.enhancer.runner.spec.name)
    if engine.occluder is not None:
        names += [runner.spec.name for runner in engine.occluder.runners]
    if engine.parser is not None:
        names.append(engine.parser.runner.spec.name)
    return names


def _source() -> SourceIdentity:
    vector = np.random.default_rng(2).standard_normal(512).astype(np.float32)
    return SourceIdentity(crop=None, crop_size=128, image_count=1,
                          embedding=vector / np.linalg.norm(vector))


def test_master_inswapper_renders_boosted_and_masked(tmp_path: Path) -> None:
    """quality=master swapper=inswapper through the render stage's constructor: pixel boost 512
    (16 sub-images per face, batched 8 rows a call on the freed graph as swapper.batch=8
    asks), box + occlusion + region masks, GFPGAN 1.4; the identity fixtures give the face
    back."""
    cache = fx.import_fixtures(tmp_path, inswapper_128=fx.build_identity_swapper(),
                               xseg_1=fm.build_xseg_fixture(),
                               bisenet_resnet_34=fm.build_bisenet_fixture(),
                               **{"gfpgan_1.4": fx.build_identity_enhancer()})
    config = _compose(cache, "quality=master", "swapper=inswapper", "swapper.batch=8",
                      "swapper.enhancer_blend=0.0",
                      "swapper.mask_regions=[skin,brows,eyes,nose,mouth,lips]")
    engine = stages.swapper_from_config(config)  # The re-export the render stage uses.
    assert stages.swapper_from_config is swapper_from_config
    assert isinstance(engine, InswapperSwapper)
    assert (engine.crop_size, engine.boost, engine.max_batch) == (512, 4, 8)
    assert engine.masks.types == ("box", "occlusion", "region")
    assert engine.occluder is not None and engine.parser is not None
    assert engine.enhancer is not None and engine.enhancer.contract.name == "gfpgan_1.4"
    names = swap_model_names(config)
    assert names == ("inswapper_128", "gfpgan_1.4", "xseg_1", "bisenet_resnet_34")
    assert tuple(_loaded(engine)) == names
    image = astronaut_bgr()
    face = blazeface("back").detect(image)[0]
    jobs = engine.prepare(image, [face], _source())
    assert [job.sub_images.shape for job in jobs if job.sub_images is not None] == [
        (16, 128, 128, 3)]
    rows: list[int] = []
    run = engine.runner.run

    def counting_run(*inputs: np.ndarray, outputs: Sequence[int] | None = None
                     ) -> list[np.ndarray]:
        rows.append(inputs[0].shape[0])
        return run(*inputs, outputs=outputs)

    engine.runner.run = counting_run  # type: ignore[method-assign]
    output = engine.paste(image, engine.forward(jobs, _source()))
    assert rows == [8, 8]
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    assert psnr(output[y1:y2, x1:x2], image[y1:y2, x1:x2]) >= 40.0


def test_master_learned_renders_boosted_and_masked(tmp_path: Path) -> None:
    """quality=master swapper=learned: the 256 px model at pixel boost 512 (4 sub-images), its
    converter, the masks and the enhancer, all among the models the driver fetches."""
    contract = SWAPPER_CONTRACTS["simswap_256"]
    cache = fx.import_fixtures(tmp_path, simswap_256=fm.build_learned_identity(contract),
                               crossface_simswap=fm.build_converter_fixture(),
                               xseg_1=fm.build_xseg_fixture(),
                               bisenet_resnet_34=fm.build_bisenet_fixture(),
                               **{"gfpgan_1.4": fx.build_identity_enhancer()})
    config = _compose(cache, "quality=master", "swapper=learned", "swapper.model=simswap_256",
                      "swapper.weight=0.3")
    engine = swapper_from_config(config)
    assert isinstance(engine, LearnedSwapper)
    assert (engine.contract.name, engine.crop_size, engine.boost, engine.weight) == (
        "simswap_256", 512, 2, 0.3)
    assert engine.masks.types == ("box", "occlusion", "region")
    names = swap_model_names(config)
    assert names == ("simswap_256", "crossface_simswap", "gfpgan_1.4", "xseg_1",
                     "bisenet_resnet_34")
    assert tuple(_loaded(engine)) == names


def test_swapper_batch_is_the_configured_rows_or_the_providers_choice(tmp_path: Path) -> None:
    """swapper.batch=N: N rows a call on any provider; 0 (the default): `call_batch` of the
    session's provider, one on CPU and GPU_CALL_BATCH on a GPU; below 0: refused by name."""
    cache = fx.import_fixtures(tmp_path, inswapper_128=fx.build_identity_swapper())
    assert _compose(cache, "swapper=inswapper").swapper.batch == 0
    chosen = swapper_from_config(_compose(cache, "swapper=inswapper", "swapper.batch=4"))
    assert isinstance(chosen, InswapperSwapper) and chosen.max_batch == 4
    auto = swapper_from_config(_compose(cache, "swapper=inswapper"))
    assert isinstance(auto, InswapperSwapper) and auto.runner.batchable
    assert auto.max_batch == call_batch(auto.runner.opened.provider) == 1
    assert call_batch("CPUExecutionProvider") == 1
    assert call_batch("CUDAExecutionProvider") == call_batch(
        "TensorrtExecutionProvider") == GPU_CALL_BATCH > 1
    with pytest.raises(ConfigError, match=r"swapper.batch=-1.*>= 1, or 0 \(by provider\)"):
        _compose(cache, "swapper=inswapper", "swapper.batch=-1")


def test_classic_needs_no_models(tmp_path: Path) -> None:
    config = _compose(tmp_path, "swapper=classic")
    assert swap_model_names(config) == ()
    assert isinstance(factory.swapper_from_config(config), ClassicSwapper)


@pytest.mark.parametrize("extra", [(), ("swapper.landmarker=2dfan4",)])
def test_landmarker_is_fetched_with_the_masks(tmp_path: Path, extra: tuple[str, ...]) -> None:
    config = _compose(tmp_path, "swapper=inswapper", "swapper.masks=[box,mouth]", *extra)
    assert swap_model_names(config) == ("inswapper_128", *(("2dfan4",) if extra else ()))
