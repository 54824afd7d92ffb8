"""Ray's GPU assignment reaches the session options: a cluster with logical GPUs (no card
needed) runs actors that probe what Ray gave them and plan their providers. The ORT sessions
themselves stay on CPU here; the `gpu`-marked tests in test_gpu_session.py run the CUDA path."""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from fusionray.config import GpuConfig
from fusionray.models.device import (
    NO_DEVICE_HIDDEN,
    NO_DEVICE_NOT_ASSIGNED,
    GpuCard,
    gpu_isolation_options,
    plan_device,
    probe_assignment,
)
from fusionray.models.providers import CPU, CUDA, TENSORRT, SessionFacts, plan_provider_attempts
from fusionray.models.session import open_session
from tests.fault_stages import what_a_pool_sees
from tests.test_models_session import _identity_model

pytestmark = pytest.mark.ray

GIB = 2**30
CARDS = tuple(GpuCard(index=i, uuid=f"GPU-{i:04d}", name="NVIDIA H200", memory_bytes=141 * GIB,
                      compute_capability="9.0") for i in range(2))


class Probe:
    """What an actor was given, and what it would open its sessions with."""

    def report(self) -> dict[str, Any]:
        assignment = probe_assignment()
        plan = plan_device(assignment, CARDS)  # The node's cards, as nvidia-smi would list them.
        facts = SessionFacts(available=frozenset({TENSORRT, CUDA, CPU}), device=plan,
                             driver_present=True)
        attempts = plan_provider_attempts(("cuda", "cpu"), facts, GpuConfig(memory_usable=0.8))
        # A real session with the default providers: no driver on this machine, so CPU.
        opened = open_session(_identity_model(), providers=("cuda", "cpu"))
        return {
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpu_ids": assignment.gpu_ids,
            "card": plan.card.index if plan.card else None,
            "reason": plan.reason,
            "chain": [(name, dict(options)) for name, options in attempts.attempts[0].chain],
            "session": opened.provider,
        }


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[Cluster]:
    if ray.is_initialized():
        pytest.skip("needs its own Ray cluster (another Ray is running in this process)")
    # pytest imports this file as a top-level module the workers cannot import: ship `Probe`
    # by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 2, "include_dashboard": False})
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _reports(num_gpus: float, count: int, **options: Any) -> list[dict[str, Any]]:
    actor = ray.remote(Probe).options(num_cpus=0, num_gpus=num_gpus, **options)
    # Actor handles, loose as in fusionray.actors.pools: Ray's types do not know their
    # methods' `.remote`.
    actors: list[Any] = [actor.remote() for _ in range(count)]
    reports = ray.get([a.report.remote() for a in actors])
    for a in actors:
        ray.kill(a)
    return reports


def test_whole_gpu_actors_get_distinct_devices(gpu_cluster: Cluster) -> None:
    reports = _reports(1, 2)
    assert sorted(r["card"] for r in reports) == [0, 1]
    for report in reports:
        # Ray narrowed the process to its card, so the card is device 0 of the process.
        assert report["visible"] == str(report["card"]) == report["gpu_ids"][0]
        (cuda, options), (cpu, _) = report["chain"]
        assert (cuda, cpu, options["device_id"]) == (CUDA, CPU, "0")
        assert int(options["gpu_mem_limit"]) == int(141 * 1024 * 0.8) * 2**20
        assert report["session"] == CPU


def test_fractional_actors_share_cards_with_a_share_of_memory(gpu_cluster: Cluster) -> None:
    reports = _reports(0.5, 4)
    assert Counter(r["card"] for r in reports) == {0: 2, 1: 2}
    for report in reports:
        options = report["chain"][0][1]
        assert options["device_id"] == "0"
        assert int(options["gpu_mem_limit"]) == int(141 * 1024 * 0.5 * 0.8) * 2**20


def test_actor_without_gpu_never_plans_cuda(gpu_cluster: Cluster) -> None:
    (report,) = _reports(0, 1)
    # Ray 2.60 leaves CUDA_VISIBLE_DEVICES as the node had it: this actor could see every card.
    assert report["visible"] == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert report["gpu_ids"] == () and report["card"] is None
    assert report["reason"] == NO_DEVICE_NOT_ASSIGNED
    assert report["chain"] == [(CPU, {})]
    assert report["session"] == CPU


def test_isolation_hides_every_card_from_a_zero_gpu_actor(gpu_cluster: Cluster) -> None:
    assert gpu_isolation_options(0.5) == {}
    (report,) = _reports(0, 1, **gpu_isolation_options(0))
    assert report["visible"] == ""
    assert report["reason"] == NO_DEVICE_HIDDEN and report["chain"] == [(CPU, {})]
    # A GPU actor's own assignment is untouched.
    (gpu,) = _reports(1, 1, **gpu_isolation_options(1))
    assert gpu["visible"] == str(gpu["card"])


def test_pools_hide_every_card_from_their_zero_gpu_actors_on_a_gpu_cluster(
        gpu_cluster: Cluster) -> None:
    visible, runtime_env = what_a_pool_sees(0)
    assert visible == ""
    assert runtime_env["env_vars"] == {"CUDA_VISIBLE_DEVICES": ""}
    # A pool with a GPU share sees the card Ray gave it, and nothing is forced on it.
    visible, runtime_env = what_a_pool_sees(1)
    assert visible in {"0", "1"}
    assert "env_vars" not in runtime_env
