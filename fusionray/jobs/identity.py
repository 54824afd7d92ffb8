"""Who the faces become: the source identity built from the source images (each source face
through the source gate), the reference face that `selection.mode=reference` matches against,
and the people of `selection.mode=map` (all once per job, in the driver)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fusionray.actors.stages import (
    embedder_from_config,
    swapper_from_config,
    to_display,
    verifier_from_config,
)
from fusionray.config import RenderConfig
from fusionray.errors import ConfigError, FaceNotFoundError
from fusionray.faces.detect import Detector
from fusionray.faces.embed import average_identity
from fusionray.faces.gate import check_source_face, source_limits
from fusionray.faces.people import Person, SourceSet
from fusionray.media.decode import decode_frames, read_image_bgr
from fusionray.media.storage import localise
from fusionray.swap.base import SourceIdentity
from fusionray.types import VideoInfo


def build_source_identity(
    config: RenderConfig, sources: list[Path], detector: Detector
) -> tuple[SourceIdentity, list[str]]:
    """Detect the face in each source image and combine them into one identity.

    Returns:
        The identity, and notes for run.json (e.g. which face was used when several were found).

    Raises:
        FaceNotFoundError: a source image holds no face, or none that passes the source gate
            (`fusionray.faces.gate.check_source_face`: an animal, an object, a turned face).
        MediaError: a source image is missing or unreadable.
    """
    images, faces, notes = [], [], []
    selection = config.selection
    limits = source_limits(min_score=selection.source_min_score,
                           max_landmark_error=selection.source_max_landmark_error,
                           min_size=selection.source_min_face_size)
    verifier = verifier_from_config(config, threads=1)
    for path in sources:
        image = read_image_bgr(path)
        found = detector.detect(image)
        largest = check_source_face(image, found, limits, path=str(path), verifier=verifier,
                                    min_verify_score=selection.source_verify_min_score)
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


def build_source_set(
    config: RenderConfig, detector: Detector
) -> tuple[SourceSet, list[Path], list[str]]:
    """`selection.mode=map`: one person per `selection.map` entry (identity + references).

    Returns:
        The people, every source image used, and notes for run.json.

    Raises:
        FaceNotFoundError: a source image fails the source gate, or a reference image has no
            face. MediaError: an image is unreadable.
    """
    people: list[Person] = []
    paths: list[Path] = []
    notes: list[str] = []
    embedder = (embedder_from_config(config)
                if any(entry.reference_images for entry in config.selection.map) else None)
    for index, entry in enumerate(config.selection.map):
        sources = [localise(s) for s in entry.source_paths]
        identity, entry_notes = build_source_identity(config, sources, detector)
        references = []
        for reference in entry.reference_images:
            image = read_image_bgr(localise(reference))
            found = detector.detect(image)
            if not found:
                raise FaceNotFoundError(f"No face found in selection.map[{index}] reference "
                                        f"image '{reference}'")
            largest = max(found, key=lambda face: face.area)
            assert embedder is not None
            references.append(embedder.embed(image, [largest])[0])
        anchors = (((entry.reference_frame, entry.reference_face),)
                   if entry.reference_frame is not None else ())
        people.append(Person(identity=identity, name=", ".join(entry.source_paths),
                             reference_embeddings=tuple(references), anchors=anchors))
        paths += sources
        notes += entry_notes
    return SourceSet(people=tuple(people)), paths, notes
