"""The `fusionray` console script: a small dispatcher; each subcommand lives in its own module.

    fusionray models ...      list, pull, verify, import model files (fusionray.cli_models)
    fusionray probe FILE      what the pipeline will see (fusionray.cli_probe)

Renders are Hydra jobs: `python -m fusionray.jobs.render +video=... [overrides]`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from fusionray import __version__, cli_models, cli_probe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusionray", description="Distributed face-swap video renderer (Ray, ONNX, PyAV).")
    parser.add_argument("--version", action="version", version=f"fusionray {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_models.add_parser(subparsers)
    cli_probe.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the subcommand, return its exit code."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
