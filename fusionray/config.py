"""Typed, validated configuration.

The frozen dataclasses below are the truth: types, defaults and rules (`__post_init__`). Hydra
needs mutable nodes to merge YAML and command-line overrides into, so `register_configs()`
stores a mutable twin of each class (same fields, same types) in Hydra's ConfigStore: a typo in
a key or a value of the wrong type fails at composition. `to_render_config()` then builds the
frozen tree from the composed config, which runs every range check before Ray starts. Only
frozen records travel to Ray workers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, get_args, get_origin

from fusionray.errors import ConfigError, choices_message
from fusionray.media.formats import CODECS, PIX_FMTS, PROFILES

if typing.TYPE_CHECKING:
    from fusionray.faces.mask import MaskRecipe

DETECTORS = ("blazeface", "scrfd")
BLAZEFACE_MODELS = ("auto", "front", "back")
SCRFD_MODELS = ("10g", "2.5g")
DETECTOR_MODELS = {"blazeface": BLAZEFACE_MODELS, "scrfd": SCRFD_MODELS}
SWAPPERS = ("classic", "inswapper", "learned")
INSWAPPER_MODELS = ("inswapper_128",)
LEARNED_MODELS = (
    "hyperswap_1a_256", "hyperswap_1b_256", "hyperswap_1c_256", "simswap_256",
    "simswap_unofficial_512", "ghost_1_256", "ghost_2_256", "ghost_3_256", "blendswap_256",
    "uniface_256",
)
"""`swapper.model` choices of the `learned` engine (`fusionray.swap.learned`)."""
RECOGNIZERS = ("arcface_w600k_r50",)
ENHANCERS = (
    "none", "gfpgan_1.4", "gfpgan_1.2", "gfpgan_1.3", "codeformer", "gpen_bfr_256", "gpen_bfr_512",
    "gpen_bfr_1024", "restoreformer_plus_plus",
)
BLENDS = ("laplacian", "alpha")
SELECTIONS = ("one", "many", "reference", "map")
CHUNK_ERROR_POLICIES = ("fail", "passthrough")
PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
)
PROVIDERS = ("tensorrt", "cuda", "rocm", "openvino", "coreml", "directml", "cpu")


def _require(condition: bool, key: str, value: object, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"Invalid {key}={value!r}: must be {allowed}")


def _require_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(choices_message(key, value, allowed))


@dataclass(frozen=True)
class DetectorConfig:
    """Face detector settings (`conf/detector/*`)."""

    name: str = "blazeface"
    """Detector engine: blazeface (offline, from the npm package) or scrfd (insightface)."""
    model: str = "auto"
    """Variant. BlazeFace: front (128 px input, close-ups), back (256 px, smaller faces) or auto
    (front when `input_size` <= 320, else back). SCRFD: 10g (accurate) or 2.5g (faster)."""
    input_size: int = 640
    """Detector input side in pixels, a multiple of 32 in [128, 1280]: SCRFD's network input;
    for BlazeFace with `model: auto` it picks the variant. Quality presets set this key, so one
    preset works with every detector."""

    @property
    def variant(self) -> str:
        """The model variant to load, with `auto` resolved."""
        if self.name == "blazeface" and self.model == "auto":
            return "front" if self.input_size <= 320 else "back"
        return self.model
    score_threshold: float = 0.7
    """Minimum detection confidence in [0, 1]."""
    nms_threshold: float = 0.3
    """IoU above which overlapping detections are merged, in (0, 1]."""
    providers: tuple[str, ...] = ("cuda", "cpu")
    """ONNX Runtime providers, tried in order."""
    tiles: int = 0
    """Extra detection pass on a tiles x tiles grid for small faces, in [0, 4]: 1 = off,
    0 = auto from the video size (`auto_tiles`: 1 up to 1920 px on the longer side, 2 for 4K)."""

    def __post_init__(self) -> None:
        _require_choice("detector.name", self.name, DETECTORS)
        _require(0 <= self.tiles <= 4, "detector.tiles", self.tiles, "in [0, 4] (0 = auto)")
        _require_choice(f"detector.model for {self.name}", self.model,
                        DETECTOR_MODELS[self.name])
        _require(self.input_size % 32 == 0 and 128 <= self.input_size <= 1280,
                 "detector.input_size", self.input_size, "a multiple of 32 in [128, 1280]")
        _require(0.0 <= self.score_threshold <= 1.0, "detector.score_threshold",
                 self.score_threshold, "in [0, 1]")
        _require(0.0 < self.nms_threshold <= 1.0, "detector.nms_threshold",
                 self.nms_threshold, "in (0, 1]")
        _require(len(self.providers) > 0, "detector.providers", self.providers, "non-empty")
        for provider in self.providers:
            _require_choice("detector.providers entry", provider, PROVIDERS)


@dataclass(frozen=True)
class SwapperConfig:
    """Face swapper and compositing settings (`conf/swapper/*`)."""

    name: str = "classic"
    """Swap engine: classic (aligned source crop, colour match, blend; no learned model) or
    inswapper (insightface's learned swapper; needs its weights: `fusionray models pull`)."""
    crop_size: int = 256
    """Side of the aligned face crop in pixels (classic; inswapper's crop is fixed at 128)."""
    mask_padding: float = 0.0
    """Grow (>0) or shrink (<0) the face mask, as a fraction of the crop, in [-0.3, 0.3]."""
    mask_blur: float = 0.3
    """Feather of the mask edge as a fraction of the face size, in [0, 1]."""
    colour_match: bool = True
    """Match the source's colour to the target face in LAB before blending."""
    blend: str = "laplacian"
    """Compositing: laplacian (multi-band pyramid) or alpha."""
    blend_levels: int = 5
    """Pyramid levels for the laplacian blend, in [1, 8]."""
    model: str = "inswapper_128"
    """inswapper weights: inswapper_128."""
    fp16: bool = False
    """Use the float16 export of the swapper (half the memory; for GPU providers)."""
    recognizer: str = "arcface_w600k_r50"
    """ArcFace model that embeds the source faces (inswapper) and reference faces (selection)."""
    providers: tuple[str, ...] = ("cuda", "cpu")
    """ONNX Runtime providers for the swapper, recognizer and enhancer, tried in order; leave
    out cpu to make a machine without the listed providers an error instead of a fallback."""
    soft_mask: bool = False
    """Scale the face mask by the detection confidence (uncertain faces blend in partly)."""
    enhancer: str = "none"
    """Face enhancement after the swap (learned engines only): none, gfpgan_1.2, gfpgan_1.3,
    gfpgan_1.4, codeformer, gpen_bfr_256, gpen_bfr_512, gpen_bfr_1024, restoreformer_plus_plus."""
    enhancer_blend: float = 0.8
    """Weight of the enhanced face, in [0, 1]."""
    # Face models (issue 13): pixel boost, masks, 68-point landmarks. Checked in
    # `_check_face_models`.
    pixel_boost: int = 128
    """Side of the aligned face the learned swapper works on: 128 (off), 256, 384, 512, 768 or
    1024; above 128 the face is swapped as (pixel_boost / 128)² interleaved 128 px sub-images
    (that many times the model's cost)."""
    masks: tuple[str, ...] = ("box",)
    """Masks combined per pixel by minimum: box (the feathered face outline), occlusion (XSeg:
    hands, hair, objects in front of the face stay), region (face-parser classes in
    `mask_regions`), area (68-landmark areas in `mask_areas`; needs `landmarker`), mouth (the
    target's own mouth stays). Anything but box needs the learned engine."""
    occluder: str = "xseg_1"
    """Occlusion model: xseg_1, xseg_2, xseg_3, or many (the minimum of all three)."""
    parser: str = "bisenet_resnet_34"
    """Face parser of the region mask: bisenet_resnet_18 or bisenet_resnet_34."""
    mask_regions: tuple[str, ...] = (
        "skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye", "glasses", "nose",
        "mouth", "upper-lip", "lower-lip",
    )
    """Regions the region mask keeps: skin, left-/right-eyebrow, left-/right-eye, glasses, nose,
    mouth, upper-/lower-lip, or the groups brows, eyes, lips."""
    mask_areas: tuple[str, ...] = ("upper-face", "lower-face", "mouth")
    """Areas the area mask covers: upper-face, lower-face, mouth."""
    occlusion_padding: float = 0.0
    """Grow (>0) or shrink (<0) the occlusion mask, fraction of the crop, in [-0.3, 0.3]."""
    occlusion_blur: float = 0.25
    """Feather of the occlusion mask (sigma = blur × crop / 12, inward), in [0, 1]."""
    region_padding: float = 0.0
    """Grow or shrink the region mask, fraction of the crop, in [-0.3, 0.3]."""
    region_blur: float = 0.25
    """Feather of the region mask, in [0, 1]."""
    area_padding: float = 0.0
    """Grow or shrink the area mask, fraction of the crop, in [-0.3, 0.3]."""
    area_blur: float = 0.25
    """Feather of the area mask, in [0, 1]."""
    mouth_padding: float = 0.03
    """Grow the kept mouth beyond the lips, fraction of the crop, in [-0.3, 0.3]."""
    mouth_blur: float = 0.25
    """Feather of the kept mouth's edge, in [0, 1]."""
    landmarker: str = "none"
    """68-point landmarks: none or 2dfan4 (aligns each face from 68 points, gives BlazeFace
    faces mouth corners, feeds the area and mouth masks)."""
    enhancer_fidelity: float = 0.5
    """CodeFormer's fidelity weight, in [0, 1]: 0 restores most, 1 stays closest to the swapped
    face (other enhancers have no such input)."""
    weight: float = 0.5
    """Source against target identity for the learned engine's embedding models, in [0, 1]:
    0.5 = the source alone, lower keeps some of the target, higher pushes past the source
    (FaceFusion's face-swapper weight)."""
    batch: int = 0
    """Rows (faces, or a boosted face's sub-images) per swapper call for the learned engines,
    >= 1, or 0 = by provider: 1 on CPU, 8 on a GPU (`fusionray.models.providers.call_batch`).
    Capped at 1 where the model's batch dimension cannot be freed."""

    def _check_face_models(self) -> None:
        from fusionray.faces.occlusion import OCCLUDER_CHOICES
        from fusionray.faces.parser import PARSER_MODELS, region_classes
        from fusionray.swap.pixel_boost import PIXEL_BOOST_SIZES

        sizes: tuple[int, ...] = PIXEL_BOOST_SIZES
        if self.name == "learned":
            from fusionray.models.catalog import get_model_spec

            spec = get_model_spec(self.model)
            model_size = spec.input_size
            # A model whose `source` is a face image (blendswap, uniface) has no embedding to
            # mix the target's into.
            _require(self.weight == 0.5 or len(spec.inputs[1].shape) == 2, "swapper.weight",
                     self.weight, f"0.5 with {self.model} (its source is a face image, not an "
                     "identity embedding)")
            sizes = tuple(size for size in PIXEL_BOOST_SIZES if size % model_size == 0)
        _require(self.pixel_boost in sizes or (self.name == "learned" and self.pixel_boost == 128),
                 "swapper.pixel_boost", self.pixel_boost,
                 "one of " + ", ".join(str(size) for size in sizes) + " for " + self.model)
        _require(0.0 <= self.weight <= 1.0, "swapper.weight", self.weight, "in [0, 1]")
        _require(self.batch >= 0, "swapper.batch", self.batch, ">= 1, or 0 (by provider)")
        # Only the learned engine mixes the target's identity in; elsewhere the key would be
        # accepted and silently do nothing.
        _require(self.weight == 0.5 or self.name == "learned", "swapper.weight", self.weight,
                 f"0.5 with the {self.name} engine (only swapper=learned balances source and "
                 "target identity)")
        _require(0.0 <= self.enhancer_fidelity <= 1.0, "swapper.enhancer_fidelity",
                 self.enhancer_fidelity, "in [0, 1]")
        _require(self.pixel_boost == 128 or self.name != "classic", "swapper.pixel_boost",
                 self.pixel_boost, "128 with the classic engine (it has no model to boost)")
        try:
            self.mask_recipe()
        except ConfigError as error:
            raise ConfigError(f"Invalid swapper.masks: {error}") from None
        _require(self.masks == ("box",) or self.name != "classic", "swapper.masks", self.masks,
                 "[box] with the classic engine (the model masks follow the learned engine)")
        _require_choice("swapper.occluder", self.occluder, OCCLUDER_CHOICES)
        _require_choice("swapper.parser", self.parser, PARSER_MODELS)
        _require_choice("swapper.landmarker", self.landmarker, ("none", "2dfan4"))
        _require(self.landmarker == "none" or self.name != "classic", "swapper.landmarker",
                 self.landmarker, "none with the classic engine")
        _require("area" not in self.masks or self.landmarker != "none", "swapper.masks",
                 self.masks, "without area unless swapper.landmarker=2dfan4 (areas come from "
                 "68 landmarks)")
        try:
            region_classes(self.mask_regions)
        except ConfigError as error:
            raise ConfigError(f"Invalid swapper.mask_regions: {error}") from None

    def mask_recipe(self) -> MaskRecipe:
        """The `fusionray.faces.mask.MaskRecipe` these settings describe."""
        from fusionray.faces.mask import MaskRecipe

        return MaskRecipe(
            types=self.masks, areas=self.mask_areas,
            occlusion_padding=self.occlusion_padding, occlusion_blur=self.occlusion_blur,
            region_padding=self.region_padding, region_blur=self.region_blur,
            area_padding=self.area_padding, area_blur=self.area_blur,
            mouth_padding=self.mouth_padding, mouth_blur=self.mouth_blur,
        )

    def __post_init__(self) -> None:
        _require_choice("swapper.name", self.name, SWAPPERS)
        _require_choice("swapper.model", self.model,
                        LEARNED_MODELS if self.name == "learned" else INSWAPPER_MODELS)
        _require_choice("swapper.recognizer", self.recognizer, RECOGNIZERS)
        _require_choice("swapper.enhancer", self.enhancer, ENHANCERS)
        _require(0.0 <= self.enhancer_blend <= 1.0, "swapper.enhancer_blend",
                 self.enhancer_blend, "in [0, 1]")
        _require(self.enhancer == "none" or self.name != "classic", "swapper.enhancer",
                 self.enhancer, "none with the classic engine (enhancement follows inswapper)")
        _require(len(self.providers) > 0, "swapper.providers", self.providers, "non-empty")
        for provider in self.providers:
            _require_choice("swapper.providers entry", provider, PROVIDERS)
        _require(64 <= self.crop_size <= 1024, "swapper.crop_size", self.crop_size,
                 "in [64, 1024]")
        _require(-0.3 <= self.mask_padding <= 0.3, "swapper.mask_padding", self.mask_padding,
                 "in [-0.3, 0.3]")
        _require(0.0 <= self.mask_blur <= 1.0, "swapper.mask_blur", self.mask_blur, "in [0, 1]")
        _require_choice("swapper.blend", self.blend, BLENDS)
        _require(1 <= self.blend_levels <= 8, "swapper.blend_levels", self.blend_levels,
                 "in [1, 8]")
        self._check_face_models()


@dataclass(frozen=True)
class FaceMapEntry:
    """One person of `selection.mode=map`: how to find their face, and who they become."""

    source: Any = None
    """Source image path, or a list of paths whose faces are combined."""
    reference_image: Any = None
    """Image(s) of their face in the video (a path or a list; needs a recognizer)..."""
    reference_frame: int | None = None
    """...and/or a frame index of the input holding their face..."""
    reference_face: int = 0
    """...and which face of that frame, counted largest first (0 = largest)."""

    def __post_init__(self) -> None:
        sources = self.source_paths
        _require(len(sources) > 0 and all(isinstance(s, str) and s for s in sources),
                 "selection.map.source", self.source, "an image path or a list of image paths")
        _require(all(isinstance(s, str) and s for s in self.reference_images),
                 "selection.map.reference_image", self.reference_image,
                 "an image path or a list of image paths")
        _require(bool(self.reference_images) or self.reference_frame is not None,
                 "selection.map.reference_image/reference_frame",
                 (self.reference_image, self.reference_frame), "at least one of them set")
        _require(self.reference_frame is None or self.reference_frame >= 0,
                 "selection.map.reference_frame", self.reference_frame, ">= 0 or null")
        _require(self.reference_face >= 0, "selection.map.reference_face",
                 self.reference_face, ">= 0")

    @property
    def source_paths(self) -> tuple[str, ...]:
        return _paths(self.source)

    @property
    def reference_images(self) -> tuple[str, ...]:
        return _paths(self.reference_image)


def _paths(value: Any) -> tuple[str, ...]:
    """A path or a list of paths as a tuple (empty for None)."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


@dataclass(frozen=True)
class SelectionConfig:
    """Which detected faces get swapped."""

    mode: str = "many"
    """one (the most prominent face track over the whole shot), many (every face), reference
    (faces whose identity is within `reference_distance` of a reference face), or map (each
    `map` entry's face to its own source; see `fusionray.faces.shot`)."""
    min_face_size: int = 0
    """Faces whose box is smaller than this many pixels on its shorter side are left alone."""
    reference_image: str | None = None
    """reference mode: an image holding the face to look for (its largest face)."""
    reference_frame: int | None = None
    """reference mode: or a frame index of the input video holding it..."""
    reference_face: int = 0
    """...and which face of that frame/image, counted largest first (0 = largest)."""
    reference_distance: float = 0.6
    """reference mode: maximum cosine distance (1 − cosine similarity) of ArcFace embeddings,
    in (0, 2]; about 0.6 separates different people, lower is stricter."""
    max_yaw: float = 90.0
    """Skip faces turned further than this many degrees left or right, in [0, 90] (90 = off)."""
    max_pitch: float = 90.0
    """Skip faces tilted further than this many degrees up or down, in [0, 90] (90 = off)."""
    track_max_gap: int = 12
    """one/map (shot-level selection): frames a face may be missed (out of frame, hidden) and
    come back near where it left as the same track, keeping its swap; >= 0."""
    track_gate: bool = False
    """Also run the shot pass (track gate) for many/reference; one/map always gate tracks."""
    min_track_detections: int = 3
    """Track gate: a face track needs this many detected frames over the shot, >= 1."""
    min_track_presence: float = 0.5
    """Track gate: ...and to be detected on this fraction of the frames it spans, in [0, 1]
    (a "face" on scattered frames is not a face)."""
    max_landmark_error: float = 0.45
    """Target gate: largest keypoint misfit to the human face template (template eye
    distances; it grows with head turn: 0.25 at 60° yaw, 0.39 in profile), > 0."""
    verify_faces: bool = True
    """Target gate: re-detect every face on its aligned crop (BlazeFace front) and drop those
    not found again (animals, objects)."""
    verify_min_score: float = 0.5
    """Target gate: smallest re-detection confidence, in [0, 1]."""
    source_min_score: float = 0.7
    """Source gate: smallest detector confidence of the source image's face, in [0, 1]."""
    source_verify_min_score: float = 0.65
    """Source gate: smallest re-detection confidence on its aligned crop, in [0, 1]."""
    source_max_landmark_error: float = 0.3
    """Source gate: largest keypoint misfit to the face template (0.3 is about 70° of yaw:
    a source must show the face), > 0."""
    source_min_face_size: int = 48
    """Source gate: smallest face (shorter box side, pixels) in a source image, >= 0."""
    map: tuple[FaceMapEntry, ...] = ()
    """map mode: one entry per person: their reference face(s) and their source image(s)."""

    def __post_init__(self) -> None:
        entries = tuple(
            entry if isinstance(entry, FaceMapEntry)
            else from_mapping(FaceMapEntry, entry, prefix="selection.map.")
            for entry in self.map)
        object.__setattr__(self, "map", entries)
        _require(self.track_max_gap >= 0, "selection.track_max_gap", self.track_max_gap, ">= 0")
        _require(self.min_track_detections >= 1, "selection.min_track_detections",
                 self.min_track_detections, ">= 1")
        for key, value in (("selection.min_track_presence", self.min_track_presence),
                           ("selection.verify_min_score", self.verify_min_score),
                           ("selection.source_min_score", self.source_min_score),
                           ("selection.source_verify_min_score", self.source_verify_min_score)):
            _require(0.0 <= value <= 1.0, key, value, "in [0, 1]")
        for key, value in (("selection.max_landmark_error", self.max_landmark_error),
                           ("selection.source_max_landmark_error",
                            self.source_max_landmark_error)):
            _require(value > 0.0, key, value, "> 0")
        _require(self.source_min_face_size >= 0, "selection.source_min_face_size",
                 self.source_min_face_size, ">= 0")
        _require(self.mode != "map" or len(entries) > 0, "selection.map", list(self.map),
                 "at least one entry when selection.mode=map")
        _require_choice("selection.mode", self.mode, SELECTIONS)
        _require(self.min_face_size >= 0, "selection.min_face_size", self.min_face_size, ">= 0")
        _require(0.0 < self.reference_distance <= 2.0, "selection.reference_distance",
                 self.reference_distance, "in (0, 2]")
        _require(self.reference_face >= 0, "selection.reference_face", self.reference_face,
                 ">= 0")
        _require(self.reference_frame is None or self.reference_frame >= 0,
                 "selection.reference_frame", self.reference_frame, ">= 0 or null")
        for key, value in (("selection.max_yaw", self.max_yaw),
                           ("selection.max_pitch", self.max_pitch)):
            _require(0.0 <= value <= 90.0, key, value, "in [0, 90] degrees")
        if self.mode == "reference":
            _require((self.reference_image is None) != (self.reference_frame is None),
                     "selection.reference_image/reference_frame",
                     (self.reference_image, self.reference_frame),
                     "exactly one of them set when selection.mode=reference")

    @property
    def needs_embeddings(self) -> bool:
        """Whether detection must embed every face (reference selection, map by image)."""
        return self.mode == "reference" or (
            self.mode == "map" and any(entry.reference_images for entry in self.map))


@dataclass(frozen=True)
class EncodeConfig:
    """Output video encoding (set by `conf/quality/*`)."""

    codec: str = "auto"
    """auto (the input's own family: ProRes stays ProRes, DNxHR DNxHR, HEVC HEVC, else H.264),
    libx264, libx265, prores_ks, dnxhd (DNxHR), libx264rgb (lossless RGB) or ffv1 (lossless);
    see `fusionray.media.encode.resolve_codec`."""
    crf: int = 18
    """x264 constant rate factor, 0 (lossless) to 51 (worst)."""
    preset: str = "medium"
    """x264 speed/size preset."""
    pix_fmt: str = "auto"
    """Pixel format, one of `fusionray.media.formats.PIX_FMTS`; auto = the input's chroma and
    bit depth (10-bit stays 10-bit). Odd frame sizes switch 4:2:0 to 4:4:4 (H.264 cannot code
    them)."""
    lossless: bool = False
    """Encode losslessly (libx264rgb qp 0, or ffv1): frames decode bit-exact."""
    profile: str = "auto"
    """ProRes (proxy, lt, standard, hq, 4444, 4444xq) or DNxHR (dnxhr_lb ... dnxhr_444)
    profile; auto = the input's when it is coded in the same family."""

    def __post_init__(self) -> None:
        _require_choice("encode.codec", self.codec, CODECS)
        _require(0 <= self.crf <= 51, "encode.crf", self.crf, "in [0, 51]")
        _require_choice("encode.preset", self.preset, PRESETS)
        _require_choice("encode.pix_fmt", self.pix_fmt, PIX_FMTS)
        _require_choice("encode.profile", self.profile, PROFILES)


@dataclass(frozen=True)
class MediaConfig:
    """How inputs are read (`fusionray.media.decode`)."""

    strict_decode: bool = False
    """An undecodable frame fails the job; false: it (and the frames predicting from it, up to
    the next keyframe) is concealed with the last good frame and listed in run.json."""
    frame_rate: str = "24"
    """Frames per second of an image-sequence input (which carries no timing): a positive
    integer, decimal or ratio such as `24000/1001`; ignored for video files."""

    def __post_init__(self) -> None:
        # YAML gives 25 or 23.976 as numbers: kept as the text the user wrote.
        object.__setattr__(self, "frame_rate", str(self.frame_rate))
        _require(_positive_rate(self.frame_rate) is not None, "media.frame_rate",
                 self.frame_rate, "a frame rate > 0 and <= 1000, e.g. 24, 25, 24000/1001")

    @property
    def rate(self) -> Fraction:
        """`frame_rate` as an exact fraction (frames per second)."""
        rate = _positive_rate(self.frame_rate)
        assert rate is not None
        return rate


def _positive_rate(text: str) -> Fraction | None:
    """`text` as a frame rate in (0, 1000], or None when it is not one."""
    try:
        rate = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        return None
    return rate if 0 < rate <= 1000 else None


@dataclass(frozen=True)
class ChunkConfig:
    """How the video is cut into units of work."""

    frames: int = 0
    """Frames owned by each chunk (>= 1), or 0 = auto: the video in about 16 chunks of 48 to
    240 frames (`fusionray.media.plan.auto_chunk_frames`)."""
    overlap: int = 4
    """Extra frames read on each side of a chunk for temporal context (>= 0)."""
    keyframe_aligned: bool = True
    """Put chunk edges at keyframe + overlap, so every read starts on a keyframe and each frame
    is decoded about once (`fusionray.media.plan`); false = exactly `frames` per chunk, each
    read decoding from the keyframe before it."""

    def __post_init__(self) -> None:
        _require(self.frames >= 0, "chunk.frames", self.frames, ">= 1, or 0 (auto)")
        _require(self.overlap >= 0, "chunk.overlap", self.overlap, ">= 0")


@dataclass(frozen=True)
class TemporalConfig:
    """Tracking and landmark smoothing across frames (`fusionray.faces.temporal`).

    Every frame's faces are computed from the detections of the frames within `reach` of it,
    so `reach` must not exceed `chunk.overlap`: then no chunking can change a frame's result.
    """

    enabled: bool = True
    """Track, fill gaps, drop one-frame detections and smooth; false = raw per-frame faces."""
    radius: int = 4
    """Frames on each side that the smoother sees (its support), in [0, chunk.overlap]."""
    strength: float = 5.0
    """Measurement-to-motion noise ratio of the constant-velocity smoother (>= 0, 0 = off);
    higher is steadier but lags more behind accelerating faces."""
    max_gap: int = 2
    """Longest run of missed frames inside a track that is filled by interpolation, in
    [0, chunk.overlap]."""
    min_track_frames: int = 2
    """Tracks with fewer detections near a frame are false positives and dropped, in
    [1, chunk.overlap + 1]."""
    iou_threshold: float = 0.3
    """Minimum box IoU (against the track's predicted box) to link a face to a track, (0, 1]."""
    max_shift: float = 0.75
    """A face that moved too far for `iou_threshold` still links when its box centre is within
    this many box sizes of the predicted box's (at a similar size), >= 0; 0 = overlap only.
    Without it a face crossing the frame in about a second at 24 fps never forms a track."""
    max_embedding_distance: float = 0.6
    """Largest cosine distance between face embeddings to link them, when both have one, (0, 2]."""
    smooth_scores: bool = True
    """Smooth the detection confidence (soft masks weight by it) with the landmark filter."""
    smooth_embeddings: bool = True
    """Average a track's face embeddings over the radius (steadier `reference` selection)."""

    def __post_init__(self) -> None:
        _require(self.radius >= 0, "temporal.radius", self.radius, ">= 0")
        _require(self.strength >= 0.0, "temporal.strength", self.strength, ">= 0")
        _require(self.max_gap >= 0, "temporal.max_gap", self.max_gap, ">= 0")
        _require(self.min_track_frames >= 1, "temporal.min_track_frames",
                 self.min_track_frames, ">= 1")
        _require(0.0 < self.iou_threshold <= 1.0, "temporal.iou_threshold",
                 self.iou_threshold, "in (0, 1]")
        _require(self.max_shift >= 0.0, "temporal.max_shift", self.max_shift, ">= 0")
        _require(0.0 < self.max_embedding_distance <= 2.0, "temporal.max_embedding_distance",
                 self.max_embedding_distance, "in (0, 2]")

    @property
    def reach(self) -> int:
        """Frames on each side of a frame whose detections can change its result (0 if off)."""
        if not self.enabled:
            return 0
        return max(self.radius, self.max_gap, self.min_track_frames - 1)


@dataclass(frozen=True)
class PoolConfig:
    """One Ray actor pool."""

    replicas: int = 1
    """Number of actors; 0 = as many as the cluster's resources fit."""
    num_cpus: float = 1.0
    """CPUs reserved per actor (also its ONNX Runtime / OpenCV thread count, rounded up)."""
    num_gpus: float = 0.0
    """GPUs per actor; fractions (0.25, 0.5) let several actors share one card."""
    max_restarts: int = 3
    """How often Ray restarts a dead actor."""

    def __post_init__(self) -> None:
        _require(self.replicas >= 0, "replicas", self.replicas, ">= 0")
        _require(self.num_cpus > 0, "num_cpus", self.num_cpus, "> 0")
        _require(self.num_gpus >= 0, "num_gpus", self.num_gpus, ">= 0")
        _require(self.num_gpus <= 1 or float(self.num_gpus).is_integer(), "num_gpus",
                 self.num_gpus, "a fraction <= 1 or a whole number")
        _require(self.max_restarts >= -1, "max_restarts", self.max_restarts, ">= -1")


@dataclass(frozen=True)
class ClusterConfig:
    """Where the job runs (`conf/cluster/*`)."""

    address: str | None = None
    """None: start a local Ray sized to this machine. 'auto' or 'ray://host:port': join one."""
    num_cpus: int | None = None
    """CPUs of the local Ray (None = all of this machine's)."""
    num_gpus: int | None = None
    """GPUs of the local Ray (None = detect)."""
    max_chunks_in_flight: int = 4
    """Chunks decoded/swapped at once; bounds memory, independent of video length."""
    chunk_retries: int = 2
    """Times a failed chunk is retried before the job stops."""
    inline: bool = True
    """A job that would start a local Ray of its own (no GPU here) renders chunks on the
    driver's own workers (`fusionray.jobs.inline`; threads, or render processes from
    `inline_process_chunks` chunks a worker): every chunk, on one worker per render actor the
    pool would have started, instead of starting Ray at all (a one-chunk job, or a machine of
    at most `inline_max_cpus` CPUs), or else its first chunks while Ray and the render pool
    start. False: every chunk on an actor."""
    inline_max_cpus: int = 4
    """With `inline`: the most CPUs (`num_cpus`, or this machine's) on which a job of several
    chunks renders them all without Ray (0: never). Above it, Ray's start is a smaller share
    of the job, and its pool spreads onto other nodes (only 2 cores were measured)."""
    inline_process_chunks: int = 4
    """With `inline`, every chunk here on several workers: from this many chunks per worker
    on, each worker renders in a process of its own (no GIL shared with the others, a hung
    chunk's process killed; about 0.5 s to start), below it on a thread of the driver (0:
    always processes). On the 2-core machine processes made the 60 s clip (8 chunks a
    worker) 7 % faster and the 4 s clip (1 a worker) 0.6 s slower; the 12 s clip (3) broke
    even (benchmarks/RESULTS.md)."""
    detect: PoolConfig = field(default_factory=PoolConfig)
    swap: PoolConfig = field(default_factory=lambda: PoolConfig(replicas=0))
    """The render pool: each actor renders whole chunks (detect, swap, encode in one call)."""
    # --- scheduling and faults (jobs.scheduler) ---
    hang_factor: float = 10.0
    """A chunk running longer than hang_factor x the median chunk time is hung: its actor is
    restarted and the chunk retried elsewhere."""
    hang_floor_seconds: float = 120.0
    """Never call a chunk hung before this many seconds (before any chunk has finished the
    limit is hang_factor x hang_floor_seconds)."""
    pin_cpus: bool = True
    """With a local Ray of the job's own: when the CPU actors' threads fill this machine
    exactly, keep each actor on its own cores (`fusionray.actors.pools.core_sets`); the
    driver's workers rendering every chunk without Ray likewise (`fusionray.jobs.inline`). A
    cluster joined by address is never pinned."""
    elastic: bool = False
    """Size pools from what the cluster has or can add, ask the autoscaler for the rest, and
    grow or shrink them as nodes join or leave mid-job (studio clusters)."""
    resource_wait_seconds: float = 300.0
    """Elastic pools: how long to wait for the first actor's resources (autoscaler) before the
    job fails, and for a replacement when every actor is gone."""

    def __post_init__(self) -> None:
        _require(self.max_chunks_in_flight >= 1, "cluster.max_chunks_in_flight",
                 self.max_chunks_in_flight, ">= 1")
        _require(self.chunk_retries >= 0, "cluster.chunk_retries", self.chunk_retries, ">= 0")
        _require(self.inline_max_cpus >= 0, "cluster.inline_max_cpus", self.inline_max_cpus,
                 ">= 0")
        _require(self.inline_process_chunks >= 0, "cluster.inline_process_chunks",
                 self.inline_process_chunks, ">= 0")
        _require(self.num_cpus is None or self.num_cpus >= 1, "cluster.num_cpus",
                 self.num_cpus, ">= 1 or null")
        _require(self.hang_factor > 1, "cluster.hang_factor", self.hang_factor, "> 1")
        _require(self.hang_floor_seconds > 0, "cluster.hang_floor_seconds",
                 self.hang_floor_seconds, "> 0")
        _require(self.resource_wait_seconds >= 0, "cluster.resource_wait_seconds",
                 self.resource_wait_seconds, ">= 0")


@dataclass(frozen=True)
class ModelsConfig:
    """Where models are cached."""

    cache_dir: str | None = None
    """Model cache folder (None = $FUSIONRAY_CACHE or ~/.cache/fusionray/models)."""
    shared_dirs: tuple[str, ...] = ()
    """Read-only model folders (NFS, a synced bucket) searched before the cache."""
    offline: bool = False
    """Never download models (also $FUSIONRAY_OFFLINE=1): use shared folders and the cache."""
    allow_unverified: bool = False
    """Use model files that match none of their published releases (a fine-tuned export);
    they are still reported as "not the published file" (`fusionray.models.store`)."""


@dataclass(frozen=True)
class StorageConfig:
    """Farm plumbing: the output lock's lease and the node-local input cache (`storage.*`)."""

    lock_stale_seconds: float = 120.0
    """An output lock not refreshed for this long is stale and taken over (the job that held
    it died, e.g. a driver pod restarted elsewhere); keep it well above host clock skew."""
    lock_refresh_seconds: float = 0.0
    """How often a running job refreshes its lock (0 = a quarter of lock_stale_seconds)."""
    input_cache_max_gb: float = 100.0
    """Size the node-local cache of downloaded inputs is trimmed to, in GB (0 = no limit)."""
    input_cache_max_age_hours: float = 168.0
    """Cached inputs unused for longer are removed (0 = no age limit)."""

    def __post_init__(self) -> None:
        _require(self.lock_stale_seconds > 0, "storage.lock_stale_seconds",
                 self.lock_stale_seconds, "> 0")
        _require(0 <= self.lock_refresh_seconds < self.lock_stale_seconds,
                 "storage.lock_refresh_seconds", self.lock_refresh_seconds,
                 "in [0, storage.lock_stale_seconds)")
        _require(self.input_cache_max_gb >= 0, "storage.input_cache_max_gb",
                 self.input_cache_max_gb, ">= 0")
        _require(self.input_cache_max_age_hours >= 0, "storage.input_cache_max_age_hours",
                 self.input_cache_max_age_hours, ">= 0")


ARENA_STRATEGIES = ("same_as_requested", "next_power_of_two")
CONV_ALGO_SEARCHES = ("exhaustive", "heuristic", "default")
DECODE_DEVICES = ("auto", "cpu", "nvdec")


@dataclass(frozen=True)
class GpuConfig:
    """How ONNX Runtime sessions use a GPU (`gpu:` in conf/config.yaml); see
    `fusionray.models.providers`. Which GPU, and how much of it, comes from Ray."""

    memory_limit_mb: int = 0
    """Cap of each session's CUDA memory arena in MiB; 0 = the actor's GPU fraction x the card's
    memory x `memory_usable`."""
    memory_usable: float = 0.8
    """Share of an actor's slice of the card its arenas may take, in (0, 1]; the rest is for
    the CUDA context, cuDNN and TensorRT workspaces, which live outside the arena."""
    arena_extend_strategy: str = "same_as_requested"
    """How an arena grows: same_as_requested (only what is asked; actors sharing a card stay
    small) or next_power_of_two (ORT's default: fewer, larger allocations)."""
    cudnn_conv_algo_search: str = "exhaustive"
    """cuDNN convolution algorithm search: exhaustive (fastest kernels, slower first call per
    shape), heuristic or default."""
    engine_cache: bool = True
    """Keep TensorRT engines and timing caches in the model cache (`<cache>/tensorrt`)."""
    tensorrt_fp16: bool = False
    """Build every TensorRT engine with fp16 kernels; the swapper's fp16 export (`swapper.fp16`)
    always is."""
    tensorrt_batch_opt: int = 8
    """Batch size a TensorRT engine is tuned for (models with a dynamic batch dimension)."""
    tensorrt_batch_max: int = 32
    """Largest batch a TensorRT engine accepts, >= tensorrt_batch_opt."""
    tensorrt_workspace_mb: int = 0
    """TensorRT builder workspace in MiB; 0 = TensorRT's default."""
    tensorrt_builder_level: int = 3
    """TensorRT builder optimisation level in [0, 5]: lower builds faster, higher may run faster."""
    require_all_nodes: bool = False
    """Fail instead of placing any graph node on the CPU provider when a GPU provider is used
    (ORT `session.disable_cpu_ep_fallback`). Off: such nodes are reported in run.json."""
    decode: str = "auto"
    """Video decoding: auto (NVDEC where PyAV's build and an assigned GPU offer it, else CPU),
    cpu, or nvdec (fail when NVDEC cannot be used)."""

    def __post_init__(self) -> None:
        _require(self.memory_limit_mb >= 0, "gpu.memory_limit_mb", self.memory_limit_mb,
                 ">= 0 (0 = from the actor's GPU fraction)")
        _require(0.0 < self.memory_usable <= 1.0, "gpu.memory_usable", self.memory_usable,
                 "in (0, 1]")
        _require_choice("gpu.arena_extend_strategy", self.arena_extend_strategy,
                        ARENA_STRATEGIES)
        _require_choice("gpu.cudnn_conv_algo_search", self.cudnn_conv_algo_search,
                        CONV_ALGO_SEARCHES)
        _require(1 <= self.tensorrt_batch_opt <= 1024, "gpu.tensorrt_batch_opt",
                 self.tensorrt_batch_opt, "in [1, 1024]")
        _require(self.tensorrt_batch_opt <= self.tensorrt_batch_max <= 1024,
                 "gpu.tensorrt_batch_max", self.tensorrt_batch_max,
                 f"in [gpu.tensorrt_batch_opt={self.tensorrt_batch_opt}, 1024]")
        _require(self.tensorrt_workspace_mb >= 0, "gpu.tensorrt_workspace_mb",
                 self.tensorrt_workspace_mb, ">= 0 (0 = TensorRT's default)")
        _require(0 <= self.tensorrt_builder_level <= 5, "gpu.tensorrt_builder_level",
                 self.tensorrt_builder_level, "in [0, 5]")
        _require_choice("gpu.decode", self.decode, DECODE_DEVICES)


@dataclass(frozen=True)
class RenderConfig:
    """Everything one render needs. Built once in the driver, shipped to actors as is."""

    video: Any = None
    """Input video path, or 'demo' for the built-in demo clip (`+video=...`)."""
    source: Any = None
    """Source face image path, or a list of paths whose faces are combined (`+source=...`)."""
    output: str | None = None
    """Output video path (default: `<hydra run dir>/<video name>.swapped.mp4`, or .mov/.mkv
    for such an input)."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    swapper: SwapperConfig = field(default_factory=SwapperConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    preview_frames: int = 4
    """Frames shown in the before/after preview.png strip (0 = no preview)."""
    progress: bool = True
    """Show a progress bar (frames done, frames/s, ETA) on stderr."""
    keep_work: bool = False
    """Keep the work folder (segments) after a successful render."""
    on_chunk_error: str = "fail"
    """A chunk that fails every retry: fail (stop, naming the chunk) or passthrough (write its
    frames unswapped and list it in run.json)."""
    provenance: bool = True
    """Tag the output container as altered by fusionray (version, config hash); see
    `fusionray.report.provenance`."""
    export_faces: bool = True
    """Write `<output stem>.faces.parquet` (per-frame detections and selection) beside the
    output; see `fusionray.faces.tracks`."""
    identity_every: int = 5
    """run.json's identity score (learned engine): score the swapped faces of every Nth frame of
    the video (two ArcFace embeddings a face, about 9 % of an inswapper_128 swap on CPU); 1 =
    every frame, 0 = none. See `fusionray.faces.identity.scored_frame`."""
    gpu: GpuConfig = field(default_factory=GpuConfig)
    """GPU use of the ONNX Runtime sessions and the decoder (`fusionray.models.providers`)."""
    media: MediaConfig = field(default_factory=MediaConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def __post_init__(self) -> None:
        _require(isinstance(self.video, str) and self.video != "", "video", self.video,
                 "a video path or 'demo' (pass +video=PATH)")
        sources = self.source_paths
        _require(all(isinstance(s, str) and s for s in sources), "source", self.source,
                 "an image path or a list of image paths")
        if self.video != "demo" and self.selection.mode != "map":  # map: per-entry sources
            _require(len(sources) > 0, "source", self.source,
                     "at least one image path (pass +source=PATH)")
        _require_choice("on_chunk_error", self.on_chunk_error, CHUNK_ERROR_POLICIES)
        _require(0 <= self.preview_frames <= 16, "preview_frames", self.preview_frames,
                 "in [0, 16]")
        _require(isinstance(self.identity_every, int) and self.identity_every >= 0,
                 "identity_every", self.identity_every, "an integer >= 0 (0 = no identity score)")
        self._check_temporal_fits_overlap()

    def _check_temporal_fits_overlap(self) -> None:
        """Each frame's faces come from the frames within `temporal.reach` of it; a chunk reads
        only `chunk.overlap` frames beyond the ones it owns, so a longer reach would make the
        result depend on where the chunk boundaries fall."""
        temporal, overlap = self.temporal, self.chunk.overlap
        if not temporal.enabled:
            return
        for key, value, needed in (
            ("temporal.radius", temporal.radius, temporal.radius),
            ("temporal.max_gap", temporal.max_gap, temporal.max_gap),
            ("temporal.min_track_frames", temporal.min_track_frames,
             temporal.min_track_frames - 1),
        ):
            if needed > overlap:
                limit = "chunk.overlap" if needed == value else "chunk.overlap + 1"
                raise ConfigError(
                    f"Invalid {key}={value!r}: must be <= {limit} (chunk.overlap={overlap}), "
                    f"because a chunk reads only chunk.overlap frames beyond its own. Raise "
                    f"chunk.overlap to at least {needed}, lower {key}, or set "
                    f"temporal.enabled=false."
                )

    @property
    def source_paths(self) -> tuple[str, ...]:
        """The source images as a tuple (empty for the demo's built-in source)."""
        if self.source is None:
            return ()
        if isinstance(self.source, (list, tuple)):
            return tuple(self.source)
        return (self.source,)


# ---------------------------------------------------------------------------------------------
# Hydra glue: mutable twins for composition, frozen objects for everything else.

_TWINS: dict[type, type] = {}


def _schema_type(annotation: Any) -> Any:
    """Map a field annotation to one OmegaConf can type-check."""
    origin = get_origin(annotation)
    if origin is Literal:
        return str
    if origin is tuple:
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return list[_schema_type(args[0])] if args else list[Any]  # type: ignore[misc]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        inner = _schema_type(args[0]) if len(args) == 1 else Any
        return typing.Optional[inner]  # noqa: UP045 - a runtime type object for OmegaConf
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return mutable_twin(annotation)
    return annotation


def mutable_twin(cls: type) -> type:
    """A non-frozen dataclass with the same fields, types and defaults as frozen `cls`."""
    if cls in _TWINS:
        return _TWINS[cls]
    hints = typing.get_type_hints(cls)
    specs: list[tuple[str, Any, Any]] = []
    for item in dataclasses.fields(cls):
        twin_type = _schema_type(hints[item.name])
        if item.default is not dataclasses.MISSING:
            default = item.default
            if isinstance(default, tuple):
                specs.append((item.name, twin_type,
                              field(default_factory=functools.partial(list, default))))
            else:
                specs.append((item.name, twin_type, field(default=default)))
        else:
            factory = item.default_factory
            assert factory is not dataclasses.MISSING
            value = factory()
            if dataclasses.is_dataclass(value):
                twin_cls = mutable_twin(type(value))
                data = _as_plain(value)
                specs.append((item.name, twin_type,
                              field(default_factory=functools.partial(twin_cls, **data))))
            else:
                specs.append((item.name, twin_type,
                              field(default_factory=functools.partial(_as_plain, value))))
    twin = dataclasses.make_dataclass(cls.__name__ + "Schema", specs)
    _TWINS[cls] = twin
    return twin


def _as_plain(value: Any) -> Any:
    """Frozen dataclasses to dicts of twins' constructor arguments; tuples to lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _maybe_twin(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return list(value)
    return value


def _maybe_twin(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return mutable_twin(type(value))(**_as_plain(value))
    return _as_plain(value)


def register_configs() -> None:
    """Store the render schema in Hydra's ConfigStore as `render_schema`."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="render_schema", node=mutable_twin(RenderConfig))


def from_mapping(cls: type, data: Mapping[str, Any], *, prefix: str = "") -> Any:
    """Build frozen `cls` from plain data, recursing into nested config records.

    Raises:
        ConfigError: on an unknown key (naming it and the allowed ones) or a value that fails
            the record's rules.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        key = prefix + unknown[0]
        raise ConfigError(f"Unknown config key {key!r}. Choose one of: "
                          + ", ".join(prefix + n for n in names))
    kwargs: dict[str, Any] = {}
    for name in names:
        if name not in data:
            continue
        value = data[name]
        annotation = hints[name]
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation) \
                and isinstance(value, Mapping):
            value = from_mapping(annotation, value, prefix=f"{prefix}{name}.")
        elif get_origin(annotation) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as error:
        if prefix and not str(error).startswith(("Invalid " + prefix, "Unknown " + prefix)):
            raise ConfigError(str(error).replace("Invalid ", "Invalid " + prefix, 1)) from None
        raise
    except TypeError as error:
        raise ConfigError(f"Bad config under {prefix or 'the root'}: {error}") from None


def to_render_config(cfg: Any) -> RenderConfig:
    """Convert a composed Hydra/OmegaConf config (or a plain dict) to a frozen RenderConfig."""
    from omegaconf import DictConfig, OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(raw, dict)
    data = {str(k): v for k, v in raw.items() if k != "hydra"}
    result = from_mapping(RenderConfig, data)
    assert isinstance(result, RenderConfig)
    return result


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a frozen config tree (tuples become lists)."""
    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    result = convert(config)
    assert isinstance(result, dict)
    return result


def auto_tiles(width: int, height: int) -> int:
    """`detector.tiles` for `tiles: 0` (auto): one tile per started 1920 px of the longer side.

    BlazeFace's back model finds faces down to about 3 % of the frame's longer side in one pass
    (40 px at 1280). Measured at 3840x2160 (`tests/test_input_corpus.py`): one pass misses a
    110 px face; 2 tiles find 100 px (and miss 90). Up to 1080p, one pass keeps the cost at one
    inference per frame; from 4K up, 2 tiles cost 3 inferences per frame.
    """
    return max(1, min(4, -(-max(width, height) // 1920)))


def resolve_for_video(config: RenderConfig, width: int, height: int) -> RenderConfig:
    """The config with its automatic settings (`detector.tiles: 0`) fixed for this video."""
    if config.detector.tiles != 0:
        return config
    detector = dataclasses.replace(config.detector, tiles=auto_tiles(width, height))
    return dataclasses.replace(config, detector=detector)


def config_hash(config: RenderConfig) -> str:
    """sha256 of the settings that change the rendered pixels (not paths, cluster or UI).

    Two runs with the same hash over the same inputs produce the same frames, so a resumed job
    may reuse finished segments only when the hash matches.
    """
    data = config_to_dict(config)
    for key in ("output", "cluster", "progress", "keep_work", "preview_frames", "models",
                "on_chunk_error", "provenance", "export_faces", "identity_every",
                "storage"):
        data.pop(key, None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
