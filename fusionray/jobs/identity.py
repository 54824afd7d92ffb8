"""Who the faces become: the source identity built from the source images, and the reference
face that `selection.mode=reference` matches against (both once per job, in the driver)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fusionray.actors.stages import embedder_from_config, swapper_from_config, to_display
from fusionray.config import RenderConfig
from fusionray.errors import ConfigError, FaceNotFoundError
from fusionray.faces.detect import Detector
from fusionray.faces.embed import average_identity
from fusionray.media.decode import decode_frames, read_image_bgr
from fusionray.swap.base import SourceIdentity
from fusionray.types import VideoInfo


def build_source_identity(
    config: RenderConfig, sources: list[Path], detector: Detector
) -> tuple[SourceIdentity, list[str]]:
    """Detect the face in each source image and combine them into one identity.

    Returns:
        The identity, and notes for run.json (e.g. which face was used when several were found).

    Raises:
        FaceNotFoundError: a source image holds no face.
        MediaError: a source image is missing or unreadable.
    """
    images, faces, notes = [], [], []
    for path in sources:
        image = read_image_bgr(path)
        found = detector.detect(image)
        if not found:
            raise FaceNotFoundError(f"No face found in source image '{path}'")
        largest = max(found, key=lambda face: face.area)
        if len(found) > 1:
            notes.append(f"source image '{path}' has {len(found)} faces; used the largest")
        images.append(image)
        faces.append(largest)
    if config.swapper.name == "inswapper":
        # Only the embedding travels to the swap actors: no need to load the swapper here.
        embedder = embedder_from_config(config)
        embeddings = [embedder.embed(image, [face])[0] for image, face in zip(images, faces,
                                                                               strict=True)]
        identity = SourceIdentity(crop=None, crop_size=128, image_count=len(embeddings),
                                  embedding=average_identity(embeddings))
        return identity, notes
    return swapper_from_config(config).prepare_source(images, faces), notes


def attach_reference(
    config: RenderConfig, identity: SourceIdentity, info: VideoInfo, detector: Detector
) -> SourceIdentity:
    """For `selection.mode=reference`, embed the reference face and attach it to the identity.

    The reference is `selection.reference_image` or frame `selection.reference_frame` of the
    input; `selection.reference_face` picks among its faces, largest first.

    Raises:
        FaceNotFoundError: the reference image/frame has no face at that index.
        MediaError: the reference image is unreadable. ConfigError: frame out of range.
    """
    selection = config.selection
    if selection.mode != "reference":
        return identity
    if selection.reference_image is not None:
        where = f"reference image '{selection.reference_image}'"
        image = read_image_bgr(Path(selection.reference_image).expanduser())
    else:
        index = int(selection.reference_frame or 0)
        if index >= info.frame_count:
            raise ConfigError(f"Invalid selection.reference_frame={index}: the video has "
                              f"{info.frame_count} frames")
        where = f"frame {index} of the input"
        image = to_display(next(iter(decode_frames(info, index, index + 1)))[1], info.rotation)
    faces = sorted(detector.detect(image), key=lambda face: face.area, reverse=True)
    if len(faces) <= selection.reference_face:
        raise FaceNotFoundError(f"No face number {selection.reference_face} in {where} "
                                f"({len(faces)} faces found)")
    embedding = embedder_from_config(config).embed(image, [faces[selection.reference_face]])[0]
    return replace(identity, reference_embedding=embedding)
