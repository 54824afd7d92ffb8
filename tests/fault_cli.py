"""`python -m tests.fault_cli HOOKS.json +video=... [overrides]`: the render CLI exactly as
users run it, with the render stage of `tests.fault_stages` injecting the faults of HOOKS.json
(see there). The hooks are read once, here in the driver; the production entry point has no
hook of its own."""

from __future__ import annotations

import functools
import json
import signal
import sys
from pathlib import Path

import fusionray.jobs.pipeline as pipeline
from fusionray.jobs.render import main
from tests.fault_stages import faulty_stages

if __name__ == "__main__":
    # Ctrl-C reaches the driver even where the test run itself ignores SIGINT: a shell starts
    # a background command (`pytest ... &`) with SIGINT ignored, its children inherit that,
    # and Python then installs no KeyboardInterrupt handler (the interrupted-driver test
    # failed every time the suite ran in the background, and passed in the foreground).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hooks = json.loads(Path(sys.argv.pop(1)).read_text())
    pipeline.render = functools.partial(
        pipeline.render, stage_classes=faulty_stages(**hooks))
    main()
