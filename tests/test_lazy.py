"""`fusionray.lazy.LazyModule`: the module is imported at the first attribute read, not before."""

from __future__ import annotations

import copy
import subprocess
import sys
import types

import pytest


def run_in_a_fresh_interpreter(script: str) -> None:
    """Run `script` (its own asserts) in a new Python: what it imports is its own business,
    not that of this test process, which has long imported everything."""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_module_is_imported_at_first_use_only() -> None:
    script = ("import sys\n"
              "from fusionray.lazy import LazyModule\n"
              "wave = LazyModule('wave')\n"
              "assert 'wave' not in sys.modules, 'imported too early'\n"
              "assert 'not imported yet' in repr(wave)\n"
              "assert wave.Error is sys.modules['wave'].Error\n"
              "assert 'imported' in repr(wave) and 'yet' not in repr(wave)\n")
    run_in_a_fresh_interpreter(script)


def test_a_copy_made_without_init_does_not_recurse() -> None:
    from fusionray.lazy import LazyModule

    lazy = LazyModule("json")
    assert copy.copy(lazy).dumps([1]) == "[1]"


def test_a_failure_described_in_the_driver_does_not_import_ray() -> None:
    """A chunk that fails in the driver (`fusionray.jobs.inline`) is described with
    `failure_reason`; with Ray never imported there is no Ray wrapper to unwrap, so describing
    it must not import Ray either."""
    script = ("import sys\n"
              "from fusionray.jobs.ray_session import failure_reason\n"
              "assert 'ray' not in sys.modules, 'imported by the module itself'\n"
              "line = failure_reason(ValueError('bad frame\\nmore'))\n"
              "assert line == 'ValueError: bad frame', line\n"
              "assert 'ray' not in sys.modules, 'imported to describe a failure'\n")
    run_in_a_fresh_interpreter(script)


def test_ray_half_imported_on_another_thread_is_neither_connected_nor_unwrapped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the main thread imports Ray to start it, the driver's chunk (on its own thread,
    `fusionray.jobs.inline`) asks whether Ray is connected and describes failures: the module is
    in `sys.modules` without its attributes yet. Both answers must come without an error."""
    from fusionray.jobs.ray_session import failure_reason
    from fusionray.lazy import ray_connected

    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))  # as mid-import
    assert ray_connected() is False
    assert failure_reason(ValueError("bad frame\nmore")) == "ValueError: bad frame"
