"""Which GPU this process may use, and how much of it.

Ray decides: an actor that reserved `num_gpus > 0` gets GPU ids (`ray.get_gpu_ids()`) and Ray
sets `CUDA_VISIBLE_DEVICES` to them before the actor starts. Ray 2.60 no longer touches
`CUDA_VISIBLE_DEVICES` for an actor that reserved no GPU, so such an actor still *sees* every
card of its node; it must not open CUDA or TensorRT at all, or it would take GPU 0 outside
Ray's accounting. Outside Ray (the sequential benchmark loop, a notebook) the process owns
whatever `CUDA_VISIBLE_DEVICES` leaves it.

`plan_device` is the pure decision; `probe_assignment` and `probe_cards` read the facts.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fusionray.lazy import ray, ray_connected  # Ray imported on first use


@dataclass(frozen=True)
class GpuCard:
    """One NVIDIA card of this node, as the driver reports it."""

    index: int
    """The driver's (nvidia-smi) index of the card."""
    uuid: str
    """`GPU-...` identifier; CUDA_VISIBLE_DEVICES may name cards by it."""
    name: str
    """Marketing name, e.g. `NVIDIA H200`."""
    memory_bytes: int
    """Total memory of the card in bytes."""
    compute_capability: str
    """CUDA compute capability, e.g. `9.0`."""


@dataclass(frozen=True)
class GpuAssignment:
    """What the process was given (the facts `plan_device` decides from)."""

    in_ray_worker: bool
    """True inside a Ray task or actor; False for a driver or a plain process."""
    gpu_ids: tuple[str, ...] = ()
    """`ray.get_gpu_ids()` as strings: the node's GPU ids (or UUIDs) Ray assigned."""
    gpu_fraction: float = 0.0
    """GPUs the worker reserved (`num_gpus`, e.g. 0.5); 0 outside Ray."""
    visible_devices: tuple[str, ...] | None = None
    """`CUDA_VISIBLE_DEVICES` split on commas; None when unset (every card visible)."""


@dataclass(frozen=True)
class DevicePlan:
    """The GPU a process's sessions use, or why they use none."""

    device_id: int | None
    """CUDA device ordinal as this process sees it (after CUDA_VISIBLE_DEVICES); None = no GPU
    may be used."""
    card: GpuCard | None = None
    """The card behind `device_id`, when the driver could be asked."""
    fraction: float = 1.0
    """Share of the card this process may use, in (0, 1]."""
    reason: str = ""
    """Why no GPU (when `device_id` is None), or a note on the choice."""

    @property
    def memory_share_bytes(self) -> int | None:
        """The process's share of the card's memory in bytes (None when the card is unknown)."""
        if self.card is None:
            return None
        return int(self.card.memory_bytes * self.fraction)


NO_DEVICE_HIDDEN = "CUDA_VISIBLE_DEVICES hides every GPU"
NO_DEVICE_NOT_ASSIGNED = "no GPU assigned to this Ray actor (its pool has num_gpus: 0)"
NO_DEVICE_NO_CARD = "no NVIDIA GPU on this machine"


def parse_visible_devices(value: str | None) -> tuple[str, ...] | None:
    """`CUDA_VISIBLE_DEVICES` as a tuple of entries; None when unset; () when it hides all."""
    if value is None:
        return None
    value = value.strip()
    if value in ("", "-1", "NoDevFiles"):
        return ()
    return tuple(entry.strip() for entry in value.split(",") if entry.strip())


def plan_device(assignment: GpuAssignment, cards: Sequence[GpuCard]) -> DevicePlan:
    """Decide which CUDA device (if any) this process's sessions may use (pure).

    Args:
        assignment: what Ray (or the environment) gave the process.
        cards: the node's cards (`probe_cards`); may be empty when no driver answers, in which
            case a Ray-assigned GPU is still used, only its memory is unknown.

    Returns:
        The plan. In a Ray worker: the first assigned GPU, as the ordinal it has among the
        process's visible devices, with the worker's fraction (capped at 1). Outside Ray:
        device 0 of what is visible, whole.
    """
    visible = assignment.visible_devices
    if visible == ():
        return DevicePlan(device_id=None, reason=NO_DEVICE_HIDDEN)
    if assignment.in_ray_worker:
        if not assignment.gpu_ids or assignment.gpu_fraction <= 0:
            return DevicePlan(device_id=None, reason=NO_DEVICE_NOT_ASSIGNED)
        chosen = assignment.gpu_ids[0]
        note = (f"{len(assignment.gpu_ids)} GPUs assigned; sessions use the first"
                if len(assignment.gpu_ids) > 1 else "")
        # Ray sets CUDA_VISIBLE_DEVICES to the assigned ids, so the chosen card is the process's
        # device at its position there; where something else set the variable first, Ray's ids
        # are entries of it as well.
        device_id = visible.index(chosen) if visible and chosen in visible else (
            int(chosen) if visible is None and chosen.isdigit() else 0)
        fraction = min(1.0, assignment.gpu_fraction)
        return DevicePlan(device_id=device_id, card=_find_card(chosen, cards),
                          fraction=fraction, reason=note)
    if not cards:
        return DevicePlan(device_id=None, reason=NO_DEVICE_NO_CARD)
    first = visible[0] if visible else "0"
    return DevicePlan(device_id=0, card=_find_card(first, cards) or cards[0], fraction=1.0)


def _find_card(entry: str, cards: Sequence[GpuCard]) -> GpuCard | None:
    """The card a CUDA_VISIBLE_DEVICES / Ray id entry names (an index or a UUID prefix)."""
    for card in cards:
        if entry.isdigit() and card.index == int(entry):
            return card
        if not entry.isdigit() and card.uuid.startswith(entry):
            return card
    return None


def memory_limit_bytes(plan: DevicePlan, *, limit_mb: int, usable: float) -> int | None:
    """The CUDA arena cap (`gpu_mem_limit`) for one session of this process (pure).

    Args:
        plan: the device plan.
        limit_mb: a fixed cap in MiB; 0 = from the plan's fraction of the card.
        usable: share of the process's slice the arena may take, in (0, 1].

    Returns:
        Bytes, or None for no cap (no GPU, or the card's memory is unknown and no fixed cap).
    """
    if plan.device_id is None:
        return None
    if limit_mb > 0:
        return limit_mb * 1024 * 1024
    share = plan.memory_share_bytes
    if share is None:
        return None
    # Whole MiB: ORT parses the option as an integer, and a round figure reads well in logs.
    return max(1, math.floor(share * usable / 2**20)) * 2**20


def probe_assignment(environ: Mapping[str, str] | None = None) -> GpuAssignment:
    """What Ray (or the environment) gave this process."""
    env = os.environ if environ is None else environ
    visible = parse_visible_devices(env.get("CUDA_VISIBLE_DEVICES"))
    # A Ray worker imported Ray before running anything; a process that never imported it
    # (a job rendering in its driver) is not one, and is not made to pay for the import.
    if not ray_connected():
        return GpuAssignment(in_ray_worker=False, visible_devices=visible)
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return GpuAssignment(in_ray_worker=False, visible_devices=visible)
    fraction = float(context.get_assigned_resources().get("GPU", 0.0))
    return GpuAssignment(
        in_ray_worker=True,
        gpu_ids=tuple(str(i) for i in ray.get_gpu_ids()),
        gpu_fraction=fraction,
        visible_devices=visible,
    )


_SMI_FIELDS = "index,uuid,name,memory.total,compute_cap"


def parse_nvidia_smi(text: str) -> tuple[GpuCard, ...]:
    """Cards from `nvidia-smi --query-gpu=index,uuid,name,memory.total,compute_cap
    --format=csv,noheader,nounits` output (memory in MiB); malformed lines are skipped."""
    cards: list[GpuCard] = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 5 or not parts[0].isdigit():
            continue
        try:
            memory_mib = int(float(parts[3]))
        except ValueError:
            continue
        cards.append(GpuCard(index=int(parts[0]), uuid=parts[1], name=parts[2],
                             memory_bytes=memory_mib * 2**20, compute_capability=parts[4]))
    return tuple(cards)


def probe_cards(timeout_seconds: float = 10.0) -> tuple[GpuCard, ...]:
    """This node's NVIDIA cards, every one (nvidia-smi ignores CUDA_VISIBLE_DEVICES); () when
    there is no driver or it does not answer."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        result = subprocess.run(
            [smi, f"--query-gpu={_SMI_FIELDS}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=timeout_seconds, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else ()


def probe_device() -> DevicePlan:
    """The device plan of this process (probes Ray and the driver)."""
    assignment = probe_assignment()
    if assignment.visible_devices == () or (
            assignment.in_ray_worker and not assignment.gpu_ids):
        return plan_device(assignment, ())  # No GPU either way: no need to ask the driver.
    return plan_device(assignment, probe_cards())


def gpu_isolation_options(num_gpus: float) -> dict[str, object]:
    """Extra Ray actor options that hide every GPU from an actor reserving none (pure).

    Ray 2.60 leaves `CUDA_VISIBLE_DEVICES` alone for such actors, and importing
    onnxruntime-gpu already registers its CUDA provider (which initialises the CUDA driver).
    An empty `CUDA_VISIBLE_DEVICES` makes the process see no card at all, the way Ray used
    to; `plan_device` then says `NO_DEVICE_HIDDEN`. The pools merge it into their actors'
    options wherever the job uses GPUs (`fusionray.actors.pools.actor_options`).
    """
    if num_gpus > 0:
        return {}
    return {"runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}}
