"""Pixel-boost cost per face: model calls, sub-images and milliseconds, per boost size.

Uses a cost-equivalent inswapper stand-in (`../shared/tools/build_inswapper_standin.py`: same
graph and cost as inswapper_128, random weights) found as `inswapper_128.onnx` in
`--model-dir`, opened as a read-only shared model folder (so the real contract check, emap
loading and session factory run). fusionray's own swap path runs on the astronaut with a real
BlazeFace detection: align at N, split into (N/128)² sub-images, the ONNX calls, interleave,
paste-back. The time outside the model (align, split, interleave, mask, paste) is reported
apart, so the figure for a GPU, where the model call is milliseconds, can be read off.

    python ../shared/tools/build_inswapper_standin.py -o /tmp/standin/inswapper_128.onnx
    .venv/bin/python benchmarks/bench_pixel_boost.py --model-dir /tmp/standin \
        [--sizes 128,256,512] [--faces 2] [--threads 2] [--providers cpu]

Timing only: the stand-in says nothing about swap quality.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class _TimedRunner:
    """Wraps the engine's ModelRunner: counts calls and sub-images, sums seconds inside."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.calls = 0
        self.rows = 0
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)

    def run(self, *inputs: Any) -> Any:
        started = time.perf_counter()
        result = self.runner.run(*inputs)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        self.rows += int(inputs[0].shape[0])
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True,
                        help="folder with the stand-in as inswapper_128.onnx")
    parser.add_argument("--sizes", default="128,256,512", help="pixel_boost values to time")
    parser.add_argument("--faces", type=int, default=2, help="timed faces per size")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads")
    parser.add_argument("--providers", default="cpu", help="comma-separated short names")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import cv2
    import numpy as np
    import skimage.data

    from fusionray.faces.blazeface import BlazeFaceDetector
    from fusionray.models.loader import ModelOptions
    from fusionray.swap.base import SourceIdentity
    from fusionray.swap.inswapper import InswapperSwapper

    # The stand-in is by design not the published inswapper file: its pins cannot match.
    options = ModelOptions(providers=tuple(args.providers.split(",")), threads=args.threads,
                           shared_dirs=(args.model_dir,), offline=True, allow_unverified=True)
    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    face = BlazeFaceDetector(model="back").detect(image)[0]  # Default model cache.
    vector = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    source = SourceIdentity(crop=None, crop_size=128, image_count=1,
                            embedding=vector / np.linalg.norm(vector))
    print(f"{'pixel_boost':>11} {'calls':>5} {'sub-images':>10} {'ms/face':>9} "
          f"{'model ms':>9} {'other ms':>9}  provider")
    for size in (int(value) for value in args.sizes.split(",")):
        swapper = InswapperSwapper(options=options, pixel_boost=size)
        timed = _TimedRunner(swapper.runner)
        swapper.runner = timed  # type: ignore[assignment]
        swapper.swap(image, [face], source)  # Warm-up (session, buffers).
        totals, model, calls, rows = [], [], 0, 0
        for _ in range(args.faces):
            timed.calls = timed.rows = 0
            timed.seconds = 0.0
            started = time.perf_counter()
            swapper.swap(image, [face], source)
            totals.append(time.perf_counter() - started)
            model.append(timed.seconds)
            calls, rows = timed.calls, timed.rows
        total_ms = 1000 * statistics.median(totals)
        model_ms = 1000 * statistics.median(model)
        print(f"{size:>11} {calls:>5} {rows:>10} {total_ms:>9.0f} {model_ms:>9.0f} "
              f"{total_ms - model_ms:>9.1f}  {swapper.provider}")


if __name__ == "__main__":
    main()
