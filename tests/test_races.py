"""Races on one node: actors localising the same input, fetching the same model, and the
input cache's eviction, with threads and processes on loopback (moto S3, a local HTTP server).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fusionray.media import storage
from fusionray.media.storage import (
    ENTRY_LOCK,
    InputCachePolicy,
    evict_inputs,
    exclusive_file_lock,
    localise,
)
from fusionray.models.catalog import ArchiveSource, ModelSpec, UrlSource
from fusionray.models.store import ensure_model
from tests.s3server import CREDENTIALS, S3Server, running_s3_server
from tests.test_models_download import (  # noqa: F401
    PAYLOAD,
    _fast,
    _Server,
    _sha,
    _spec,
    _url,
    fake_model,
    server,
)

BUCKET = "races"
WORKERS = 6


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        with running_s3_server(tmp_path_factory.mktemp("moto")) as running:
            running.client().create_bucket(Bucket=BUCKET)
            yield running
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def all_at_once(count: int, work: Callable[[], object]) -> list[object]:
    """Run `work` on `count` threads released together."""
    start = threading.Barrier(count)

    def run() -> object:
        start.wait()
        return work()

    with ThreadPoolExecutor(count) as pool:
        return [future.result() for future in [pool.submit(run) for _ in range(count)]]


def test_actors_localising_one_input_download_it_once(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = os.urandom(3 << 20)
    s3.client().put_object(Bucket=BUCKET, Key="shot/plate.mov", Body=body)
    downloads: list[int] = []
    real_download = storage._download

    def counted(*args: object) -> None:
        downloads.append(threading.get_ident())
        time.sleep(0.3)  # a slow link: the others arrive while it is still running
        real_download(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "_download", counted)
    cache = tmp_path / "inputs"
    paths = all_at_once(WORKERS, lambda: localise(s3.uri(BUCKET, "shot/plate.mov"),
                                                  cache_dir=cache))
    assert len(downloads) == 1
    assert len(set(paths)) == 1 and Path(str(paths[0])).read_bytes() == body
    [entry] = [p for p in cache.iterdir()]
    assert sorted(p.name for p in entry.iterdir()) == [ENTRY_LOCK, "plate.mov"]  # no partials


def test_the_lock_holds_between_processes(tmp_path: Path) -> None:
    lock = tmp_path / "entry" / ENTRY_LOCK
    probe = [sys.executable, "-c",
             "import sys; from pathlib import Path; "
             "from fusionray.media.storage import exclusive_file_lock as lock\n"
             "with lock(Path(sys.argv[1]), blocking=False) as held: print(held)", str(lock)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    with exclusive_file_lock(lock):
        held_elsewhere = subprocess.run(probe, capture_output=True, text=True, env=env,
                                        check=True).stdout.strip()
    free_again = subprocess.run(probe, capture_output=True, text=True, env=env,
                                check=True).stdout.strip()
    assert (held_elsewhere, free_again) == ("False", "True")


def test_concurrent_model_fetches_download_once_and_keep_the_file(
    server: _Server, fake_model: dict[str, ModelSpec], tmp_path: Path,  # noqa: F811
) -> None:
    server.files["/m.onnx"] = PAYLOAD
    server.delay = 0.002  # 16 blocks: about 30 ms a download, so they overlap
    fake_model["m"] = _spec("m", UrlSource(_url(server, "/m.onnx")), sha256=_sha(PAYLOAD))
    paths = all_at_once(WORKERS, lambda: ensure_model("m", cache_dir=tmp_path, shared_dirs=(),
                                                      downloader=_fast()))
    assert len(set(paths)) == 1
    assert [path for path, _ in server.requests_seen] == ["/m.onnx"]
    assert (tmp_path / "m.onnx").read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no partials, no locks


def test_two_models_of_one_pack_fetch_the_pack_once(
    server: _Server, fake_model: dict[str, ModelSpec], tmp_path: Path,  # noqa: F811
) -> None:
    import io
    import zipfile

    pack = io.BytesIO()
    with zipfile.ZipFile(pack, "w") as archive:
        archive.writestr("pack/det.onnx", PAYLOAD)
        archive.writestr("pack/rec.onnx", PAYLOAD[::-1])
    server.files["/pack.zip"] = pack.getvalue()
    server.delay = 0.002
    for name, member in (("det", "det.onnx"), ("rec", "rec.onnx")):
        fake_model[name] = _spec(name, ArchiveSource(_url(server, "/pack.zip"), member))
    names = iter(["det", "rec"] * (WORKERS // 2))
    lock = threading.Lock()

    def fetch() -> Path:
        with lock:
            name = next(names)
        return ensure_model(name, cache_dir=tmp_path, shared_dirs=(), downloader=_fast())

    paths = {Path(str(p)).name for p in all_at_once(WORKERS, fetch)}
    assert paths == {"det.onnx", "rec.onnx"}
    assert [path for path, _ in server.requests_seen] == ["/pack.zip"]
    assert (tmp_path / "det.onnx").read_bytes() == PAYLOAD
    assert (tmp_path / "rec.onnx").read_bytes() == PAYLOAD[::-1]


# --- eviction -----------------------------------------------------------------------------

def make_entry(root: Path, name: str, size: int, *, used_ago: float) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "clip.mov").write_bytes(b"\0" * size)
    (folder / ENTRY_LOCK).touch()  # as localise leaves it (creating it later touches the folder)
    when = time.time() - used_ago
    os.utime(folder, (when, when))
    return folder


def test_eviction_removes_old_entries_then_least_recently_used(tmp_path: Path) -> None:
    hour = 3600.0
    stale = make_entry(tmp_path, "stale", 100, used_ago=30 * 24 * hour)
    oldest = make_entry(tmp_path, "oldest", 400, used_ago=5 * hour)
    older = make_entry(tmp_path, "older", 400, used_ago=3 * hour)
    recent = make_entry(tmp_path, "recent", 400, used_ago=1 * hour)
    policy = InputCachePolicy(max_bytes=900, max_age_seconds=7 * 24 * hour,
                              keep_recent_seconds=60)
    removed = evict_inputs(tmp_path, policy)
    # 1300 bytes: the stale one goes for its age, then the oldest until <= 900.
    assert removed == [stale, oldest]
    assert older.exists() and recent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["older", "recent"]  # nothing aside


def test_eviction_spares_what_was_just_used_and_what_is_being_downloaded(
    tmp_path: Path,
) -> None:
    just_used = make_entry(tmp_path, "just_used", 500, used_ago=5)
    downloading = make_entry(tmp_path, "downloading", 500, used_ago=10 * 24 * 3600)
    kept = make_entry(tmp_path, "kept", 500, used_ago=7200)
    policy = InputCachePolicy(max_bytes=0, max_age_seconds=3600, keep_recent_seconds=600)
    with exclusive_file_lock(downloading / ENTRY_LOCK):
        removed = evict_inputs(tmp_path, policy, keep=kept)
    assert removed == []
    assert just_used.exists() and downloading.exists() and kept.exists()
    assert evict_inputs(tmp_path, policy) == [downloading, kept]


def test_localise_applies_the_policy_after_a_download(s3: S3Server, tmp_path: Path) -> None:
    cache = tmp_path / "inputs"
    old = make_entry(cache, "0ld0ld0ld0ld0ld0ld0ld0ld", 5000, used_ago=3 * 3600)
    s3.client().put_object(Bucket=BUCKET, Key="shot/b.mov", Body=b"b" * 4000)
    policy = InputCachePolicy(max_bytes=6000, keep_recent_seconds=60)
    path = localise(s3.uri(BUCKET, "shot/b.mov"), cache_dir=cache, policy=policy)
    assert path.read_bytes() == b"b" * 4000  # the new entry is never its own victim
    assert not old.exists()


def test_policy_values_are_checked() -> None:
    with pytest.raises(ValueError, match="max_bytes must be >= 0 or None, got -1"):
        InputCachePolicy(max_bytes=-1)
    with pytest.raises(ValueError, match="max_age_seconds must be > 0"):
        InputCachePolicy(max_age_seconds=0)



def test_policy_from_the_storage_config() -> None:
    from fusionray.config import StorageConfig

    policy = InputCachePolicy.from_config(StorageConfig(input_cache_max_gb=2,
                                                        input_cache_max_age_hours=0))
    assert (policy.max_bytes, policy.max_age_seconds) == (2_000_000_000, None)
