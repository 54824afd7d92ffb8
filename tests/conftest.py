"""Suite-wide marker policy.

- `slow`: skipped by default so the default suite stays short on a 2-core machine; CI sets
  FUSIONRAY_SLOW=1 (see .ci/run) and runs them too. `-m slow` also selects them.
- `gpu`: skipped unless FUSIONRAY_REQUIRE_GPU=1, which makes them run and fail loudly when no
  GPU is there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fusionray.config import ClusterConfig, RenderConfig
from fusionray.jobs.ray_session import start_ray, stop_ray


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = os.environ.get("FUSIONRAY_SLOW") == "1" or "slow" in (config.option.markexpr or "")
    run_gpu = os.environ.get("FUSIONRAY_REQUIRE_GPU") == "1"
    skip_slow = pytest.mark.skip(reason="slow: set FUSIONRAY_SLOW=1 (CI does) or pass -m slow")
    skip_gpu = pytest.mark.skip(reason="gpu: set FUSIONRAY_REQUIRE_GPU=1 on a GPU machine")
    for item in items:
        if item.get_closest_marker("slow") and not run_slow:
            item.add_marker(skip_slow)
        if item.get_closest_marker("gpu") and not run_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray per test module (the pipeline reuses an initialised Ray); a Ray that is
    already running (another fixture's) is reused and left running."""
    # The job's own start and stop (`start_ray`: a local Ray with the job's system settings,
    # or none where one is already initialised), on two CPUs whatever the machine.
    started_here = start_ray(RenderConfig(video="demo", cluster=ClusterConfig(num_cpus=2)))
    yield
    if started_here:
        stop_ray()
