"""Pool sizing from conf/cluster against the cluster's resources (pure)."""

from __future__ import annotations

import pytest

from fusionray.actors.pools import PoolSizes, resolve_pool_sizes
from fusionray.config import ClusterConfig, PoolConfig
from fusionray.errors import ConfigError


def _cluster(detect: PoolConfig, swap: PoolConfig) -> ClusterConfig:
    return ClusterConfig(detect=detect, swap=swap)


@pytest.mark.parametrize(
    ("detect", "swap", "resources", "expected"),
    [
        (PoolConfig(1, 1), PoolConfig(0, 1), {"CPU": 2}, PoolSizes(1, 1)),
        (PoolConfig(1, 1), PoolConfig(0, 1), {"CPU": 16}, PoolSizes(1, 15)),
        (PoolConfig(1, 1), PoolConfig(0, 2), {"CPU": 16}, PoolSizes(1, 7)),
        (PoolConfig(4, 1, 0.25), PoolConfig(0, 1, 0.5), {"CPU": 16, "GPU": 2}, PoolSizes(4, 2)),
        (PoolConfig(4, 1, 0.25), PoolConfig(2, 1, 0.5), {"CPU": 8, "GPU": 2}, PoolSizes(4, 2)),
        (PoolConfig(1, 1), PoolConfig(0, 1), {"CPU": 1}, None),
    ],
)
def test_pool_sizes(detect: PoolConfig, swap: PoolConfig, resources: dict[str, float],
                    expected: PoolSizes | None) -> None:
    if expected is None:
        with pytest.raises(ConfigError, match="CPU"):
            resolve_pool_sizes(_cluster(detect, swap), resources)
    else:
        assert resolve_pool_sizes(_cluster(detect, swap), resources) == expected


def test_gpu_pools_on_a_cpu_cluster_fail_with_advice() -> None:
    with pytest.raises(ConfigError, match=r"num_gpus=0"):
        resolve_pool_sizes(_cluster(PoolConfig(1, 1, 0.25), PoolConfig(1, 1, 0.5)), {"CPU": 8})
