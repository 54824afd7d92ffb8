"""Inputs and outputs on object storage, against a real S3-compatible server on loopback."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import ray

from fusionray.errors import MediaError, OutputError
from fusionray.media import storage
from fusionray.media.storage import (
    check_destination,
    is_remote,
    is_uri,
    localise,
    publish,
    sibling,
)
from tests.s3server import CREDENTIALS, S3Server, running_s3_server

BUCKET = "shots"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    os.environ.update(CREDENTIALS)  # before Ray starts, so its workers inherit them
    try:
        with running_s3_server(tmp_path_factory.mktemp("moto")) as server:
            server.client().create_bucket(Bucket=BUCKET)
            yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_uri_classification() -> None:
    assert is_uri("s3://b/k") and is_remote("s3://b/k") and is_remote("gs://b/k")
    assert is_uri("file:///tmp/x") and not is_remote("file:///tmp/x")
    assert not is_uri("/tmp/x.mp4") and not is_uri("C:\\x.mp4") and not is_uri("demo")
    assert sibling("s3://b/out/a.mp4?scheme=http", "a.run.json") == \
        "s3://b/out/a.run.json?scheme=http"


def test_local_paths_and_file_uris_are_used_in_place(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"x")
    assert localise(str(path)) == path
    assert localise(path.as_uri()) == path


def test_localise_downloads_once_and_caches(s3: S3Server, tmp_path: Path) -> None:
    s3.client().put_object(Bucket=BUCKET, Key="in/clip.mp4", Body=b"0123456789" * 1000)
    first = localise(s3.uri(BUCKET, "in/clip.mp4"), cache_dir=tmp_path)
    assert first.read_bytes() == b"0123456789" * 1000 and first.name == "clip.mp4"
    mtime = first.stat().st_mtime_ns
    assert localise(s3.uri(BUCKET, "in/clip.mp4"), cache_dir=tmp_path) == first
    assert first.stat().st_mtime_ns == mtime  # reused, not downloaded again
    # A changed object (new size/mtime) gets a fresh copy.
    s3.client().put_object(Bucket=BUCKET, Key="in/clip.mp4", Body=b"new")
    assert localise(s3.uri(BUCKET, "in/clip.mp4"), cache_dir=tmp_path).read_bytes() == b"new"


def test_missing_input_is_a_clear_error(s3: S3Server, tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="Input not found"):
        localise(s3.uri(BUCKET, "in/nothing.mp4"), cache_dir=tmp_path)


def test_publish_is_atomic(s3: S3Server, tmp_path: Path, monkeypatch) -> None:
    local = tmp_path / "out.mp4"
    local.write_bytes(os.urandom(3 << 20))
    seen: list[list[str]] = []
    original = storage.finalise

    def checked(filesystem: pafs.FileSystem, temporary: str, final: str) -> None:
        # The bytes are all uploaded, under a temporary key; nothing at the final key yet.
        keys = s3.keys(BUCKET)
        seen.append(keys)
        assert "renders/out.mp4" not in keys
        partial = [k for k in keys if k.startswith("renders/.out.mp4.partial-")]
        assert len(partial) == 1
        head = s3.client().head_object(Bucket=BUCKET, Key=partial[0])
        assert head["ContentLength"] == local.stat().st_size
        original(filesystem, temporary, final)

    monkeypatch.setattr(storage, "finalise", checked)
    publish(local, s3.uri(BUCKET, "renders/out.mp4"))
    assert seen, "finalise was not called"
    assert [k for k in s3.keys(BUCKET) if k.startswith("renders/")] == ["renders/out.mp4"]
    body = s3.client().get_object(Bucket=BUCKET, Key="renders/out.mp4")["Body"].read()
    assert body == local.read_bytes()


def test_failed_publish_leaves_nothing(s3: S3Server, tmp_path: Path, monkeypatch) -> None:
    local = tmp_path / "out.mp4"
    local.write_bytes(b"a" * 100_000)

    def broken(filesystem: pafs.FileSystem, temporary: str, final: str) -> None:
        raise OSError("connection reset while finalising")

    monkeypatch.setattr(storage, "finalise", broken)
    with pytest.raises(OutputError, match="connection reset"):
        publish(local, s3.uri(BUCKET, "failed/out.mp4"))
    assert not [k for k in s3.keys(BUCKET) if k.startswith("failed/")]


def test_check_destination(s3: S3Server, tmp_path: Path) -> None:
    check_destination(s3.uri(BUCKET, "any/folder/out.mp4"))
    with pytest.raises(OutputError, match="bucket 'nobucket' does not exist"):
        check_destination(s3.uri("nobucket", "out.mp4"))
    with pytest.raises(OutputError, match="does not exist"):
        check_destination((tmp_path / "missing" / "out.mp4").as_uri())


@pytest.mark.ray
def test_render_from_and_to_s3(s3: S3Server, tmp_path: Path) -> None:
    from fusionray.jobs.pipeline import render
    from fusionray.media.demo import demo_source_image_path, ensure_demo_clip
    from fusionray.report.provenance import read_provenance
    from tests.test_render import compose_config

    client = s3.client()
    client.upload_file(str(ensure_demo_clip()), BUCKET, "in/demo.mp4")
    client.upload_file(str(demo_source_image_path()), BUCKET, "in/face.png")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        config = compose_config(
            # URIs with query options need quoting in Hydra overrides (`=`, `&`).
            f"+video='{s3.uri(BUCKET, 'in/demo.mp4')}'",
            f"+source='{s3.uri(BUCKET, 'in/face.png')}'",
            f"output='{s3.uri(BUCKET, 'out/demo.swapped.mp4')}'", "progress=false",
            "quality=draft", "chunk.frames=50", "preview_frames=1")
        summary = render(config, run_dir=tmp_path / "run", config_yaml="x: 1\n")
    finally:
        ray.shutdown()
    assert summary.output == s3.uri(BUCKET, "out/demo.swapped.mp4")
    assert summary.frames == 100 and summary.faces_swapped >= 90
    assert [k for k in s3.keys(BUCKET) if k.startswith("out/")] == [
        "out/demo.swapped.config.yaml", "out/demo.swapped.faces.parquet",
        "out/demo.swapped.mp4", "out/demo.swapped.preview.png", "out/demo.swapped.run.json"]
    fetched = tmp_path / "fetched.mp4"
    client.download_file(BUCKET, "out/demo.swapped.mp4", str(fetched))
    assert read_provenance(fetched) is not None


@pytest.mark.parametrize("durable", [False, True])
def test_write_atomic_replaces_whole_or_leaves_the_old_file(tmp_path: Path, durable: bool) -> None:
    """The writer sees a hidden temporary file with the target's extension; a failed write
    leaves the old file and no temporary file; a good one replaces it."""
    target = tmp_path / "run.faces.parquet"
    target.write_bytes(b"old")
    seen: list[Path] = []

    def failing(partial: Path) -> None:
        seen.append(partial)
        partial.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        storage.write_atomic(target, failing, durable=durable)
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".run.faces.partial-")
    assert seen[0].suffix == ".parquet"
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["run.faces.parquet"]
    storage.write_atomic(target, lambda partial: partial.write_bytes(b"new"), durable=durable)
    assert target.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["run.faces.parquet"]
