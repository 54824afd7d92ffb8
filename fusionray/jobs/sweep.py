"""Hydra multirun support: one Ray for the whole sweep, and the sweep summary at the end.

Hydra's basic launcher runs the jobs of `-m` one after another in this process. The first job
starts Ray (`keep_ray_for_sweep`); the pipeline reuses an initialised Ray and only shuts down
one it started itself, so every later job finds the same cluster (and warm model caches) instead
of paying Ray's start-up again. `SweepCallback.on_multirun_end` shuts it down and writes the
sweep summary (`fusionray.report.sweep`); an atexit hook shuts it down if the sweep dies first.
Cluster settings (`cluster.*`) are therefore taken from the first job of a sweep.

One failing job does not end the sweep: the job records its exit code and error in its folder
(`record_failed_job`, called by `jobs/render.py` instead of exiting) and returns; the rest
run; the summary lists it with its error, and the sweep exits non-zero at the end (1 if any
render failed, 2 if every failure was bad input or config).
"""

from __future__ import annotations

import atexit
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fusionray.config import RenderConfig
from fusionray.report.summary import write_json_atomic

log = logging.getLogger("fusionray")


def keep_ray_for_sweep(config: RenderConfig) -> None:
    """Start Ray (or join the configured cluster) once for all jobs of a multirun."""
    from fusionray.jobs.ray_session import start_ray, stop_ray

    if start_ray(config):
        atexit.register(stop_ray)


def record_failed_job(job_dir: Path, *, exit_code: int, error: BaseException) -> Path:
    """Write the failure of one sweep job into its folder, for the summary and the exit code.

    Returns:
        The file written (`fusionray.report.sweep.FAILED_JOB_FILE` in `job_dir`).
    """
    from fusionray.report.sweep import FAILED_JOB_FILE

    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / FAILED_JOB_FILE
    write_json_atomic(path, {"exit_code": exit_code, "error": str(error),
                             "error_type": type(error).__name__})
    return path


def sweep_exit_code(exit_codes: list[int]) -> int:
    """The sweep's exit code from its failed jobs' codes: 0 if none, 1 if any render failed
    (or anything but bad input), 2 when every failure was bad input or config."""
    if not exit_codes:
        return 0
    return 2 if all(code == 2 for code in exit_codes) else 1


class SweepCallback(Callback):
    """Registered in `conf/config.yaml` under `hydra.callbacks`; acts only on multiruns."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from fusionray.jobs.ray_session import stop_ray
        from fusionray.lazy import ray_connected

        if ray_connected():
            stop_ray()
        from fusionray.report.sweep import CONTACT_SHEET, SUMMARY_CSV, summarize_sweep

        sweep_dir = Path(str(config.hydra.sweep.dir))
        table = summarize_sweep(sweep_dir)
        if not table.num_rows:
            return
        rows = table.to_pylist()
        failed = [row for row in rows if row.get("status") == "failed"]
        print(f"fusionray: sweep of {table.num_rows} renders: {sweep_dir / SUMMARY_CSV}"
              + (f", {sweep_dir / CONTACT_SHEET}" if len(failed) < len(rows) else ""))
        if failed:
            for row in failed:
                print(f"fusionray: error: sweep job {row['job']} failed (exit "
                      f"{row['exit_code']}): {row['error']}", file=sys.stderr)
            print(f"fusionray: error: {len(failed)} of {len(rows)} sweep jobs failed",
                  file=sys.stderr)
            # Hydra does not catch SystemExit: the sweep process ends with this code.
            sys.exit(sweep_exit_code([int(row["exit_code"]) for row in failed]))
