"""Models that are not what they claim: the published pins, the refusal, `--allow-unverified`.

A file can be intact (its recorded sha256 still matches) and still be another file than the
catalogue names: a fine-tuned export, a mislabelled download. The catalogue pins the published
size (and hashes) of each release; a file matching none is reported and refused unless allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from fusionray import cli
from fusionray.errors import ModelError
from fusionray.models import catalog
from fusionray.models.catalog import MODELS, PublishedFile, UrlSource
from fusionray.models.loader import ModelOptions, ModelRunner
from fusionray.models.store import (
    NOT_PUBLISHED,
    PUBLISHED,
    UNPINNED,
    check_published,
    describe_model_files,
    ensure_model,
    find_model,
    import_model,
)
from tests import onnx_fixtures as fx
from tests.test_models_download import _fast, _Server, _url, server  # noqa: F401

NAME = "inswapper_128"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def release(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> bytes:
    """The catalogue's inswapper_128 entry, pinned to one fixture graph as its "published"
    release (its contract is the real one, so import and load go through the real checks)."""
    published = fx.build_identity_swapper()
    spec = dataclasses.replace(MODELS[NAME], published=(
        PublishedFile(len(published), sha256(published), release="test release 1.0"),))
    monkeypatch.setitem(catalog.MODELS, NAME, spec)
    return published


def other_export() -> bytes:
    """Same contract, other weights: what a fine-tuned export looks like to the store."""
    return fx.build_colour_swapper()


def test_every_real_model_is_pinned_except_what_is_not_published() -> None:
    # Each model either pins a published release or says why not: adding one with neither
    # fails here.
    unpinned = sorted(name for name, spec in MODELS.items() if not spec.pins)
    stated = sorted(name for name, spec in MODELS.items() if spec.unpinned_reason)
    assert unpinned == stated
    assert unpinned == ["blendswap_256", "crossface_ghost", "gfpgan_1.2", "gfpgan_1.3",
                        "ghost_1_256", "ghost_2_256", "ghost_3_256", "simswap_256"]
    assert MODELS["blazeface_back"].pins[0].sha256 == (
        "427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2")
    # Two releases of the same weights, both accepted.
    assert {pin.size_bytes for pin in MODELS["arcface_w600k_r50"].pins} == {174388474, 174383860}
    # Every model fetched from FaceFusion's assets pins FaceFusion's own file (a pin of another
    # export alone would refuse what fusionray itself downloads).
    for name, spec in MODELS.items():
        if spec.pins and any("facefusion" in getattr(s, "url", "") for s in spec.sources[:1]):
            assert any(pin.release.startswith("FaceFusion") for pin in spec.pins), name
    # A stated reason cannot sit beside a pin.
    with pytest.raises(ValueError, match="unpinned_reason given"):
        dataclasses.replace(MODELS["gfpgan_1.4"], unpinned_reason="not published")


def test_an_unpinned_model_is_reported_unpinned_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    name = "ghost_1_256"
    spec = MODELS[name]
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / spec.filename).write_bytes(other_export())
    verdict = check_published(spec, cache / spec.filename)
    assert verdict.status == UNPINNED and verdict.status != PUBLISHED
    assert spec.unpinned_reason in verdict.detail
    [row] = describe_model_files([name], cache_dir=cache, shared_dirs=())
    assert row["published"] == UNPINNED
    folders = ["--cache-dir", str(cache)]
    assert cli.main(["models", "list", *folders]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(name))
    assert f"; {UNPINNED}: " in line and f"; {PUBLISHED} (" not in line
    # verify accepts it (nothing to compare with) but says so, never "published".
    assert cli.main(["models", "verify", name, *folders]) == 0
    out = capsys.readouterr().out
    assert f"{name}: ok" in out and f"; {UNPINNED}: " in out and f"; {PUBLISHED} (" not in out


def test_check_published_compares_size_then_hashes(release: bytes, tmp_path: Path) -> None:
    spec = MODELS[NAME]
    same = tmp_path / "same.onnx"
    same.write_bytes(release)
    assert check_published(spec, same).status == PUBLISHED
    assert check_published(spec, same).release == "test release 1.0"
    other = tmp_path / "other.onnx"
    other.write_bytes(other_export())
    verdict = check_published(spec, other)
    assert verdict.status == NOT_PUBLISHED and not verdict.accepted
    assert f"{len(other_export())} bytes; published: {len(release)} bytes" in verdict.detail
    # Same size, other bytes: the sha256 tells them apart, and the message shows it.
    flipped = tmp_path / "flipped.onnx"
    flipped.write_bytes(release[:-1] + bytes([release[-1] ^ 1]))
    verdict = check_published(spec, flipped)
    assert verdict.status == NOT_PUBLISHED
    assert f"sha256 {sha256(flipped.read_bytes())}" in verdict.detail
    unpinned = dataclasses.replace(spec, published=())
    assert check_published(unpinned, other).status == UNPINNED


def test_a_cached_file_that_is_not_the_published_one_is_refused_not_deleted(
    release: bytes, tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = cache / MODELS[NAME].filename
    cached.write_bytes(other_export())  # copied in by hand, not imported
    with pytest.raises(ModelError, match=rf"is not the published file of {NAME} \(.*published: "
                                         rf".*test release 1\.0.*--allow-unverified"):
        ensure_model(NAME, cache_dir=cache, shared_dirs=(), offline=True)
    assert cached.read_bytes() == other_export()
    # The job-level switch (models.allow_unverified) lets it through the common loader.
    runner = ModelRunner(NAME, ModelOptions(cache_dir=cache, shared_dirs=(), offline=True,
                                            allow_unverified=True))
    assert runner.path == cached


def test_a_shared_copy_that_is_not_published_is_refused(release: bytes, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / MODELS[NAME].filename).write_bytes(other_export())
    with pytest.raises(ModelError, match="is not the published file"):
        find_model(NAME, cache_dir=tmp_path / "cache", shared_dirs=[shared])
    found = find_model(NAME, cache_dir=tmp_path / "cache", shared_dirs=[shared],
                       allow_unverified=True)
    assert found is not None and found.where == "shared"


def test_import_refuses_then_records_an_allowed_export(release: bytes, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    export = tmp_path / "finetuned.onnx"
    export.write_bytes(other_export())
    with pytest.raises(ModelError, match="is not the published file"):
        import_model(NAME, export, cache_dir=cache)
    assert not (cache / MODELS[NAME].filename).exists()
    imported = import_model(NAME, export, cache_dir=cache, allow_unverified=True)
    # Later loads accept exactly these bytes without the switch, and still say what they are.
    assert ensure_model(NAME, cache_dir=cache, shared_dirs=(), offline=True) == imported
    verdict = check_published(MODELS[NAME], imported)
    assert verdict.status == NOT_PUBLISHED and verdict.accepted
    # Other bytes put in its place are not covered by that decision.
    imported.write_bytes(fx.build_identity_swapper(swap_inputs=True))
    (cache / "inswapper_128.sha256").write_text(sha256(imported.read_bytes()) + "\n")
    with pytest.raises(ModelError, match="is not the published file"):
        ensure_model(NAME, cache_dir=cache, shared_dirs=(), offline=True)
    # Importing the published file clears the decision.
    good = tmp_path / "published.onnx"
    good.write_bytes(release)
    import_model(NAME, good, cache_dir=cache)
    assert not (cache / "inswapper_128.unverified").exists()
    assert check_published(MODELS[NAME], imported).status == PUBLISHED


def test_a_download_that_is_not_the_published_file_is_removed_and_the_next_source_used(
    release: bytes, server: _Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,  # noqa: F811
) -> None:
    server.files["/wrong.onnx"] = other_export()  # a mirror serving someone else's export
    server.files["/right.onnx"] = release
    spec = dataclasses.replace(MODELS[NAME], sources=(
        UrlSource(_url(server, "/wrong.onnx")), UrlSource(_url(server, "/right.onnx"))))
    monkeypatch.setitem(catalog.MODELS, NAME, spec)
    path = ensure_model(NAME, cache_dir=tmp_path, shared_dirs=(), downloader=_fast())
    assert path.read_bytes() == release
    assert check_published(spec, path).status == PUBLISHED
    # With the wrong mirror only, nothing acceptable arrives and nothing is left behind.
    monkeypatch.setitem(catalog.MODELS, NAME, dataclasses.replace(
        spec, sources=(UrlSource(_url(server, "/wrong.onnx")),)))
    empty = tmp_path / "empty"
    with pytest.raises(ModelError, match="is not the published file"):
        ensure_model(NAME, cache_dir=empty, shared_dirs=(), downloader=_fast())
    assert sorted(p.name for p in empty.iterdir()) == []


def test_cli_list_verify_and_run_json_report_it(
    release: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / MODELS[NAME].filename).write_bytes(other_export())
    folders = ["--cache-dir", str(cache)]
    assert cli.main(["models", "list", *folders]) == 0
    listed = capsys.readouterr().out
    assert "not the published file" in listed and "test release 1.0" in listed
    assert cli.main(["models", "verify", NAME, *folders]) == 1
    assert "BAD" in capsys.readouterr().out
    assert cli.main(["models", "verify", NAME, "--allow-unverified", *folders]) == 0
    [row] = describe_model_files([NAME], cache_dir=cache, shared_dirs=())
    assert row["published"] == NOT_PUBLISHED and row["where"] == "cache"
    assert row["allowed_unverified"] is True and "test release 1.0" in str(row["detail"])
    assert describe_model_files(["gfpgan_1.4"], cache_dir=cache, shared_dirs=()) == [
        {"name": "gfpgan_1.4", "path": None}]
    export = tmp_path / "finetuned.onnx"
    export.write_bytes(other_export())
    assert cli.main(["models", "import", NAME, str(export), *folders]) == 1
    assert "is not the published file" in capsys.readouterr().err
    assert cli.main(["models", "import", NAME, str(export), "--allow-unverified",
                     *folders]) == 0
    assert cli.main(["models", "verify", NAME, *folders]) == 0  # the recorded decision
    assert "imported with --allow-unverified" in capsys.readouterr().out
    published = tmp_path / "published.onnx"
    published.write_bytes(release)
    assert cli.main(["models", "import", NAME, str(published), *folders]) == 0
    capsys.readouterr()
    assert cli.main(["models", "verify", NAME, *folders]) == 0
    assert f"; {PUBLISHED} (test release 1.0)" in capsys.readouterr().out
