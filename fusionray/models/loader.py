"""Open a catalogued model: locate (or fetch) the verified file, start a session, check it.

`ModelRunner` is what the face engines call per face or per batch: output names resolved once,
and on GPU providers an IO binding built once so each call only copies the input in and the
output out (no per-call allocation or name lookups).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusionray.models.catalog import ModelSpec, get_model_spec
from fusionray.models.session import check_contract, create_session
from fusionray.models.store import ensure_model

log = logging.getLogger(__name__)

_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")
_NUMPY_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


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
    allow_unverified: bool = False
    """Use model files that are not the published ones (`models.allow_unverified`)."""


class ModelRunner:
    """A verified model on its session, ready to run with minimal per-call overhead."""

    def __init__(self, name: str, options: ModelOptions) -> None:
        """Locate the file, open it on the first working provider, check its contract.

        Raises:
            ModelError: unknown name, missing (offline) or unfetchable, corrupt, or not the
                model's graph (the message names the file, expected and found).
            ConfigError: unknown provider name.
        """
        self.spec: ModelSpec = get_model_spec(name)
        self.path: Path = ensure_model(name, cache_dir=options.cache_dir,
                                       shared_dirs=options.shared_dirs, offline=options.offline,
                                       allow_unverified=options.allow_unverified)
        self.session, self.provider = create_session(
            self.path, providers=options.providers, threads=options.threads,
            engine_cache_dir=(options.cache_dir / "tensorrt") if options.cache_dir else None,
            fallback_to_cpu="cpu" in options.providers,
        )
        check_contract(self.session, self.spec, path=self.path)
        inputs = self.session.get_inputs()
        self.input_names = [node.name for node in inputs]
        self.input_dtypes = [_NUMPY_DTYPES.get(node.type, np.float32) for node in inputs]
        self.input_shapes = [tuple(node.shape) for node in inputs]
        self.output_names = [node.name for node in self.session.get_outputs()]
        self.batchable = not isinstance(self.input_shapes[0][0], int)
        """True when the first input's batch dimension is free (several faces per call)."""
        self._binding: Any = None
        if self.provider in _GPU_PROVIDERS:
            self._binding = self.session.io_binding()
            log.info("%s: IO binding on %s", name, self.provider)

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run on positional inputs (graph input order); returns the outputs in graph order."""
        feeds: Mapping[str, np.ndarray] = {
            name: np.ascontiguousarray(array, dtype=dtype)
            for name, array, dtype in zip(self.input_names, inputs, self.input_dtypes,
                                          strict=True)
        }
        if self._binding is None:
            return list(self.session.run(self.output_names, dict(feeds)))
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())


def open_models(names: Sequence[str], options: ModelOptions) -> dict[str, ModelRunner]:
    """Open several models with the same options, by name."""
    return {name: ModelRunner(name, options) for name in names}
