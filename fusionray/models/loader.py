"""Open a catalogued model: locate (or fetch) the verified file, start a session, check it.

`ModelRunner` is what the face engines call per face or per batch: output names resolved once,
and on GPU providers device-resident inputs and outputs kept across calls
(`fusionray.models.session.SessionRunner`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusionray.config import GpuConfig
from fusionray.models.catalog import ModelSpec, get_model_spec
from fusionray.models.providers import wants_fp16_engines
from fusionray.models.session import SessionRunner, check_contract, open_session
from fusionray.models.store import default_cache_dir, ensure_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOptions:
    """Where and how to open models (shared by every engine of a job)."""

    providers: tuple[str, ...] = ("cpu",)
    """ONNX Runtime providers by short name, tried in order; without `cpu` in the list, a
    machine where none of them runs is an error rather than a silent CPU fallback."""
    threads: int = 1
    """CPU inference threads."""
    cache_dir: Path | None = None
    """Model cache folder (None: the default)."""
    shared_dirs: tuple[Path, ...] | None = None
    """Read-only model folders searched first (None: `$FUSIONRAY_SHARED_MODELS`)."""
    offline: bool | None = None
    """Never download (None: `$FUSIONRAY_OFFLINE`)."""
    gpu: GpuConfig = field(default_factory=GpuConfig)
    """How sessions use the GPU this process was given (`gpu:` in the config)."""
    allow_unverified: bool = False
    """Use model files that are not the published ones (`models.allow_unverified`)."""


class ModelRunner:
    """A verified model on its session, ready to run with minimal per-call overhead."""

    def __init__(self, name: str, options: ModelOptions, *, path: Path | None = None) -> None:
        """Locate the file, open it on the first working provider, check its contract.

        Args:
            name: catalogue name.
            options: providers, threads, model folders.
            path: open this file instead of locating `name` (one already verified, or derived
                from a verified one, e.g. `fusionray.models.batch`'s rewrite); its contract is
                still checked.

        Raises:
            ModelError: unknown name, missing (offline) or unfetchable, corrupt, or not the
                model's graph (the message names the file, expected and found).
            ConfigError: unknown provider name.
        """
        self.spec: ModelSpec = get_model_spec(name)
        self.path: Path = path if path is not None else ensure_model(
            name, cache_dir=options.cache_dir, shared_dirs=options.shared_dirs,
            offline=options.offline, allow_unverified=options.allow_unverified)
        cache = options.cache_dir or default_cache_dir()
        self.opened = open_session(
            self.path, providers=options.providers, threads=options.threads,
            gpu=options.gpu, engine_root=cache / "tensorrt", graph_cache=cache / "ort-cpu",
            fp16=wants_fp16_engines(name, options.gpu),
            fallback_to_cpu="cpu" in options.providers,
        )
        self.session = self.opened.session
        self.provider: str = self.opened.label
        """The provider it runs on, with what did not go as configured (run.json lists it)."""
        check_contract(self.session, self.spec, path=self.path)
        self._runner = SessionRunner(self.opened)
        self.input_names = self._runner.input_names
        self.input_dtypes = self._runner.input_dtypes
        self.input_shapes = [tuple(node.shape) for node in self.session.get_inputs()]
        self.output_names = self._runner.output_names
        self.batchable = not isinstance(self.input_shapes[0][0], int)
        """True when the first input's batch dimension is free (several faces per call)."""
        self.max_batch: int | None = self.opened.max_batch
        """Largest batch one call may take (a TensorRT engine's profile); None = unbounded."""
        if self._runner.device_resident:
            log.info("%s: device-resident IO binding on %s", name, self.opened.provider)

    def run(self, *inputs: np.ndarray, outputs: Sequence[int] | None = None) -> list[np.ndarray]:
        """Run on positional inputs (graph input order); returns the outputs in graph order,
        or only those at the indices `outputs` (the rest are not copied off the GPU)."""
        return self._runner.run(*inputs, outputs=outputs)


def open_models(names: Sequence[str], options: ModelOptions) -> dict[str, ModelRunner]:
    """Open several models with the same options, by name."""
    return {name: ModelRunner(name, options) for name in names}
