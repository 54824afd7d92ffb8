"""Hydra multirun support: one Ray for the whole sweep, and the sweep summary at the end.

Hydra's basic launcher runs the jobs of `-m` one after another in this process. The first job
starts Ray (`keep_ray_for_sweep`); the pipeline reuses an initialised Ray and only shuts down
one it started itself, so every later job finds the same cluster (and warm model caches) instead
of paying Ray's start-up again. `SweepCallback.on_multirun_end` shuts it down and writes the
sweep summary (`fusionray.report.sweep`); an atexit hook shuts it down if the sweep dies first.
Cluster settings (`cluster.*`) are therefore taken from the first job of a sweep.
"""

from __future__ import annotations

import atexit
import logging
from pathlib import Path
from typing import Any

import ray
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fusionray.config import RenderConfig

log = logging.getLogger("fusionray")


def keep_ray_for_sweep(config: RenderConfig) -> None:
    """Start Ray (or join the configured cluster) once for all jobs of a multirun."""
    from fusionray.jobs.pipeline import start_ray

    if start_ray(config):
        atexit.register(ray.shutdown)


class SweepCallback(Callback):
    """Registered in `conf/config.yaml` under `hydra.callbacks`; acts only on multiruns."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if ray.is_initialized():
            ray.shutdown()
        from fusionray.report.sweep import CONTACT_SHEET, SUMMARY_CSV, summarize_sweep

        sweep_dir = Path(str(config.hydra.sweep.dir))
        table = summarize_sweep(sweep_dir)
        if table.num_rows:
            print(f"fusionray: sweep of {table.num_rows} renders: {sweep_dir / SUMMARY_CSV}, "
                  f"{sweep_dir / CONTACT_SHEET}")
