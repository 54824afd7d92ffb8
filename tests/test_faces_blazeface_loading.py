"""BlazeFace, the default detector, opens its model through the common loader (`ModelRunner`):
shared model folders, offline mode and the provider fallback policy apply to it as to every
other model. Uses the real BlazeFace file from the default cache (the other BlazeFace tests
fetch it there)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fusionray.errors import ConfigError, ModelError
from fusionray.faces.blazeface import BlazeFaceDetector
from fusionray.faces.detect import build_detector
from fusionray.models.loader import ModelRunner
from tests.faces_fixtures import astronaut_bgr, blazeface


@pytest.fixture(scope="module")
def published_back() -> Path:
    """The published back-camera model file (fetched once into the default cache)."""
    return blazeface("back").runner.path


def test_shared_folder_serves_the_default_detector_offline(
    published_back: Path, tmp_path: Path,
) -> None:
    shared, cache = tmp_path / "shared", tmp_path / "cache"
    shared.mkdir()
    shutil.copyfile(published_back, shared / published_back.name)
    detector = build_detector("blazeface", model="back", cache_dir=cache,
                              shared_dirs=(shared,), offline=True)
    assert isinstance(detector, BlazeFaceDetector)
    assert isinstance(detector.runner, ModelRunner)
    assert detector.runner.path == shared / published_back.name
    assert not cache.exists()  # nothing fetched, nothing written
    assert detector.detect(astronaut_bgr())  # and it is the working model


def test_offline_without_a_copy_is_the_loaders_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"'blazeface_back' is not in the cache .* downloads "
                                         r"are off.*fusionray models pull blazeface_back"):
        BlazeFaceDetector(model="back", cache_dir=tmp_path / "cache", shared_dirs=(),
                          offline=True)


def test_corrupt_shared_copy_is_skipped_like_any_model(
    published_back: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    shared, cache = tmp_path / "shared", tmp_path / "cache"
    shared.mkdir()
    (shared / published_back.name).write_bytes(published_back.read_bytes()[:-10])
    cache.mkdir()
    shutil.copyfile(published_back, cache / published_back.name)
    detector = BlazeFaceDetector(model="back", cache_dir=cache, shared_dirs=(shared,),
                                 offline=True)
    assert detector.runner.path == cache / published_back.name
    assert any("Skipping the shared copy" in record.message for record in caplog.records)
    # Reported and skipped, never deleted: a shared folder belongs to whoever filled it.
    truncated = shared / published_back.name
    assert truncated.stat().st_size == published_back.stat().st_size - 10


def test_provider_fallback_policy_is_the_common_one(published_back: Path) -> None:
    cache = published_back.parent
    # cpu in the list: a provider that cannot run here falls back down the list.
    fallback = BlazeFaceDetector(model="back", cache_dir=cache, providers=("cuda", "cpu"))
    assert fallback.provider == "CPUExecutionProvider"
    # Without cpu: an error naming the provider, not a silent CPU run (on a machine with a GPU
    # this opens CUDA instead, which is just as much the common policy).
    try:
        gpu_only = BlazeFaceDetector(model="back", cache_dir=cache, providers=("cuda",))
    except ConfigError as error:
        assert "None of the providers ['cuda'] can run" in str(error)
    else:
        assert gpu_only.provider == "CUDAExecutionProvider"
