"""Studio inputs through the real CLI: what comes back outside the faces (issue 12's table).

Each input of issue 12 is written with PyAV (`tests/studio_clips.py`: ProRes 422 HQ 10-bit with
timecode, DNxHR, HEVC 10-bit BT.2020/PQ, VP9/Opus in WebM, 29.97 fps with B-frames starting at
pts 1001 in 1/30000 in .mp4 and .mov, BT.709 full range, a PNG and an EXR sequence), under a
file name with spaces, an accent, an en dash and an apostrophe. The picture is the demo's moving
astronaut lifted to 16 bits (a ramp below one 8-bit step), so a face is found and swapped. Each
is rendered by `python -m fusionray.jobs.render +video=PATH +source=IMAGE` (classic engine,
default quality preset, unquoted paths) in its own process, then compared with its input:

- codec / pix_fmt / colour tags (range, matrix, primaries, transfer): `=` when the input's;
- timecode; pts exact (every frame's pts x time base equal to the input's, as fractions);
- audio bytes equal (every audio packet's payload);
- mean luma shift outside the swapped faces (the regions the render may change:
  `media.frame.face_regions` of each face `.faces.parquet` marks swapped), from the Y plane's
  own codes: 8-bit codes, and for deeper inputs also in the input's codes.

A benchmark, not a test (minutes):

    nice -n 19 .venv/bin/python benchmarks/bench_fidelity.py [--frames 24] [--only NAME]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_line  # noqa: E402
from fusionray.media.demo import demo_source_image_path, render_demo_frames  # noqa: E402
from fusionray.media.encode import PixelLayout  # noqa: E402
from fusionray.media.frame import face_regions  # noqa: E402
from fusionray.media.probe import probe_video  # noqa: E402
from fusionray.types import Face  # noqa: E402
from tests.clips import audio_packet_payloads  # noqa: E402
from tests.studio_clips import STUDIO_CLIPS, StudioClip, lift_to_16_bits  # noqa: E402

WIDTH, HEIGHT = 320, 176
"""Frame size: big enough for BlazeFace to find the astronaut, a multiple of 16 for DNxHR."""
NAME = "shot 01 – café's take"
"""Every input's file (or folder) name: spaces, an accent, an en dash, an apostrophe."""
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")
COLOUR_NAMES = {
    "range": {0: "unspec", 1: "tv", 2: "pc"},
    "matrix": {0: "rgb", 1: "bt709", 2: "unspec", 5: "bt470bg", 6: "smpte170m", 9: "bt2020nc"},
    "primaries": {1: "bt709", 2: "unspec", 9: "bt2020"},
    "transfer": {1: "bt709", 2: "unspec", 16: "pq", 18: "hlg"},
}


@dataclass(frozen=True)
class Case:
    """One row: an input written as `file_name` (a video, or a sequence folder)."""

    name: str
    file_name: str
    clip: StudioClip
    sequence: str = ""
    """Image codec of a sequence (`png`, `exr`); empty for a video file."""


def cases() -> list[Case]:
    """Issue 12's inputs, each at WIDTH x HEIGHT."""
    sized = {name: (file_name, replace(clip, width=WIDTH, height=HEIGHT))
             for name, (file_name, clip) in STUDIO_CLIPS.items()}
    ntsc_file, ntsc = sized["ntsc-bframes-start-1001"]
    return [
        Case("ProRes 422 HQ 10-bit, TC 01:00:00:00", *sized["prores-422hq-10bit-timecode"]),
        Case("DNxHR HQX 10-bit", *sized["dnxhr-hqx"]),
        Case("HEVC 10-bit BT.2020/PQ", *sized["hevc-10bit-pq"]),
        Case("VP9/Opus .webm", "in.webm", StudioClip(
            codec="libvpx-vp9", pix_fmt="yuv420p", width=WIDTH, height=HEIGHT,
            options={"deadline": "realtime", "cpu-used": "8", "crf": "20", "b:v": "0"},
            colorspace=1, color_primaries=1, color_trc=1, color_range=1,
            time_base=Fraction(1, 1000), ticks_per_frame=40, audio=True,
            audio_codec="libopus")),
        Case("NTSC B-frames pts 1001 .mp4, TC 00:59:59;28", ntsc_file, ntsc),
        Case("NTSC B-frames pts 1001 .mov, TC 00:59:59;28", "in.mov", ntsc),
        Case("BT.709 full range H.264", *sized["bt709-full-range"]),
        Case("PNG sequence folder", "frame_%04d.png",
             StudioClip(codec="png", pix_fmt="rgb24", width=WIDTH, height=HEIGHT),
             sequence="png"),
        Case("EXR sequence folder (half)", "frame_%04d.exr",
             StudioClip(codec="exr", pix_fmt="gbrpf32le", width=WIDTH, height=HEIGHT,
                        options={"pixel_type": "half"}),
             sequence="exr"),
    ]


def face_pictures(frames: int) -> Callable[[int], np.ndarray]:
    """Frame index -> uint16 BGR (HEIGHT, WIDTH, 3): the demo's camera path over `frames`."""
    pictures = [lift_to_16_bits(cv2.resize(image, (WIDTH, HEIGHT),
                                           interpolation=cv2.INTER_AREA))
                for image in render_demo_frames(frames / 25)]
    return lambda index: pictures[index]


def write_input(case: Case, folder: Path, picture: Callable[[int], np.ndarray]) -> Path:
    """Write the case's input under NAME in `folder`; the path to pass as +video."""
    from tests.studio_clips import write_studio_clip

    if not case.sequence:
        return write_studio_clip(folder / f"{NAME}{Path(case.file_name).suffix}", case.clip,
                                 picture=picture)
    sequence = folder / NAME
    sequence.mkdir()
    for index in range(case.clip.frames):
        image = picture(index)
        if case.sequence == "exr":
            # Linear light as an EXR from a renderer would hold it: sRGB-decoded floats.
            data = (image.astype(np.float32) / 65535.0) ** 2.2
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(data[:, :, [1, 0, 2]]),
                format="gbrpf32le")
        else:
            frame = av.VideoFrame.from_ndarray((image // 257).astype(np.uint8)[:, :, ::-1]
                                               .copy(), format="rgb24")
        with av.open(str(sequence / (case.file_name % (index + 1))), "w",
                     format="image2") as container:
            stream = container.add_stream(case.clip.codec, rate=25)
            assert isinstance(stream, av.VideoStream)  # `case.clip.codec` names an image encoder
            stream.width, stream.height = WIDTH, HEIGHT
            stream.pix_fmt = case.clip.pix_fmt
            stream.options = dict(case.clip.options)
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    return sequence


def render(video: Path, run_dir: Path) -> tuple[Path | None, str, float]:
    """Render through the CLI; (output or None, the error's last line, wall seconds)."""
    command = [sys.executable, "-m", "fusionray.jobs.render", f"+video={video}",
               f"+source={demo_source_image_path()}", "progress=false", "preview_frames=0",
               "chunk.frames=8", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    outputs = [p for p in run_dir.glob("*.swapped.*") if p.suffix in VIDEO_SUFFIXES]
    if done.returncode != 0 or not outputs:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
        return None, f"exit {done.returncode}: {lines[-1][:150]}", seconds
    return outputs[0], "", seconds


def luma_planes(path: Path) -> tuple[list[np.ndarray], int]:
    """Every frame's Y plane (H, W) float64 in its own codes, and its bit depth; RGB frames
    give BT.709 luma of their 8-bit RGB."""
    planes, bits = [], 8
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            name = frame.format.name
            if name.startswith(("yuv", "yuvj", "nv12", "p010")):
                bits = PixelLayout.of(name).bits
                plane = frame.planes[0]
                dtype = np.uint16 if bits > 8 else np.uint8
                data = np.frombuffer(memoryview(plane), dtype=dtype).reshape(
                    plane.height, plane.line_size // dtype().itemsize)[:, :plane.width]
                planes.append(data.astype(np.float64))
            else:
                rgb = frame.to_ndarray(format="rgb24").astype(np.float64)
                planes.append(rgb @ np.array([0.2126, 0.7152, 0.0722]))
    return planes, bits


def swapped_faces(faces_parquet: Path) -> dict[int, list[Face]]:
    """Frame index -> the faces the render swapped there (display coordinates)."""
    import pyarrow.parquet as pq

    faces: dict[int, list[Face]] = {}
    for face in pq.read_table(faces_parquet).to_pylist():
        if face["swapped"]:
            faces.setdefault(face["frame"], []).append(Face(
                bbox=np.array(face["bbox"]), layout=face["landmarks_layout"],
                keypoints=np.array(face["landmarks"]).reshape(-1, 2), score=face["score"]))
    return faces


def luma_shift(source: Path, output: Path, faces_parquet: Path) -> str:
    """Mean output - input luma outside the swapped faces' regions, over all frames."""
    (before, bits_in), (after, bits_out) = luma_planes(source), luma_planes(output)
    if len(before) != len(after):
        return f"{len(after)} frames for {len(before)}"
    faces = swapped_faces(faces_parquet)
    differences, inside = [], 0
    for index, (a, b) in enumerate(zip(before, after, strict=True)):
        mask = np.ones(a.shape, dtype=bool)
        for (x0, y0, x1, y1), _ in face_regions(faces.get(index, []), a.shape[1], a.shape[0]):
            mask[y0:y1, x0:x1] = False
        inside += int(bool(faces.get(index)))
        a8, b8 = a / 2 ** (bits_in - 8), b / 2 ** (bits_out - 8)
        differences.append(float(np.mean(b8[mask] - a8[mask])))
    shift = float(np.mean(differences))
    text = f"{shift:+.3f}"
    if bits_in > 8:
        text += f" ({shift * 2 ** (bits_in - 8):+.3f} @{bits_in}b)"
    return f"{text}; swapped in {inside}/{len(before)}"


def tags(info) -> tuple[str, ...]:
    return (COLOUR_NAMES["range"].get(info.color_range, str(info.color_range)),
            COLOUR_NAMES["matrix"].get(info.colorspace, str(info.colorspace)),
            COLOUR_NAMES["primaries"].get(info.color_primaries, str(info.color_primaries)),
            COLOUR_NAMES["transfer"].get(info.color_trc, str(info.color_trc)))


def row(case: Case, work: Path, picture: Callable[[int], np.ndarray]) -> list[str]:
    folder = work / case.name.split()[0].lower().replace("/", "-") / str(abs(hash(case.name)))
    folder.mkdir(parents=True)
    try:
        source = write_input(case, folder, picture)
    except Exception as error:  # a generator PyAV lacks is a row, not a crash
        return [case.name, f"(input not written: {error})", "", "", "", "", "", "", ""]
    output, failure, seconds = render(source, folder / "run")
    if output is None:
        return [case.name, failure, "", "", "", "", "", "", f"{seconds:.0f}"]
    if case.sequence:
        return [case.name, f"{output.suffix}", "", "", "", "", "", "", f"{seconds:.0f}"]
    before, after = probe_video(source), probe_video(output)
    codec = f"{after.codec_name} {after.profile}".strip()
    same = (after.codec_name, after.profile) == (before.codec_name, before.profile)
    pix = after.pix_fmt + (" =" if after.pix_fmt == before.pix_fmt else f" (in {before.pix_fmt})")
    tag_text = "/".join(tags(after)) + (" =" if tags(after) == tags(before)
                                         else f" (in {'/'.join(tags(before))})")
    timecode = f"{after.timecode}" + (" =" if after.timecode == before.timecode
                                      else f" (in {before.timecode})")
    exact = ([Fraction(p) * before.time_base for p in before.frame_pts]
             == [Fraction(p) * after.time_base for p in after.frame_pts])
    pts = ("yes" if exact else "no") + f" ({after.time_base})"
    audio_in = audio_packet_payloads(source)
    audio = ("n/a" if not any(audio_in) else
             "yes" if audio_packet_payloads(output) == audio_in else "no")
    faces = output.with_name(f"{output.stem}.faces.parquet")
    return [case.name, f"{codec}{' =' if same else ''} {output.suffix}", pix, tag_text,
            timecode, pts, audio, luma_shift(source, output, faces), f"{seconds:.0f}"]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in r) + " |" for r in rows]
    return "\n".join(lines)




def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="frames per input")
    parser.add_argument("--only", default="", help="rows whose name contains this")
    args = parser.parse_args(argv)
    picture = face_pictures(args.frames)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fidelity-") as work:
        for case in cases():
            if args.only.lower() not in case.name.lower():
                continue
            case = replace(case, clip=replace(case.clip, frames=args.frames))
            rows.append(row(case, Path(work), picture))
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(machine_line())
    print(f"{args.frames} frames of {WIDTH}x{HEIGHT} each, file name {NAME!r}, classic engine, "
          "quality=standard (default), chunk.frames=8\n")
    print(format_table(["input", "output codec", "pix_fmt", "range/matrix/primaries/transfer",
                        "timecode", "pts exact (time base)", "audio bytes equal",
                        "mean luma shift outside faces (8-bit codes)", "wall s"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
