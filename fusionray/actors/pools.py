"""Ray actors around the stages, the pure plan that sizes each pool, and the pools that keep
their members alive, fed and on live nodes.

Each actor acquires its resources (ONNX Runtime sessions, swapper state) once in `__init__` and
then runs one stage per call. The stage class is a constructor argument: production passes
`StageClasses()`; fault tests pass subclasses defined under tests/, so no test hook sits on the
production path.

A member that fails is not picked again until a ping says it is back (Ray restarted it); one
whose restarts are used up leaves the pool and is replaced when the cluster has room. Elastic
pools (studio) also start actors as nodes join and drop the actors of nodes that leave.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fusionray.actors.render_stage import RenderStage
from fusionray.actors.stages import DetectStage
from fusionray.config import ClusterConfig, PoolConfig, RenderConfig
from fusionray.errors import ConfigError, RenderError
from fusionray.lazy import ray  # imported on first use (fusionray.lazy)
from fusionray.models.device import gpu_isolation_options

log = logging.getLogger("fusionray")

PoolKind = Literal["detect", "render"]


@dataclass(frozen=True)
class StageClasses:
    """The plain stage classes the pools' actors instantiate (the fault-injection seam)."""

    detect: type = DetectStage
    """Detection pre-pass: `(info, chunk) -> DetectResult`."""
    render: type = RenderStage
    """Whole-chunk render: `(info, chunk, source, detected=None, shot=None) -> ChunkResult`."""


class StageActor:
    """Ray actor holding one stage instance; `run` maps a chunk to the stage's result."""

    def __init__(self, stage_class: type, config: RenderConfig, threads: int,
                 cores: tuple[int, ...] = ()) -> None:
        """`cores`: the CPUs this actor keeps to (`core_sets`; empty: wherever the OS puts
        it). Set before the stage opens anything, so the decoder, encoder and inference
        threads it starts inherit them; a restarted actor gets the same cores."""
        keep_to_cores(cores)
        self.stage = stage_class(config, threads=threads)

    def run(self, *args: Any) -> Any:
        return self.stage(*args)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


class DetectActor(StageActor):
    """Detection pre-pass actor (only when shot-level selection needs every detection first)."""


class RenderActor(StageActor):
    """Render actor: one call decodes, detects, swaps and encodes a whole chunk."""


# --- sizing (pure) ---------------------------------------------------------------------------


def actor_bundle(pool: PoolConfig) -> dict[str, float]:
    """The resources one actor of `pool` reserves, in Ray's units."""
    bundle = {"CPU": float(pool.num_cpus)}
    if pool.num_gpus > 0:
        bundle["GPU"] = float(pool.num_gpus)
    return bundle


def actor_options(pool: PoolConfig, *, hide_gpus: bool) -> dict[str, Any]:
    """The Ray options of `pool`'s actors (pure).

    `hide_gpus`: the cluster has (or the job asks for) GPUs, so an actor reserving none gets
    an empty `CUDA_VISIBLE_DEVICES` (`gpu_isolation_options`): Ray 2.60 no longer narrows it,
    and fusionray's own sessions and decoders already stay on CPU in such an actor
    (`plan_device`), but a library loaded beside them would still see every card. Without
    GPUs the actors get no runtime env, so they take the workers Ray prestarts (a runtime env
    needs workers of its own: about 0.4 s more per actor start on the 2-core machine).
    """
    options: dict[str, Any] = {
        "num_cpus": pool.num_cpus, "num_gpus": pool.num_gpus,
        "max_restarts": pool.max_restarts,
        # Chunks are retried by the driver, which counts attempts and names the chunk that
        # failed; Ray-level task retries would hide that.
        "max_task_retries": 0}
    if hide_gpus:
        options.update(gpu_isolation_options(pool.num_gpus))
    return options


def job_uses_gpus(cluster: ClusterConfig, resources: Mapping[str, float]) -> bool:
    """Whether GPUs are in play (pure): the cluster's `resources` hold some, or a pool of the
    job reserves a share (an elastic cluster's GPU nodes may not have joined yet)."""
    return (resources.get("GPU", 0.0) > 0 or cluster.swap.num_gpus > 0
            or cluster.detect.num_gpus > 0)


def bundles_that_fit(resources: Mapping[str, float], bundle: Mapping[str, float]) -> int:
    """How many copies of `bundle` fit in `resources` (a cluster-wide sum; pure)."""
    return min(math.floor(resources.get(name, 0.0) / amount + 1e-9)
               for name, amount in bundle.items() if amount > 0)


@dataclass(frozen=True)
class PoolPlan:
    """How many actors one pool starts, and the threads each one runs."""

    actors: int
    """Actors to start now (what the free resources hold, at most `target`)."""
    target: int
    """Actors the pool wants: it grows toward this as resources appear."""
    threads: int
    """Inference, OpenCV, decode and encode threads per actor."""

    @property
    def missing(self) -> int:
        """Actors the cluster cannot hold yet (asked of the autoscaler when elastic)."""
        return self.target - self.actors


def plan_pool(
    pool: PoolConfig, cluster: ClusterConfig, free: Mapping[str, float], *, kind: PoolKind,
    node_cpus: float | None = None, chunks: int | None = None,
) -> PoolPlan:
    """Size one pool from the cluster's free resources (pure).

    No pool gets more actors than `max_chunks_in_flight`, or the job's `chunks`, can keep busy
    (a 48-frame clip is one chunk: one actor on every core, not two actors on one core each,
    one of them idle). `replicas: 0` means as
    many as fit (elastic: as many as the chunks in flight keep busy, requested from the
    autoscaler). On CPU-only pools the actors' threads together cover the free cores (1 actor
    on 2 free cores runs 2 threads), never more than one node holds; GPU pools keep the
    threads they reserve, since the model runs on the card.

    Args:
        pool: the pool's settings (`cluster.detect` or `cluster.swap`).
        cluster: the job's cluster settings.
        free: `ray.available_resources()`, e.g. {"CPU": 16.0, "GPU": 2.0}.
        kind: which pool, for messages.
        node_cpus: CPUs of the largest node (None: no bound beyond `free`).
        chunks: chunks the pool has to run (None: not known; no bound beyond the in-flight
            limit).

    Raises:
        ConfigError: a fixed pool needs more than the cluster has free (Ray would otherwise
            wait forever); elastic pools never raise, they wait for the autoscaler.
    """
    bundle = actor_bundle(pool)
    fit = bundles_that_fit(free, bundle)
    limit = cluster.max_chunks_in_flight
    if chunks is not None:
        limit = max(1, min(limit, chunks))
    if pool.replicas:
        target = min(pool.replicas, limit)
    else:
        target = limit if cluster.elastic else min(limit, max(1, fit))
    actors = min(target, fit)
    if actors < target and not cluster.elastic:
        key = "swap" if kind == "render" else "detect"
        for name, hint in (("CPU", f"lower cluster.{key}.replicas or cluster.{key}.num_cpus"),
                           ("GPU", f"set cluster.{key}.num_gpus=0 on a machine without GPUs")):
            need = target * bundle.get(name, 0.0)
            if need > free.get(name, 0.0) + 1e-9:
                raise ConfigError(
                    f"Invalid cluster pools: {target} {kind} x {bundle[name]:g} {name} = "
                    f"{need:g} {name}, but the cluster has {free.get(name, 0.0):g} free; "
                    f"{hint}, or set cluster.elastic=true to wait for the autoscaler")
    reserved = math.ceil(pool.num_cpus)
    threads = reserved
    if pool.num_gpus == 0 and actors:
        share = math.floor(free.get("CPU", 0.0) / actors + 1e-9)
        if node_cpus is not None:
            share = min(share, math.floor(node_cpus + 1e-9))
        threads = max(reserved, share)
    return PoolPlan(actors=actors, target=max(target, 1), threads=max(1, threads))


def keep_to_cores(cores: tuple[int, ...]) -> None:
    """Keep the calling thread to `cores` (a `core_sets` entry; (): leave it where it is). The
    threads it starts afterwards (a stage's decoder, encoder and inference threads) inherit
    them, so call it before the stage opens anything."""
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)  # 0: this thread only


def core_sets(cpus: Sequence[int], actors: int, threads: int) -> tuple[tuple[int, ...], ...]:
    """Each actor's own cores, when `actors` actors of `threads` threads fill `cpus` (this
    machine's) exactly; () otherwise (pure).

    Unpinned, two one-core render actors on the 2-core machine migrate between the cores and
    lose their warm caches: the chunks took 4 % longer (benchmarks/RESULTS.md). Only a pool
    that fills the machine is pinned: pinning part of it would put another job's pinned actors
    on the same cores while others idle, and a single actor has nothing to keep apart from.
    """
    ordered = sorted(cpus)
    if actors < 2 or threads < 1 or actors * threads != len(ordered):
        return ()
    return tuple(tuple(ordered[i * threads:(i + 1) * threads]) for i in range(actors))


# --- the pool --------------------------------------------------------------------------------


@dataclass(eq=False)
class Member:
    """One actor of a pool, as the scheduler sees it."""

    name: str
    actor: Any
    state: Literal["starting", "ready", "suspect"] = "starting"
    """starting/suspect: not given chunks until its ping answers."""
    node_id: str | None = None
    failures: int = 0
    """Deaths seen (each uses up one of Ray's `max_restarts`)."""
    queue: list[ray.ObjectRef] = field(default_factory=list)
    """Calls in flight on it, in submission order (an actor runs them one after another)."""
    head_since: float = 0.0
    """When the call at the head of `queue` started (monotonic seconds)."""
    chunks: int = 0
    """Calls that finished on it."""
    slot: int = 0
    """Which of the pool's core sets it keeps to (`ActorPool.cores`), if any."""


class ActorPool:
    """The live members of one pool; `pick()` returns the ready one with the fewest calls."""

    def __init__(
        self, kind: PoolKind, stage_class: type, config: RenderConfig, pool: PoolConfig,
        plan: PoolPlan, *, cores: tuple[tuple[int, ...], ...] = (), hide_gpus: bool = False,
    ) -> None:
        """`cores`: one core set per actor slot (`core_sets`), or () for no pinning;
        `hide_gpus`: see `actor_options`."""
        self.kind = kind
        self.cores = cores
        self.config = config
        self.pool = pool
        self.plan = plan
        self.stage_class = stage_class
        self.members: list[Member] = []
        self.all_members: list[Member] = []
        """Every member ever started (for the nodes used, after the pool is shut down)."""
        self.pings: dict[ray.ObjectRef, Member] = {}
        self.events: list[str] = []
        """What happened to the members (started on, gone for good, restarted), for run.json."""
        self.chunks_by_member: dict[str, int] = {}
        self.start_failures = 0
        self._started = 0
        self._nodes_checked = 0.0
        actor_class = DetectActor if kind == "detect" else RenderActor
        self._remote = ray.remote(actor_class).options(**actor_options(pool, hide_gpus=hide_gpus))

    def __len__(self) -> int:
        return len(self.members)

    def _note(self, message: str) -> None:
        self.events.append(message)
        log.warning("%s", message)

    def add(self) -> Member:
        """Start one actor; it takes chunks once its ping answers."""
        name = f"{self.kind}-{self._started}"
        self._started += 1
        # A replacement takes the core set its predecessor left.
        held = {member.slot for member in self.members}
        slot = min(set(range(len(self.members) + 1)) - held)
        cores = self.cores[slot] if slot < len(self.cores) else ()
        actor = self._remote.remote(self.stage_class, self.config, self.plan.threads, cores)
        member = Member(name=name, actor=actor, slot=slot)
        self.members.append(member)
        self.all_members.append(member)
        self.pings[actor.node_id.remote()] = member  # type: ignore[attr-defined]
        return member

    def start(self) -> None:
        """Start the planned actors and wait until each has loaded its models.

        Raises:
            RenderError: an actor's constructor raised (its own message, one line).
        """
        from fusionray.jobs.ray_session import actor_start_failure

        for _ in range(self.plan.actors):
            self.add()
        try:
            nodes = ray.get(list(self.pings))
        except ray.exceptions.RayActorError as error:
            raise RenderError(f"A render actor could not start: {actor_start_failure(error)}"
                              ) from None
        for (ref, member), node in zip(list(self.pings.items()), nodes, strict=True):
            member.node_id, member.state = node, "ready"
            del self.pings[ref]

    def ready(self) -> list[Member]:
        return [m for m in self.members if m.state == "ready"]

    def pick(self, *, avoid: str | None = None, per_member: int = 1) -> Member | None:
        """The ready member with the fewest calls in flight (below `per_member`); one named
        `avoid` (where the chunk just failed or hung) only when no other is ready."""
        ready = [m for m in self.ready() if len(m.queue) < per_member]
        others = [m for m in ready if m.name != avoid] or ready
        return min(others, key=lambda m: len(m.queue), default=None)

    def handle_ping(self, ref: ray.ObjectRef) -> None:
        """A member answered (ready again, on the node it names) or failed to start."""
        from fusionray.jobs.ray_session import actor_start_failure

        member = self.pings.pop(ref)
        if member not in self.members:
            return
        try:
            member.node_id = ray.get(ref)
        except ray.exceptions.RayActorError as error:
            if member.state == "starting":
                self.start_failures += 1
                self._remove(member, f"could not start: {actor_start_failure(error)}")
            else:
                self.actor_died(member)
            return
        if member.state == "starting":
            self._note(f"{member.name} started on node {member.node_id}")
        member.state, member.head_since = "ready", time.monotonic()

    def actor_died(self, member: Member) -> None:
        """A call failed because the actor died: count one restart, or drop it for good."""
        if member.state == "suspect" or member not in self.members:
            return  # the same death, seen by another of its calls
        member.failures += 1
        restarts = self.pool.max_restarts
        if 0 <= restarts < member.failures:
            self._remove(member, f"gone for good ({restarts} restart(s) used up)")
            return
        member.state = "suspect"
        self.pings[member.actor.node_id.remote()] = member

    def restart(self, member: Member, reason: str) -> None:
        """Kill a member's process so Ray restarts it (a hung chunk); drop it if no restart
        is left."""
        self._note(f"{member.name} restarted: {reason}")
        ray.kill(member.actor, no_restart=False)
        self.actor_died(member)

    def _remove(self, member: Member, reason: str) -> None:
        self.members.remove(member)
        self._note(f"{member.name} left the pool: {reason}")
        ray.kill(member.actor, no_restart=True)

    def finished(self, member: Member) -> None:
        member.chunks += 1
        self.chunks_by_member[member.name] = member.chunks

    def maintain(self, *, poll_seconds: float = 2.0) -> None:
        """Every `poll_seconds`: drop members of nodes that left (elastic), and start actors
        toward the plan's target where the cluster has free room (a replacement for one gone
        for good, or the actors of a node that joined)."""
        now = time.monotonic()
        if now - self._nodes_checked < poll_seconds:
            return
        self._nodes_checked = now
        if self.config.cluster.elastic:
            alive = {node["NodeID"] for node in ray.nodes() if node.get("Alive")}
            for member in [m for m in self.members if m.node_id and m.node_id not in alive]:
                self._remove(member, f"its node {member.node_id} left the cluster")
        if self.start_failures >= 3:
            return  # replacements keep failing to start: stop asking
        starting = sum(1 for m in self.members if m.state == "starting")
        room = bundles_that_fit(ray.available_resources(), actor_bundle(self.pool))
        for _ in range(min(room - starting, self.plan.target - len(self.members))):
            self.add()

    def shutdown(self) -> None:
        """Kill every member (Ray gives their resources back a moment later: `release`)."""
        for member in self.members:
            ray.kill(member.actor, no_restart=True)
        self.members.clear()
        self.pings.clear()

    def release(self, timeout_seconds: float = 10.0) -> None:
        """`shutdown`, then wait (bounded) until Ray has given the members' resources back, so
        whatever starts next on this Ray (the next pool, the next job of a sweep) is sized
        from the whole cluster. Ray frees a killed actor's resources asynchronously; read too
        soon, `ray.available_resources()` still counts them as held.
        """
        # Only members that answered hold their resources for sure: an actor still waiting
        # for room (elastic) or restarting holds none, and waiting for its share would only
        # run out the timeout.
        held = sum(1 for member in self.members if member.state == "ready")
        if not held:
            self.shutdown()
            return
        bundle = actor_bundle(self.pool)
        before = ray.available_resources()
        total = ray.cluster_resources()
        # Never wait for more than the cluster has (another job may free or take resources
        # meanwhile; the timeout bounds that case).
        want = {name: min(total.get(name, 0.0), before.get(name, 0.0) + amount * held) - 1e-6
                for name, amount in bundle.items()}
        self.shutdown()
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            free = ray.available_resources()
            if all(free.get(name, 0.0) >= amount for name, amount in want.items()):
                return
            time.sleep(0.05)
        log.debug("%s pool: resources not back after %.0f s (want %s, free %s)", self.kind,
                  timeout_seconds, want, dict(ray.available_resources()))


def request_from_autoscaler(pool: PoolConfig, count: int) -> None:
    """Ask an autoscaling cluster for room for `count` actors of `pool` (count 0 withdraws the
    request). A cluster without an autoscaler ignores it."""
    from ray.autoscaler.sdk import request_resources

    try:
        request_resources(bundles=[actor_bundle(pool)] * count)
    except Exception as error:  # advisory only: a cluster without an autoscaler refuses it
        log.debug("request_resources failed: %s", error)


def largest_node_cpus() -> float | None:
    """CPUs of the largest alive node (None when Ray reports none)."""
    cpus = [float(node["Resources"].get("CPU", 0.0)) for node in ray.nodes()
            if node.get("Alive")]
    return max(cpus, default=None)


def start_pool(
    kind: PoolKind, config: RenderConfig, stage_class: type, *,
    chunks: int | None = None, say: Any = print, own_node: bool = False,
) -> ActorPool:
    """Plan a pool from the free resources and start it (Ray must be initialised); `chunks`:
    how many chunks it will run (`plan_pool`); `own_node`: Ray is this job's own, on this
    machine, so with `cluster.pin_cpus` a CPU pool that fills it keeps each actor on its own
    cores (`core_sets`).

    Elastic pools ask the autoscaler for the actors that do not fit and wait at most
    `cluster.resource_wait_seconds` for the first one, saying what they wait for.

    Raises:
        ConfigError: a fixed pool does not fit. RenderError: an actor could not start, or no
            room for one actor came within the wait.
    """
    cluster = config.cluster
    pool = cluster.detect if kind == "detect" else cluster.swap
    plan = plan_pool(pool, cluster, ray.available_resources(), kind=kind,
                     node_cpus=largest_node_cpus(), chunks=chunks)
    if cluster.elastic and plan.missing:
        request_from_autoscaler(pool, plan.target)
        deadline = time.monotonic() + cluster.resource_wait_seconds
        next_say = 0.0
        while plan.actors == 0:
            now = time.monotonic()
            if now >= deadline:
                raise RenderError(
                    f"No room for one {kind} actor ({actor_bundle(pool)}) after waiting "
                    f"{cluster.resource_wait_seconds:g} s (cluster.resource_wait_seconds); "
                    f"free now: {dict(ray.available_resources())}")
            if now >= next_say:
                say(f"fusionray: waiting for {plan.target} {kind} actor(s) of "
                    f"{actor_bundle(pool)} (free now: {dict(ray.available_resources())}; "
                    f"up to {deadline - now:.0f} s more)")
                next_say = now + 10.0
            time.sleep(1.0)
            plan = plan_pool(pool, cluster, ray.available_resources(), kind=kind,
                             node_cpus=largest_node_cpus(), chunks=chunks)
    cores: tuple[tuple[int, ...], ...] = ()
    if own_node and cluster.pin_cpus and pool.num_gpus == 0 and hasattr(os, "sched_getaffinity"):
        cores = core_sets(tuple(os.sched_getaffinity(0)), plan.actors, plan.threads)
    actors = ActorPool(kind, stage_class, config, pool, plan, cores=cores,
                       hide_gpus=job_uses_gpus(cluster, ray.cluster_resources()))
    actors.start()
    return actors
