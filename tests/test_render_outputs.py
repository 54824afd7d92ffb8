"""What a render leaves beside its video: provenance tags in the container and the face-tracks
Parquet export."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fusionray import __version__
from fusionray.config import config_hash
from fusionray.faces.tracks import FACE_TRACKS_SCHEMA
from fusionray.jobs.pipeline import OutputPaths, render
from fusionray.media.demo import demo_source_image_path
from fusionray.media.probe import probe_video
from fusionray.report.provenance import read_provenance
from tests.clips import write_clip
from tests.test_render import compose_config


@pytest.mark.ray
@pytest.mark.parametrize("extension", [".mp4", ".mkv"])
def test_output_container_says_it_was_altered_by_fusionray(
    local_ray, tmp_path: Path, extension: str
) -> None:
    source = write_clip(tmp_path / "in.mp4", frames=12, audio=True)
    output = tmp_path / f"out{extension}"
    config = compose_config(f"+video={source}", f"+source={demo_source_image_path()}",
                            f"output={output}", "progress=false", "preview_frames=0")
    render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    found = read_provenance(output)
    assert found is not None
    assert found.version == __version__
    assert config_hash(config).startswith(found.config_hash)
    with av.open(str(output)) as container:
        tags = {k.lower(): v for k, v in container.metadata.items()}
    assert tags["comment"] == f"altered by fusionray {__version__} (config {found.config_hash})"
    if extension == ".mkv":  # Matroska keeps the exact fields as their own tags
        assert tags["fusionray_config_hash"] == config_hash(config)


@pytest.mark.ray
def test_provenance_can_be_turned_off(local_ray, tmp_path: Path) -> None:
    source = write_clip(tmp_path / "in.mp4", frames=12, audio=False)
    output = tmp_path / "out.mp4"
    config = compose_config(f"+video={source}", f"+source={demo_source_image_path()}",
                            f"output={output}", "progress=false", "preview_frames=0",
                            "provenance=false")
    render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    assert read_provenance(output) is None


@pytest.mark.ray
def test_face_tracks_export_of_the_demo(local_ray, tmp_path: Path) -> None:
    output = tmp_path / "demo.mp4"
    config = compose_config("+video=demo", f"output={output}", "progress=false",
                            "preview_frames=0", "chunk.frames=40", "quality=draft")
    summary = render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    path = OutputPaths.for_video(output).faces
    table = pq.read_table(path)
    assert table.schema.remove_metadata().equals(FACE_TRACKS_SCHEMA)
    info = probe_video(summary.input)
    assert Fraction(table.schema.metadata[b"time_base"].decode()) == info.time_base
    frame = pd.read_parquet(path)
    assert frame["frame"].is_monotonic_increasing
    assert frame["frame"].between(0, info.frame_count - 1).all()
    # One astronaut, followed through the whole clip across chunks of 40 frames.
    assert frame["track_id"].notna().all() and set(frame["track_id"]) == {0}
    assert (frame["pts"] == [info.frame_pts[i] for i in frame["frame"]]).all()
    assert int(frame["swapped"].sum()) == summary.faces_swapped
    assert frame.loc[frame["swapped"], "frame"].nunique() == summary.frames_with_faces
    first = frame.iloc[0]
    assert len(first["bbox"]) == 4 and len(first["landmarks"]) == 12
    assert first["landmarks_layout"] == "blazeface6"
    # The astronaut faces the camera, which rolls by up to ±5 degrees.
    for angle, limit in (("yaw", 30), ("pitch", 30), ("roll", 20)):
        assert frame["pose"].map(lambda p, a=angle: p[a]).abs().max() < limit, angle


@pytest.mark.ray
def test_face_tracks_mark_unselected_faces(local_ray, tmp_path: Path) -> None:
    output = tmp_path / "demo.mp4"
    config = compose_config("+video=demo", f"output={output}", "progress=false",
                            "preview_frames=0", "quality=draft", "selection.min_face_size=4000")
    summary = render(config, run_dir=tmp_path, config_yaml="x: 1\n")
    frame = pd.read_parquet(OutputPaths.for_video(output).faces)
    assert summary.faces_swapped == 0 and len(frame) >= 90 and not frame["swapped"].any()
