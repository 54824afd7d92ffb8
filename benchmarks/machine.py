"""The machine a benchmark ran on, as one line every benchmark prints above its tables.

Figures hold only for the machine that produced them (absolute times only on the GPU node),
so each table names it: CPU model, usable cores, memory, GPU, the library versions that set
the speed, and the load average when the run began (a shared VM's neighbours show there).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def gpu_description() -> str:
    """Each GPU's name, memory and driver (nvidia-smi), or why there is none to name."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "no GPU (no nvidia-smi)"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listed = subprocess.run(
            [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        if listed:
            return listed.replace("\n", "; ")
    return "no GPU (nvidia-smi lists none)"


def machine_line() -> str:
    """`machine: ...`, one line (imports onnxruntime and PyAV to name their versions)."""
    import av
    import onnxruntime
    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    codec = ".".join(map(str, av.library_versions["libavcodec"]))
    return (f"machine: {platform.node()} {platform.machine()}, {cpu_model()}, "
            f"{os.cpu_count()} CPUs ({usable} usable), "
            f"{psutil.virtual_memory().total / 2**30:.1f} GiB, {gpu_description()}; "
            f"{platform.system()} {platform.release()}, Python {sys.version.split()[0]}, "
            f"onnxruntime {onnxruntime.__version__}, PyAV {av.__version__} (libavcodec "
            f"{codec}); load average {load:.1f} at start")
