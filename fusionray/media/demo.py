"""The built-in demo: a clip made from a real photograph, and a real source face.

The target is `skimage.data.astronaut()` (Eileen Collins, public domain, shipped with
scikit-image) filmed by a virtual camera that pans, zooms and rolls slightly, so the face moves
through the frame. The audio track is a synthesised chord progression encoded as AAC. The source
face is the Tom Hanks portrait shipped inside the insightface package. Nothing is downloaded.

The clip is generated once into the cache folder and reused; the file name carries a version, so
a change to the recipe below makes a new file.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from importlib import resources
from pathlib import Path

import av
import cv2
import numpy as np

DEMO_VERSION = 1
DEMO_WIDTH = 640
DEMO_HEIGHT = 360
DEMO_FPS = 25
DEMO_SECONDS = 4.0
AUDIO_RATE = 48_000


def demo_cache_dir() -> Path:
    """`$FUSIONRAY_CACHE/demo`, or `~/.cache/fusionray/demo`."""
    base = os.environ.get("FUSIONRAY_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "fusionray"
    return root / "demo"


def demo_source_image_path() -> Path:
    """The demo's source face: a portrait photograph shipped with insightface."""
    path = resources.files("insightface") / "data" / "images" / "Tom_Hanks_54745.png"
    return Path(str(path))


def camera_matrix(t: float, *, world_size: int) -> np.ndarray:
    """World-to-frame affine (2, 3) of the virtual camera at time fraction `t` in [0, 1].

    The camera looks at the astronaut's face, pans left to right, zooms in by 35 % and rolls
    by up to ±5 degrees along a smooth path.
    """
    scale_world = world_size / 512.0
    # Face centre in astronaut() pixel coordinates, about (210, 110); pan around it.
    centre_x = (170.0 + 90.0 * t) * scale_world
    centre_y = (150.0 - 25.0 * math.sin(math.pi * t)) * scale_world
    zoom = (1.0 + 0.35 * t) * (DEMO_HEIGHT / (300.0 * scale_world))
    roll = 5.0 * math.sin(2.0 * math.pi * t)
    matrix = cv2.getRotationMatrix2D((centre_x, centre_y), roll, zoom)
    matrix[0, 2] += DEMO_WIDTH / 2.0 - centre_x
    matrix[1, 2] += DEMO_HEIGHT / 2.0 - centre_y
    return matrix


def render_demo_frames(seconds: float = DEMO_SECONDS) -> list[np.ndarray]:
    """The demo's frames: BGR uint8, each (DEMO_HEIGHT, DEMO_WIDTH, 3).

    A longer `seconds` spreads the same camera path over more frames (for benchmarks).
    """
    from skimage import data

    world = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    world = cv2.resize(world, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    count = max(2, round(DEMO_FPS * seconds))
    frames = []
    for index in range(count):
        matrix = camera_matrix(index / (count - 1), world_size=world.shape[0])
        frames.append(
            cv2.warpAffine(
                world,
                matrix,
                (DEMO_WIDTH, DEMO_HEIGHT),
                flags=cv2.INTER_CUBIC,
                borderMode=cv2.BORDER_REFLECT,
            )
        )
    return frames


def render_demo_audio(seconds: float) -> np.ndarray:
    """A soft chord progression: float32 (2, samples) in [-1, 1], 48 kHz stereo."""
    samples = int(seconds * AUDIO_RATE)
    t = np.arange(samples, dtype=np.float64) / AUDIO_RATE
    chords = [
        (261.63, 329.63, 392.00),
        (220.00, 261.63, 329.63),
        (174.61, 220.00, 261.63),
        (196.00, 246.94, 293.66),
    ]
    segment = max(1, samples // len(chords))
    signal = np.zeros(samples)
    for i, chord in enumerate(chords):
        part = slice(i * segment, samples if i == len(chords) - 1 else (i + 1) * segment)
        local = t[part] - t[part][0]
        envelope = np.minimum(1.0, local * 20.0) * np.exp(-local * 1.5)
        for frequency in chord:
            signal[part] += envelope * np.sin(2 * np.pi * frequency * t[part]) / len(chord)
    left = 0.5 * signal
    right = 0.5 * np.roll(signal, AUDIO_RATE // 100)  # 10 ms offset: a little stereo width
    return np.stack([left, right]).astype(np.float32)


def write_demo_clip(path: Path, *, seconds: float = DEMO_SECONDS, gop: int = DEMO_FPS) -> Path:
    """Encode the demo to `path` (H.264 + AAC in MP4), atomically.

    `gop` is the keyframe interval in frames (benchmarks use 250, a common delivery GOP, to
    measure decode amplification at chunk edges).
    """
    frames = render_demo_frames(seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}.mp4")
    try:
        with av.open(str(partial), "w") as container:
            video = container.add_stream("libx264", rate=DEMO_FPS)
            video.width, video.height, video.pix_fmt = DEMO_WIDTH, DEMO_HEIGHT, "yuv420p"
            video.options = {"crf": "16", "preset": "medium", "g": str(gop), "threads": "1"}
            audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
            for index, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                frame.pts = index
                frame.time_base = Fraction(1, DEMO_FPS)
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
            pcm = render_demo_audio(len(frames) / DEMO_FPS)
            step = 1024
            for offset in range(0, pcm.shape[1], step):
                block = np.ascontiguousarray(pcm[:, offset : offset + step])
                audio_frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
                audio_frame.sample_rate = AUDIO_RATE
                audio_frame.pts = offset
                audio_frame.time_base = Fraction(1, AUDIO_RATE)
                container.mux(audio.encode(audio_frame))
            container.mux(audio.encode(None))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def ensure_demo_clip(cache_dir: Path | None = None) -> Path:
    """Return the cached demo clip, generating it on first use."""
    folder = cache_dir or demo_cache_dir()
    path = folder / f"astronaut-demo-v{DEMO_VERSION}.mp4"
    if not path.exists():
        write_demo_clip(path)
    return path
