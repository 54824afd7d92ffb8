"""Engine options for the face-model features (pixel boost, masks, landmarks) from config.

`fusionray.swap.factory.swapper_from_config` builds the model engines with these options, and
its `swap_model_names` (which the driver locates or fetches before Ray starts) includes
`face_model_names(...)`, so a missing mask or landmark model is one clear error up front.
"""

from __future__ import annotations

from typing import Any

from fusionray.config import SwapperConfig
from fusionray.faces.occlusion import occluder_model_names


def face_model_options(settings: SwapperConfig) -> dict[str, Any]:
    """Keyword options of the learned engines for `settings` (empty for the classic engine)."""
    if settings.name == "classic":
        return {}
    return {
        "pixel_boost": settings.pixel_boost,
        "masks": settings.mask_recipe(),
        "occluder": settings.occluder,
        "parser": settings.parser,
        "mask_regions": settings.mask_regions,
        "landmarker": None if settings.landmarker == "none" else settings.landmarker,
        "enhancer_fidelity": settings.enhancer_fidelity,
    }


def face_model_names(settings: SwapperConfig) -> tuple[str, ...]:
    """Catalogue names of the mask and landmark models `settings` load, in load order."""
    if settings.name == "classic":
        return ()
    names: list[str] = []
    if "occlusion" in settings.masks:
        names.extend(occluder_model_names(settings.occluder))
    if "region" in settings.masks:
        names.append(settings.parser)
    if settings.landmarker != "none":
        names.append(settings.landmarker)
    return tuple(names)


def learned_engine_options(settings: SwapperConfig) -> dict[str, Any]:
    """Keyword options of `LearnedSwapper` for a `swapper.name=learned` config: the face-model
    options, the model and weight, with pixel_boost 128 meaning the model's own size."""
    options = face_model_options(settings)
    options["pixel_boost"] = None if settings.pixel_boost == 128 else settings.pixel_boost
    options["model"] = settings.model
    options["weight"] = settings.weight
    return options


def learned_model_names(settings: SwapperConfig) -> tuple[str, ...]:
    """The swapper file and its embedding converter, for `swapper.name=learned`."""
    if settings.name != "learned":
        return ()
    from fusionray.swap.learned import SWAPPER_CONTRACTS

    converter = SWAPPER_CONTRACTS[settings.model].converter
    return (settings.model, *((converter,) if converter else ()))
