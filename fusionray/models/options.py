"""`ModelOptions` from a render config: where the models live and how to run them."""

from __future__ import annotations

from pathlib import Path

from fusionray.config import RenderConfig
from fusionray.models.loader import ModelOptions


def model_options_from_config(
    config: RenderConfig, *, providers: tuple[str, ...], threads: int = 1
) -> ModelOptions:
    """Where the config keeps models, and how to run them (`threads` CPU inference threads)."""
    return ModelOptions(
        providers=providers,
        threads=threads,
        cache_dir=Path(config.models.cache_dir) if config.models.cache_dir else None,
        shared_dirs=tuple(Path(p) for p in config.models.shared_dirs) or None,
        offline=True if config.models.offline else None,
        gpu=config.gpu,
        allow_unverified=config.models.allow_unverified,
    )
