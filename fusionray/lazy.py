"""Deferred imports: a stand-in for a module that imports it on first use.

`import ray` costs about 0.25 s of CPU (2-core machine), and a job rendered in the driver
(`fusionray.jobs.inline`: a short clip, the last chunk of a resumed job) never touches Ray.
The modules on that path (`jobs.pipeline`, `jobs.scheduler`, `jobs.ray_session`,
`actors.pools`) therefore take Ray from here (`from fusionray.lazy import ray`): type checkers
see the real module, and the import happens at the first `ray.<name>`, which only the Ray path
reaches. Whether Ray is running is asked with `ray_connected`, which never imports it.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any


class LazyModule:
    """Module `name`, imported when one of its attributes is first read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        # Only called for names this object does not have itself, i.e. the module's (its
        # own, read before `__init__` set them, as copy and pickle do, are not).
        if attribute in ("_name", "_module"):
            raise AttributeError(attribute)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<LazyModule {self._name!r} ({state})>"


if TYPE_CHECKING:
    import ray as ray
else:
    ray = LazyModule("ray")


def imported_ray_attribute(name: str) -> Any | None:
    """`ray.<name>` where this process has imported Ray, else None; never imports it.

    Also None while another thread is still importing Ray (a Ray being started beside this
    process's work: `fusionray.jobs.inline`): the module is in `sys.modules` before it holds
    its attributes.
    """
    return getattr(sys.modules.get("ray"), name, None)


def ray_connected() -> bool:
    """Whether this process is connected to a Ray (a sweep's, a test's, its own, or a Ray
    worker's), without importing Ray: a process that never imported it is not connected, nor
    is one still importing it, since `ray.init` comes after the import."""
    is_initialized = imported_ray_attribute("is_initialized")
    return is_initialized is not None and bool(is_initialized())
