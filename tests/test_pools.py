"""Pool sizing (pure): what the free resources hold, capped by the chunks in flight, threads
that cover the cores; elastic pools; and the shipped cluster recipes against the studio pools."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from fusionray.actors import pools
from fusionray.actors.pools import (
    PoolKind,
    PoolPlan,
    actor_bundle,
    actor_options,
    bundles_that_fit,
    core_sets,
    job_uses_gpus,
    plan_pool,
    start_pool,
)
from fusionray.config import ClusterConfig, PoolConfig, RenderConfig
from fusionray.errors import ConfigError
from fusionray.jobs.scheduler import hang_limit_seconds
from tests.fault_stages import AffinityStage, what_a_pool_sees

ROOT = Path(__file__).resolve().parents[1]


def _cluster(swap: PoolConfig, *, in_flight: int = 4, elastic: bool = False) -> ClusterConfig:
    return ClusterConfig(swap=swap, max_chunks_in_flight=in_flight, elastic=elastic)


@pytest.mark.parametrize(
    ("swap", "in_flight", "free", "node_cpus", "expected"),
    [
        # 2 cores: two 1-CPU render actors, one thread each.
        (PoolConfig(0, 1), 4, {"CPU": 2}, 2, PoolPlan(actors=2, target=2, threads=1)),
        # One chunk in flight keeps one actor busy: it gets both cores.
        (PoolConfig(0, 1), 1, {"CPU": 2}, 2, PoolPlan(actors=1, target=1, threads=2)),
        (PoolConfig(1, 1), 4, {"CPU": 2}, 2, PoolPlan(actors=1, target=1, threads=2)),
        # 16 cores, 4 chunks in flight: 4 actors (not 16), 4 threads each.
        (PoolConfig(0, 1), 4, {"CPU": 16}, 16, PoolPlan(actors=4, target=4, threads=4)),
        # Two 8-core nodes: a share never exceeds one node.
        (PoolConfig(0, 1), 1, {"CPU": 16}, 8, PoolPlan(actors=1, target=1, threads=8)),
        # 2-CPU actors on 7 free cores: 3 fit; threads stay >= the reservation.
        (PoolConfig(0, 2), 4, {"CPU": 7}, 7, PoolPlan(actors=3, target=3, threads=2)),
        # GPU actors keep their reserved threads (the model runs on the card).
        (PoolConfig(0, 2, 0.5), 16, {"CPU": 16, "GPU": 2}, 8,
         PoolPlan(actors=4, target=4, threads=2)),
        (PoolConfig(2, 1, 0.5), 4, {"CPU": 8, "GPU": 2}, 8, PoolPlan(actors=2, target=2,
                                                                     threads=1)),
    ],
)
def test_plan_pool(swap: PoolConfig, in_flight: int, free: dict[str, float], node_cpus: float,
                   expected: PoolPlan) -> None:
    plan = plan_pool(swap, _cluster(swap, in_flight=in_flight), free, kind="render",
                     node_cpus=node_cpus)
    assert plan == expected


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # One chunk (a 48-frame clip): one actor on both cores, not one busy on one core
        # beside an idle one (issue 10's neural run).
        (1, PoolPlan(actors=1, target=1, threads=2)),
        (2, PoolPlan(actors=2, target=2, threads=1)),
        (30, PoolPlan(actors=2, target=2, threads=1)),
        (None, PoolPlan(actors=2, target=2, threads=1)),
    ],
)
def test_no_more_actors_than_chunks(chunks: int | None, expected: PoolPlan) -> None:
    swap = PoolConfig(0, 1)
    plan = plan_pool(swap, _cluster(swap, in_flight=4), {"CPU": 2}, kind="render",
                     node_cpus=2, chunks=chunks)
    assert plan == expected
    # An elastic pool asks the autoscaler for no more than the chunks either.
    elastic = plan_pool(swap, _cluster(swap, in_flight=4, elastic=True), {"CPU": 0},
                        kind="render", chunks=chunks)
    assert elastic.target == min(4, chunks or 4)


def test_a_fixed_pool_that_does_not_fit_names_the_shortfall() -> None:
    with pytest.raises(ConfigError, match=r"3 render x 1 CPU = 3 CPU, but the cluster has 2 "
                                          r"free.*cluster.swap.replicas"):
        plan_pool(PoolConfig(3, 1), _cluster(PoolConfig(3, 1)), {"CPU": 2}, kind="render")
    with pytest.raises(ConfigError, match=r"num_gpus=0"):
        plan_pool(PoolConfig(1, 1, 0.5), _cluster(PoolConfig(1, 1, 0.5)), {"CPU": 8},
                  kind="render")


def test_an_elastic_pool_waits_for_what_does_not_fit_yet() -> None:
    swap = PoolConfig(0, 2, 0.5)
    cluster = _cluster(swap, in_flight=16, elastic=True)
    empty = plan_pool(swap, cluster, {"CPU": 0}, kind="render")  # autoscaling from zero
    assert (empty.actors, empty.target, empty.missing) == (0, 16, 16)
    some = plan_pool(swap, cluster, {"CPU": 16, "GPU": 2}, kind="render", node_cpus=8)
    assert (some.actors, some.missing) == (4, 12)


def test_bundles_that_fit() -> None:
    assert bundles_that_fit({"CPU": 16, "GPU": 2}, {"CPU": 2, "GPU": 0.5}) == 4
    assert bundles_that_fit({"CPU": 3, "GPU": 2}, {"CPU": 2, "GPU": 0.5}) == 1
    assert bundles_that_fit({"CPU": 1.0}, {"CPU": 0.25}) == 4
    assert bundles_that_fit({}, {"CPU": 1}) == 0


@pytest.mark.parametrize(
    ("durations", "expected"),
    [([], 10 * 120.0), ([1.0, 2.0, 30.0], 120.0), ([20.0, 30.0, 40.0], 300.0)],
)
def test_hang_limit(durations: list[float], expected: float) -> None:
    assert hang_limit_seconds(durations, ClusterConfig()) == pytest.approx(expected)


# --- the shipped recipes against conf/cluster/studio.yaml -----------------------------------


def studio() -> ClusterConfig:
    data = yaml.safe_load((ROOT / "conf" / "cluster" / "studio.yaml").read_text())
    fields: dict[str, Any] = {k: PoolConfig(**v) if isinstance(v, dict) else v
                              for k, v in data.items()}
    return ClusterConfig(**fields)


def recipe_capacity(name: str) -> tuple[dict[str, float], dict[str, float], float]:
    """(resources at start, resources at the autoscaler's maximum, CPUs of one worker)."""
    data = yaml.safe_load((ROOT / "cluster" / name).read_text())
    if name == "launcher-aws-gpu.yaml":
        workers = [t for k, t in data["available_node_types"].items()
                   if k != data["head_node_type"]]
        per = [(t["resources"], t.get("min_workers", 0), t["max_workers"]) for t in workers]
        head = data["available_node_types"][data["head_node_type"]]["resources"]
    else:
        spec = data["spec"]["rayClusterSpec"] if data["kind"] == "RayJob" else data["spec"]
        head = {"CPU": float(spec["headGroupSpec"]["rayStartParams"].get("num-cpus", 0))}
        per = []
        for group in spec["workerGroupSpecs"]:
            requests = group["template"]["spec"]["containers"][0]["resources"]["requests"]
            resources = {"CPU": float(group["rayStartParams"].get("num-cpus", requests["cpu"])),
                         "GPU": float(group["rayStartParams"].get("num-gpus", 0))}
            per.append((resources, group["minReplicas"], group["maxReplicas"]))

    def total(count_index: int) -> dict[str, float]:
        sums = {key: float(value) for key, value in head.items()}
        for entry in per:
            for key, value in entry[0].items():
                sums[key] = sums.get(key, 0.0) + float(value) * entry[count_index]
        return sums

    return total(1), total(2), max(float(entry[0]["CPU"]) for entry in per)


@pytest.mark.parametrize("recipe", ["kuberay-rayjob.yaml", "kuberay-raycluster.yaml",
                                    "launcher-aws-gpu.yaml"])
def test_each_recipe_runs_the_studio_pools(recipe: str) -> None:
    """At the recipe's minimum size the studio pools either start at least one actor or (an
    autoscaling recipe) wait for the autoscaler; at its maximum size the whole render target
    and the detection pre-pass fit."""
    cluster = studio()
    at_start, at_most, node_cpus = recipe_capacity(recipe)
    pools_by_kind: tuple[tuple[PoolKind, PoolConfig], ...] = (
        ("render", cluster.swap), ("detect", cluster.detect))
    for kind, pool in pools_by_kind:
        start = plan_pool(pool, cluster, at_start, kind=kind, node_cpus=node_cpus)
        grown = plan_pool(pool, cluster, at_most, kind=kind, node_cpus=node_cpus)
        assert grown.actors >= 1, f"{recipe}: no {kind} actor fits even at its maximum"
        if at_start == at_most:  # a fixed-size cluster: must run without any autoscaler
            assert start.actors >= 1
            if kind == "render":  # and the render actors fill its cards
                assert start.actors * pool.num_gpus == at_start["GPU"]
        else:  # autoscaling (from zero): wait for it, and the whole target fits at the top
            assert cluster.elastic and start.missing > 0
            assert grown.missing == 0 == bundles_that_fit(at_start, actor_bundle(pool))


@pytest.mark.parametrize(
    ("cpus", "actors", "threads", "expected"),
    [
        # Two one-core actors on 2 cores: one core each.
        ([0, 1], 2, 1, ((0,), (1,))),
        # Four 4-thread actors on 16 cores (in any order): consecutive quarters.
        (list(range(15, -1, -1)), 4, 4, ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11),
                                         (12, 13, 14, 15))),
        # A cpuset that is not 0..n-1 keeps its own numbers.
        ([2, 3, 6, 7], 2, 2, ((2, 3), (6, 7))),
        # One actor: nothing to keep apart.
        ([0, 1], 1, 2, ()),
        # Not filling the machine (another job may pin the rest): no pinning.
        (list(range(16)), 4, 2, ()),
        ([0, 1], 3, 1, ()),
    ],
)
def test_core_sets(cpus: list[int], actors: int, threads: int,
                   expected: tuple[tuple[int, ...], ...]) -> None:
    assert core_sets(cpus, actors, threads) == expected


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and two cores")
@pytest.mark.parametrize(("own_node", "pin_cpus", "pinned"),
                         [(True, True, True), (False, True, False), (True, False, False)])
def test_render_actors_that_fill_the_jobs_own_machine_keep_to_their_own_cores(
    local_ray: None, monkeypatch: pytest.MonkeyPatch, own_node: bool, pin_cpus: bool,
    pinned: bool,
) -> None:
    """Two one-core render actors on a 2-CPU Ray of the job's own: one core each, set before
    the stage opens anything; a joined cluster, or pin_cpus=false, leaves the OS in charge."""
    machine = sorted(os.sched_getaffinity(0))
    # The local Ray has 2 CPUs; on a larger machine, pretend it has just its first two.
    monkeypatch.setattr(pools.os, "sched_getaffinity", lambda _: set(machine[:2]))
    config = RenderConfig(video="demo", cluster=ClusterConfig(
        swap=PoolConfig(replicas=2, num_cpus=1), pin_cpus=pin_cpus))
    pool = start_pool("render", config, AffinityStage, chunks=4, own_node=own_node)
    try:
        seen = set(ray.get([member.actor.run.remote() for member in pool.members]))
    finally:
        pool.release()
    if pinned:
        assert pool.cores == ((machine[0],), (machine[1],))
        assert seen == {frozenset({machine[0]}), frozenset({machine[1]})}
    else:
        assert pool.cores == ()
        assert seen == {frozenset(machine)}


def test_actor_options_hide_the_cards_only_from_zero_gpu_actors_where_gpus_are_in_play() -> None:
    cpu_pool, gpu_pool = PoolConfig(2, 1.0), PoolConfig(1, 2.0, 0.5, max_restarts=5)
    plain = {"num_cpus": 1.0, "num_gpus": 0.0, "max_restarts": 3, "max_task_retries": 0}
    # No GPU anywhere: no runtime env, so the actors take Ray's prestarted workers.
    assert actor_options(cpu_pool, hide_gpus=False) == plain
    assert actor_options(cpu_pool, hide_gpus=True) == {
        **plain, "runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}}
    # An actor with a GPU share keeps the card Ray assigns it.
    assert actor_options(gpu_pool, hide_gpus=True) == {
        "num_cpus": 2.0, "num_gpus": 0.5, "max_restarts": 5, "max_task_retries": 0}


@pytest.mark.parametrize(("cluster", "resources", "expected"), [
    (ClusterConfig(), {"CPU": 2.0}, False),
    (ClusterConfig(), {"CPU": 16.0, "GPU": 1.0}, True),
    # An elastic cluster whose GPU nodes have not joined yet: the job's pools say it.
    (ClusterConfig(swap=PoolConfig(0, 1.0, 0.25)), {"CPU": 2.0}, True),
    (ClusterConfig(detect=PoolConfig(1, 1.0, 1.0)), {"CPU": 2.0}, True),
])
def test_job_uses_gpus(cluster: ClusterConfig, resources: dict[str, float],
                       expected: bool) -> None:
    assert job_uses_gpus(cluster, resources) is expected


def test_render_actors_of_a_cpu_only_job_keep_the_nodes_environment(local_ray: None) -> None:
    """No GPU in the cluster or the config: the actors get no runtime env of their own."""
    visible, runtime_env = what_a_pool_sees(0)
    assert visible == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert "env_vars" not in runtime_env


def test_a_released_pool_leaves_the_whole_ray_free_for_whatever_starts_next(
    local_ray: None,
) -> None:
    """Ray frees a killed actor's CPUs a moment after `ray.kill`; `release` waits for that, so
    the next pool (or the next job of a sweep on the same Ray) is not refused as 'the cluster
    has 0 free' (CI saw exactly that when a second job followed a failed one)."""
    total = ray.cluster_resources()["CPU"]
    config = RenderConfig(video="demo", cluster=ClusterConfig(
        swap=PoolConfig(replicas=0, num_cpus=1)))
    for _ in range(3):
        pool = start_pool("render", config, AffinityStage, chunks=4)
        assert len(pool.members) == total  # it fills the Ray
        ray.get([member.actor.run.remote() for member in pool.members])
        pool.release()
        assert ray.available_resources().get("CPU", 0.0) == total
        assert pool.members == []


@ray.remote(num_cpus=1)
class _Blocker:
    """Another job's actor, holding one CPU of the shared Ray."""

    def ready(self) -> bool:
        return True


def test_release_waits_only_for_what_the_members_hold(local_ray: None) -> None:
    """An actor still waiting for room (an elastic pool's, or one over what the Ray has) holds
    nothing: `release` waits for the CPUs its running members give back, not for the one
    another job still holds."""
    total = ray.cluster_resources()["CPU"]
    blockers = [_Blocker.remote() for _ in range(int(total) - 1)]  # type: ignore[attr-defined]
    ray.get([blocker.ready.remote() for blocker in blockers])
    try:
        config = RenderConfig(video="demo", cluster=ClusterConfig(
            swap=PoolConfig(replicas=1, num_cpus=1)))
        pool = start_pool("render", config, AffinityStage, chunks=1)
        pending = pool.add()  # no room left: Ray keeps it waiting
        assert pending.state == "starting" and len(pool.members) == 2
        started = time.monotonic()
        pool.release(timeout_seconds=30.0)
        assert time.monotonic() - started < 5.0
        assert ray.available_resources().get("CPU", 0.0) == 1.0
    finally:
        for blocker in blockers:
            ray.kill(blocker)
        deadline = time.monotonic() + 10.0  # the next test sizes its pool from the whole Ray
        while ray.available_resources().get("CPU", 0.0) < total and time.monotonic() < deadline:
            time.sleep(0.05)
