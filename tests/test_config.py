"""Config composition: every option of every group composes; typos and bad values fail early."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from fusionray.config import RenderConfig, config_hash, register_configs, to_render_config
from fusionray.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())

register_configs()


def _compose(*overrides: str) -> RenderConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return to_render_config(cfg)


def test_the_required_groups_exist() -> None:
    assert {"quality", "cluster", "detector", "swapper"} <= set(GROUPS)


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))],
)
def test_every_option_of_every_group_composes(group: str, option: str) -> None:
    if group == "quality_engine":  # chosen as `${quality}_${swapper}`, never by hand
        quality, swapper = option.split("_", 1)
        overrides = [f"quality={quality}", f"swapper={swapper}"]
    else:
        overrides = [f"{group}={option}"]
    config = _compose("+video=demo", *overrides)
    assert isinstance(config, RenderConfig)


def test_presets_change_what_they_say() -> None:
    draft, standard, master = (_compose("+video=demo", f"quality={q}")
                               for q in ("draft", "standard", "master"))
    assert draft.encode.crf > standard.encode.crf > master.encode.crf
    assert draft.swapper.blend == "alpha" and standard.swapper.blend == "laplacian"
    assert draft.detector.variant == "front" and standard.detector.variant == "back"
    scrfd_draft = _compose("+video=demo", "detector=scrfd", "quality=draft")
    assert scrfd_draft.detector.variant == "10g" and scrfd_draft.detector.input_size == 320
    assert _compose("+video=demo", "quality=lossless").encode.lossless


@pytest.mark.parametrize("swapper", ["classic", "inswapper"])
@pytest.mark.parametrize("quality", ["draft", "standard", "master", "lossless"])
def test_only_master_with_the_learned_engine_enhances(quality: str, swapper: str) -> None:
    config = _compose("+video=demo", f"quality={quality}", f"swapper={swapper}")
    expected = "gfpgan_1.4" if (quality, swapper) == ("master", "inswapper") else "none"
    assert config.swapper.enhancer == expected


def test_the_command_line_turns_the_master_enhancer_off() -> None:
    config = _compose("+video=demo", "quality=master", "swapper=inswapper",
                      "swapper.enhancer=none")
    assert config.swapper.enhancer == "none" and config.swapper.crop_size == 384


def test_video_and_sources_from_plus_overrides() -> None:
    config = _compose("+video=/shots/a.mp4", "+source=[/faces/x.jpg,/faces/y.jpg]")
    assert config.video == "/shots/a.mp4"
    assert config.source_paths == ("/faces/x.jpg", "/faces/y.jpg")
    single = _compose("+video=/shots/a.mp4", "+source=/faces/x.jpg", "output=/out/b.mp4")
    assert single.source_paths == ("/faces/x.jpg",) and single.output == "/out/b.mp4"


def test_typo_in_a_key_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException) as caught:
        _compose("+video=demo", "encode.crff=3")
    assert "crff" in str(caught.value.__cause__ or caught.value)


def test_wrong_type_fails_at_composition() -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)):
        _compose("+video=demo", "encode.crf=abc")


def test_unknown_group_option_lists_choices() -> None:
    with pytest.raises(ConfigCompositionException) as caught:
        _compose("+video=demo", "quality=ultra")
    assert "draft" in str(caught.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("encode.crf=99", "encode.crf=99: must be in [0, 51]"),
        ("swapper.mask_blur=1.5", "swapper.mask_blur=1.5"),
        ("detector.name=scrd", "Unknown detector.name 'scrd'. Choose one of: blazeface"),
        ("swapper.blend=poisson", "Choose one of: laplacian, alpha"),
        ("chunk.frames=-1", "chunk.frames=-1"),
        ("cluster.swap.num_gpus=1.5", "cluster.swap.num_gpus=1.5"),
        ("detector.providers=[cuda,vulkan]", "Choose one of: tensorrt, cuda"),
        ("selection.mode=all", "Choose one of: one, many"),
        ("identity_every=-1", "identity_every=-1: must be an integer >= 0"),
    ],
)
def test_out_of_range_values_name_key_and_allowed(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _compose("+video=demo", override)
    assert expected in str(caught.value)


def test_video_is_required_and_sources_required_for_real_videos() -> None:
    with pytest.raises(ConfigError, match="video"):
        _compose()
    with pytest.raises(ConfigError, match=r"\+source=PATH"):
        _compose("+video=/shots/a.mp4")


def test_unknown_top_level_key_in_plain_data() -> None:
    with pytest.raises(ConfigError, match="Unknown config key 'vidoe'"):
        to_render_config({"vidoe": "demo"})


def test_config_hash_tracks_pixels_not_plumbing() -> None:
    base = _compose("+video=demo")
    assert config_hash(base) == config_hash(_compose("+video=demo", "cluster=studio",
                                                     "output=/x/y.mp4", "identity_every=1"))
    assert config_hash(base) != config_hash(_compose("+video=demo", "encode.crf=20"))
    assert config_hash(base) != config_hash(_compose("+video=demo", "swapper.mask_blur=0.1"))


def test_config_records_are_frozen() -> None:
    config = _compose("+video=demo")
    with pytest.raises(AttributeError):
        config.encode.crf = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.cluster.swap.replicas = 3  # type: ignore[misc]  # Nested records too.
