"""Per-face cost of the neural swap path on this machine, with a cost-equivalent stand-in.

Builds the random-weight inswapper stand-in (`../shared/tools/build_inswapper_standin.py`:
same graph shape and cost as inswapper_128, weights random, so its output is noise; about
10 s and 554 MB) into a temporary folder, imports it into a temporary model cache as
`inswapper_128` (so the real contract check, emap loading and session factory run), and times
fusionray's own swap path on the astronaut with a real BlazeFace detection: align, the ONNX
call, paste-back (mask, blend). Nothing is written outside the temporary folder.

    .venv/bin/python benchmarks/bench_inswapper.py --faces 5 [--threads 2] [--providers cpu]

Timing only: the stand-in says nothing about swap quality.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT.parent / "shared" / "tools" / "build_inswapper_standin.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=5, help="timed faces (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads")
    parser.add_argument("--providers", default="cpu", help="comma-separated short names")
    parser.add_argument("--fp16", action="store_true", help="time the float16 stand-in")
    parser.add_argument("--standin", type=Path, default=STANDIN, help="stand-in builder script")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from fusionray.faces.blazeface import BlazeFaceDetector
    from fusionray.models.loader import ModelOptions
    from fusionray.models.store import import_model
    from fusionray.swap.base import SourceIdentity
    from fusionray.swap.inswapper import InswapperSwapper

    name = "inswapper_128_fp16" if args.fp16 else "inswapper_128"
    with tempfile.TemporaryDirectory(prefix="fusionray-bench-") as scratch:
        folder = Path(scratch)
        model = folder / "standin.onnx"
        started = time.perf_counter()
        subprocess.run([sys.executable, str(args.standin), "-o", str(model),
                        *(["--fp16"] if args.fp16 else [])], check=True,
                       stdout=subprocess.DEVNULL)
        build_seconds = time.perf_counter() - started
        import_model(name, model, cache_dir=folder / "cache", allow_unverified=True)
        model.unlink()
        options = ModelOptions(providers=tuple(args.providers.split(",")), threads=args.threads,
                               cache_dir=folder / "cache", shared_dirs=(), offline=True)
        started = time.perf_counter()
        swapper = InswapperSwapper(model=name, options=options)
        load_seconds = time.perf_counter() - started
        cv2.setNumThreads(args.threads)
        frame = np.ascontiguousarray(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
        face = BlazeFaceDetector(model="back").detect(frame)[0]
        vector = np.random.default_rng(0).standard_normal(512).astype(np.float32)
        source = SourceIdentity(crop=None, crop_size=128, image_count=1,
                                embedding=vector / np.linalg.norm(vector))
        swapper.swap(frame, [face], source)  # Warm-up.
        latent = swapper.latent_for(source)
        crop = np.zeros((128, 128, 3), np.uint8)
        totals, models, overheads = [], [], []
        for _ in range(args.faces):
            started = time.perf_counter()
            swapper.swap(frame, [face], source)
            totals.append(time.perf_counter() - started)
            started = time.perf_counter()
            swapper.swap_crop(crop, latent)
            models.append(time.perf_counter() - started)
        # The swap's CPU phases without the model call: align (prepare) + paste-back.
        swapped = swapper.forward(swapper.prepare(frame, [face], source), source)
        for _ in range(20):
            started = time.perf_counter()
            jobs = swapper.prepare(frame, [face], source)
            swapper.paste(frame, [job.with_output(done.output) for job, done  # type: ignore[arg-type]
                                  in zip(jobs, swapped, strict=True)])
            overheads.append(time.perf_counter() - started)
    print(f"stand-in {name}: built in {build_seconds:.1f} s, session opened in "
          f"{load_seconds:.1f} s on {swapper.provider} ({args.threads} threads)")
    print(f"per face, median of {args.faces}: {statistics.median(totals) * 1000:.0f} ms "
          f"end to end; model call alone {statistics.median(models) * 1000:.0f} ms "
          f"(min {min(models) * 1000:.0f}); align + paste-back alone "
          f"{statistics.median(overheads) * 1000:.1f} ms (median of 20)")


if __name__ == "__main__":
    main()
