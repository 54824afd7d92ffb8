"""Ray actors around the stages, and the pools that size and feed them.

Each actor acquires its resources (ONNX Runtime session, swapper state) once in `__init__` and
then transforms chunks in its methods. The driver chains detect -> swap by passing the detect
task's ObjectRef straight to the swap actor, so detections go actor to actor through the object
store and frames never leave the node that decoded them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ray

from fusionray.actors.render_stage import RenderStage
from fusionray.actors.stages import (
    ChunkResult,
    DetectResult,
    DetectStage,
    thread_count,
)
from fusionray.config import ClusterConfig, PoolConfig, RenderConfig
from fusionray.errors import ConfigError
from fusionray.faces.people import SourceSet
from fusionray.faces.shot import ShotSelection
from fusionray.swap.base import SourceIdentity
from fusionray.types import Chunk, VideoInfo


class DetectActor:
    """Ray actor: decode a chunk's read range and detect faces (fractional GPU or CPU)."""

    def __init__(self, config: RenderConfig, threads: int) -> None:
        self.stage = DetectStage(config, threads=threads)

    def detect(self, info: VideoInfo, chunk: Chunk) -> DetectResult:
        return self.stage(info, chunk)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


class SwapActor:
    """Ray actor: render a chunk (`RenderStage`: decode its read range once, detect unless a
    pre-pass did, track, select, swap, encode a segment)."""

    def __init__(self, config: RenderConfig, threads: int) -> None:
        self.stage = RenderStage(config, threads=threads)

    def render(
        self, info: VideoInfo, chunk: Chunk, source: SourceIdentity | SourceSet,
        detected: DetectResult | None = None, shot: ShotSelection | None = None,
    ) -> ChunkResult:
        # The source identity comes with each call (an ObjectRef the driver holds, read
        # zero-copy from the node's object store) rather than with the constructor, so a
        # restarted actor never depends on a constructor argument that went out of scope.
        return self.stage(info, chunk, source, detected, shot)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


@dataclass(frozen=True)
class PoolSizes:
    """Resolved actor counts for one job."""

    detect: int
    swap: int


def resolve_pool_sizes(cluster: ClusterConfig, resources: dict[str, float]) -> PoolSizes:
    """Turn `replicas: 0` (auto) into counts and check the pools fit the cluster (pure).

    Args:
        cluster: the pools' settings.
        resources: `ray.cluster_resources()`, e.g. {"CPU": 16.0, "GPU": 2.0}.

    Raises:
        ConfigError: if the requested actors need more CPUs or GPUs than the cluster has, since
            Ray would otherwise wait forever for resources that never come.
    """
    cpus = resources.get("CPU", 0.0)
    gpus = resources.get("GPU", 0.0)
    detect = cluster.detect.replicas or 1
    swap = cluster.swap.replicas
    if swap == 0:
        free_cpus = cpus - detect * cluster.detect.num_cpus
        by_cpu = math.floor(free_cpus / cluster.swap.num_cpus + 1e-9)
        if cluster.swap.num_gpus > 0:
            free_gpus = gpus - detect * cluster.detect.num_gpus
            by_cpu = min(by_cpu, math.floor(free_gpus / cluster.swap.num_gpus + 1e-9))
        swap = max(1, by_cpu)
    need_cpus = detect * cluster.detect.num_cpus + swap * cluster.swap.num_cpus
    need_gpus = detect * cluster.detect.num_gpus + swap * cluster.swap.num_gpus
    if need_cpus > cpus + 1e-9:
        raise ConfigError(
            f"Invalid cluster pools: {detect} detect x {cluster.detect.num_cpus} CPU + {swap} swap "
            f"x {cluster.swap.num_cpus} CPU = {need_cpus:g} CPU, but the cluster has {cpus:g}; "
            "lower cluster.*.replicas or cluster.*.num_cpus"
        )
    if need_gpus > gpus + 1e-9:
        raise ConfigError(
            f"Invalid cluster pools: {detect} detect x {cluster.detect.num_gpus} GPU + {swap} swap "
            f"x {cluster.swap.num_gpus} GPU = {need_gpus:g} GPU, but the cluster has {gpus:g}; "
            "set cluster.*.num_gpus=0 on a machine without GPUs"
        )
    return PoolSizes(detect=detect, swap=swap)


class ActorPool:
    """A fixed set of actors; `pick()` returns the one with the fewest tasks in flight."""

    def __init__(self, actors: list[Any]) -> None:
        self.actors = actors
        self.load = [0] * len(actors)

    def pick(self) -> int:
        return min(range(len(self.actors)), key=lambda i: self.load[i])

    def __len__(self) -> int:
        return len(self.actors)


def _options(pool: PoolConfig) -> dict[str, Any]:
    return {
        "num_cpus": pool.num_cpus,
        "num_gpus": pool.num_gpus,
        "max_restarts": pool.max_restarts,
        # Chunks are retried by the driver, which counts attempts and names the chunk that
        # failed; Ray-level task retries would hide that.
        "max_task_retries": 0,
    }


def start_pools(config: RenderConfig, sizes: PoolSizes) -> tuple[ActorPool, ActorPool]:
    """Create the detect and swap actors (Ray must be initialised)."""
    detect_cls = ray.remote(DetectActor)
    swap_cls = ray.remote(SwapActor)
    cluster = config.cluster
    detect = [
        detect_cls.options(**_options(cluster.detect)).remote(
            config, thread_count(cluster.detect.num_cpus))
        for _ in range(sizes.detect)
    ]
    swap = [
        swap_cls.options(**_options(cluster.swap)).remote(
            config, thread_count(cluster.swap.num_cpus))
        for _ in range(sizes.swap)
    ]
    return ActorPool(detect), ActorPool(swap)
