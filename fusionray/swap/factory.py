"""Swap engines from a render config: which engine, with which options, needing which models.

The render stage builds its engine with `swapper_from_config`; the driver fetches or locates
`swap_model_names` before Ray starts, so a missing swapper, converter, enhancer, mask or
landmark model is one clear error up front instead of every render actor failing to start.
"""

from __future__ import annotations

from typing import Any

from fusionray.config import RenderConfig
from fusionray.models.options import model_options_from_config
from fusionray.swap.base import Swapper
from fusionray.swap.classic import build_swapper
from fusionray.swap.options import (
    face_model_names,
    face_model_options,
    learned_engine_options,
    learned_model_names,
)


def swap_model_names(config: RenderConfig) -> tuple[str, ...]:
    """Catalogue names of every model file the swap engine loads, in load order (none for the
    classic engine): the swapper (inswapper, or the learned model and its embedding
    converter), the enhancer, then the mask and landmark models."""
    settings = config.swapper
    if settings.name == "classic":
        return ()
    if settings.name == "inswapper":
        names = [settings.model + ("_fp16" if settings.fp16 else "")]
    else:
        names = list(learned_model_names(settings))
    if settings.enhancer != "none":
        names.append(settings.enhancer)
    return (*names, *face_model_names(settings))


def swapper_from_config(config: RenderConfig, *, threads: int = 1) -> Swapper:
    """The swap engine the config asks for, its models on `threads` CPU inference threads.

    Raises:
        ConfigError: a bad option. ModelError: a model is missing, corrupt or wrong.
    """
    settings = config.swapper
    common: dict[str, Any] = {
        "mask_padding": settings.mask_padding, "mask_blur": settings.mask_blur,
        "colour_match": settings.colour_match, "blend": settings.blend,
        "blend_levels": settings.blend_levels}
    if settings.name == "classic":
        return build_swapper("classic", crop_size=settings.crop_size, **common)
    common.update(
        recognizer=settings.recognizer,
        options=model_options_from_config(config, providers=settings.providers,
                                          threads=threads),
        soft_mask=settings.soft_mask,
        enhancer=None if settings.enhancer == "none" else settings.enhancer,
        enhancer_blend=settings.enhancer_blend,
        max_batch=settings.batch or None,  # 0: the provider decides (`call_batch`)
    )
    if settings.name == "inswapper":
        return build_swapper("inswapper", **common, model=swap_model_names(config)[0],
                             **face_model_options(settings))
    return build_swapper("learned", **common, **learned_engine_options(settings))
