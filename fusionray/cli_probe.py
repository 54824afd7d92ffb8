"""`fusionray probe FILE`: print what the pipeline will see in a video."""

from __future__ import annotations

import argparse
import json
import sys

from fusionray.config import ChunkConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = ChunkConfig()
    parser = subparsers.add_parser(
        "probe", help="print streams, frames, fps, rotation, keyframe spacing, estimated chunks",
        description="Probe a video (a path or a pyarrow.fs URI) the way a render would.")
    parser.add_argument("file", help="video path or URI (file://, s3://, gs://, hdfs://)")
    parser.add_argument("--chunk-frames", type=int, default=defaults.frames,
                        help="frames per chunk for the estimate (default 0: auto, as a "
                             "render plans)")
    parser.add_argument("--overlap", type=int, default=defaults.overlap,
                        help=f"overlap frames for the estimate (default {defaults.overlap})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fusionray.errors import FusionrayError
    from fusionray.media.describe import describe_video, format_description
    from fusionray.media.storage import localise

    try:
        ChunkConfig(frames=args.chunk_frames, overlap=args.overlap)
        description = describe_video(localise(args.file), chunk_frames=args.chunk_frames,
                                     overlap=args.overlap)
    except FusionrayError as error:
        print(f"fusionray: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        data = description.to_dict()
        data["path"] = args.file
        print(json.dumps(data, indent=2))
    else:
        print(format_description(description).replace(description.path, args.file, 1))
    return 0
