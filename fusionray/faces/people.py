"""Several people per job (`selection.mode=map`): who each is, and which tracks are theirs.

A studio shot has several actors, each to be replaced by their own double. A `SourceSet` holds
one `Person` per `selection.map` entry: the source identity to swap in, and how to recognise the
person's face in the video, by reference embeddings (reference images, several per person),
or by anchors (this frame, this face, counted largest first), which need no recognizer.
`assign_people` gives each track of the shot to at most one person; tracks nobody claims are
left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fusionray.errors import ConfigError
from fusionray.faces.track import Track, embedding_distance
from fusionray.swap.base import SourceIdentity
from fusionray.types import FloatArray


@dataclass(frozen=True)
class Person:
    """One person of a map job."""

    identity: SourceIdentity
    """Who they become."""
    name: str = ""
    """For messages and run.json (the map entry's source paths)."""
    reference_embeddings: tuple[FloatArray, ...] = ()
    """(512,) L2-normalised embeddings of their face (reference images); any one close enough
    makes a track theirs."""
    anchors: tuple[tuple[int, int], ...] = ()
    """(frame index, face index largest first): the track holding that face is theirs."""

    def __post_init__(self) -> None:
        if not self.reference_embeddings and not self.anchors:
            raise ValueError(f"Person {self.name!r} needs a reference embedding or an anchor")
        for frame_index, face_index in self.anchors:
            if frame_index < 0 or face_index < 0:
                raise ValueError(f"Person {self.name!r}: anchor ({frame_index}, {face_index}) "
                                 "must be >= 0")


@dataclass(frozen=True)
class SourceSet:
    """The people of a map job, in `selection.map` order (a track's source index)."""

    people: tuple[Person, ...]

    def __post_init__(self) -> None:
        if not self.people:
            raise ValueError("SourceSet needs at least one person")

    def identity(self, index: int) -> SourceIdentity:
        """The source identity of person `index`."""
        return self.people[index].identity


def track_embedding(track: Track) -> FloatArray | None:
    """The normalised mean embedding of a track's detected faces, or None without embeddings."""
    embeddings = [face.embedding for face, seen in zip(track.faces, track.observed, strict=True)
                  if seen and face.embedding is not None]
    if not embeddings:
        return None
    mean = np.mean(np.stack(embeddings).astype(np.float64), axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm).astype(np.float32) if norm > 0 else None


def assign_people(
    tracks: Sequence[Track], people: SourceSet, *, max_distance: float
) -> list[int | None]:
    """The person (index into `people.people`) of each track, or None for nobody.

    Anchors decide first: the track holding the anchored face (the `face index`-th largest
    detected face of that frame among `tracks`) belongs to that person. Every other track goes
    to the person whose nearest reference embedding is closest to the track's mean embedding,
    when that cosine distance is at most `max_distance`; ties go to the earlier person.

    Raises:
        ConfigError: an anchor names a face that is not there, or two people anchor one track.
    """
    owners: list[int | None] = [None] * len(tracks)
    for person_index, person in enumerate(people.people):
        for frame_index, face_index in person.anchors:
            present = [
                (track.face_at(frame_index), number) for number, track in enumerate(tracks)
                if track.face_at(frame_index) is not None
                and track.observed[frame_index - track.first]
            ]
            present.sort(key=lambda item: (-item[0].area, item[1]))  # type: ignore[union-attr]
            if face_index >= len(present):
                raise ConfigError(
                    f"selection.map entry {person_index} ({person.name}): frame {frame_index} "
                    f"has {len(present)} face track(s), no face number {face_index}")
            number = present[face_index][1]
            if owners[number] not in (None, person_index):
                raise ConfigError(
                    f"selection.map entries {owners[number]} and {person_index} anchor the same "
                    f"face track (frame {frame_index}, face {face_index})")
            owners[number] = person_index
    for number, track in enumerate(tracks):
        if owners[number] is not None:
            continue
        embedding = track_embedding(track)
        if embedding is None:
            continue
        best: tuple[float, int] | None = None
        for person_index, person in enumerate(people.people):
            for reference in person.reference_embeddings:
                distance = embedding_distance(embedding, np.asarray(reference, np.float32))
                if distance <= max_distance and (best is None or distance < best[0]):
                    best = (distance, person_index)
        if best is not None:
            owners[number] = best[1]
    return owners
