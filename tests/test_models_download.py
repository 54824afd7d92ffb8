"""The downloader and the model store against a local HTTP server started by the test.

No public model host is contacted: the catalogue entry under test is replaced by one whose
sources point at the local server, which can cut connections, answer 404, dribble bytes slowly
or serve the wrong bytes.
"""

from __future__ import annotations

import http.server
import logging
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusionray import cli
from fusionray.errors import ModelError
from fusionray.models import catalog
from fusionray.models.catalog import ArchiveSource, ModelSpec, UrlSource
from fusionray.models.download import ResumableDownloader, partial_path
from fusionray.models.store import ensure_model, find_model, import_model, locate_model
from tests.onnx_fixtures import build_identity_swapper

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB of known bytes.


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    cut_after: dict[str, int]
    """Path -> bytes sent before the connection is cut (first request only)."""
    delay: float
    requests_seen: list[tuple[str, str | None]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests_seen.append((self.path, self.headers.get("Range")))
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        ranged = self.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            start = int(ranged[6:].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = self.server.cut_after.pop(self.path, None)
        chunk = 1 << 16
        for offset in range(start, len(body), chunk):
            if cut is not None and offset - start >= cut:
                self.wfile.flush()
                self.connection.shutdown(2)  # Drop the connection mid-body.
                return
            if self.server.delay:
                time.sleep(self.server.delay)
            self.wfile.write(body[offset:offset + chunk])


@pytest.fixture()
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.cut_after, httpd.delay, httpd.requests_seen = {}, {}, 0.0, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(server: _Server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def _fast() -> ResumableDownloader:
    return ResumableDownloader(attempts=3, timeout=2.0, retry_wait=0.01, progressbar=False)


@pytest.fixture()
def fake_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModelSpec]]:
    """Replace the catalogue with local-server entries, restored after the test."""
    models: dict[str, ModelSpec] = {}
    monkeypatch.setattr(catalog, "MODELS", models)
    yield models


def _spec(name: str, *sources: object, sha256: str | None = None,
          size: int | None = None) -> ModelSpec:
    return ModelSpec(name=name, filename=f"{name}.onnx", sha256=sha256, size_bytes=size,
                     sources=tuple(sources),  # type: ignore[arg-type]
                     inputs=(), outputs=(), input_size=128, license="test fixture")


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_resume_after_a_cut_connection(server: _Server, fake_model: dict[str, ModelSpec],
                                       tmp_path: Path) -> None:
    server.files["/m.onnx"] = PAYLOAD
    server.cut_after["/m.onnx"] = 300_000
    fake_model["m"] = _spec("m", UrlSource(_url(server, "/m.onnx")), sha256=_sha(PAYLOAD),
                            size=len(PAYLOAD))
    path = ensure_model("m", cache_dir=tmp_path, downloader=_fast())
    assert path.read_bytes() == PAYLOAD
    ranges = [r for p, r in server.requests_seen if p == "/m.onnx"]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1][6:-1]) >= 65536  # The second request asked only for the rest.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # No partials left.


def test_partial_from_an_earlier_run_is_resumed(server: _Server, tmp_path: Path) -> None:
    url = _url(server, "/big.bin")
    server.files["/big.bin"] = PAYLOAD
    partial_path(tmp_path, url).write_bytes(PAYLOAD[:400_000])
    out = tmp_path / "out.bin"
    _fast()(url, out, None)
    assert out.read_bytes() == PAYLOAD
    assert server.requests_seen == [("/big.bin", "bytes=400000-")]


def test_bad_hash_is_removed_and_reported(server: _Server, fake_model: dict[str, ModelSpec],
                                          tmp_path: Path) -> None:
    server.files["/m.onnx"] = PAYLOAD
    fake_model["m"] = _spec("m", UrlSource(_url(server, "/m.onnx")), sha256="0" * 64)
    with pytest.raises(ModelError, match=r"m.onnx.*(hash|sha256).*corrupt download was removed"):
        ensure_model("m", cache_dir=tmp_path, downloader=_fast())
    assert [p for p in tmp_path.iterdir() if p.is_file()] == []


def test_crc32_sidecar_checked(server: _Server, fake_model: dict[str, ModelSpec],
                               tmp_path: Path) -> None:
    crc = f"{zlib.crc32(PAYLOAD) & 0xFFFFFFFF:08x}"
    server.files.update({"/good.onnx": PAYLOAD, "/good.hash": crc.encode(),
                         "/bad.onnx": PAYLOAD[:-1] + b"x", "/bad.hash": crc.encode()})
    fake_model["m"] = _spec("m", UrlSource(_url(server, "/bad.onnx"), _url(server, "/bad.hash")),
                            UrlSource(_url(server, "/good.onnx"), _url(server, "/good.hash")))
    found = locate_model("m", cache_dir=tmp_path, downloader=_fast())
    assert (found.where, found.check) == ("downloaded", "crc32")
    assert (tmp_path / "m.hash").read_text().strip() == crc
    # Mirrors in order: the corrupt first mirror was tried and rejected, the second served.
    assert [p for p, _ in server.requests_seen] == ["/bad.hash", "/bad.onnx", "/good.hash",
                                                    "/good.onnx"]
    # Corrupting the cached copy is caught by the sidecar and the file re-fetched.
    found.path.write_bytes(PAYLOAD[:1000])
    again = locate_model("m", cache_dir=tmp_path, downloader=_fast())
    assert again.path.read_bytes() == PAYLOAD


def test_404_then_mirror(server: _Server, fake_model: dict[str, ModelSpec],
                         tmp_path: Path) -> None:
    server.files["/mirror/m.onnx"] = PAYLOAD
    fake_model["m"] = _spec("m", UrlSource(_url(server, "/gone/m.onnx")),
                            UrlSource(_url(server, "/mirror/m.onnx")), sha256=_sha(PAYLOAD))
    assert ensure_model("m", cache_dir=tmp_path, downloader=_fast()).read_bytes() == PAYLOAD
    # A 404 is not retried.
    assert [p for p, _ in server.requests_seen].count("/gone/m.onnx") == 1


def test_every_source_failing_lists_each(server: _Server, fake_model: dict[str, ModelSpec],
                                         tmp_path: Path) -> None:
    fake_model["m"] = _spec("m", UrlSource(_url(server, "/a.onnx")),
                            UrlSource(_url(server, "/b.onnx")))
    with pytest.raises(ModelError) as caught:
        ensure_model("m", cache_dir=tmp_path, downloader=_fast())
    message = str(caught.value)
    assert "/a.onnx: the server answered HTTP 404" in message and "/b.onnx" in message
    assert "fusionray models import m FILE" in message


def test_slow_server_completes_and_stalled_server_times_out(
    server: _Server, fake_model: dict[str, ModelSpec], tmp_path: Path
) -> None:
    server.files["/m.onnx"] = PAYLOAD[:200_000]
    server.delay = 0.05  # 4 chunks, 50 ms each: slow but alive.
    fake_model["m"] = _spec("m", UrlSource(_url(server, "/m.onnx")))
    assert ensure_model("m", cache_dir=tmp_path, downloader=_fast()).stat().st_size == 200_000
    server.delay = 1.0  # Silent for longer than the read timeout: each try is cut.
    stalled = ResumableDownloader(attempts=2, timeout=0.3, retry_wait=0.01, progressbar=False)
    with pytest.raises(ModelError, match="download failed after 2 tries"):
        stalled(_url(server, "/m.onnx"), tmp_path / "x", None)


def test_archive_source_and_recorded_sha(server: _Server, fake_model: dict[str, ModelSpec],
                                         tmp_path: Path) -> None:
    pack = tmp_path / "pack.zip"
    with zipfile.ZipFile(pack, "w") as archive:
        archive.writestr("buffalo/det.onnx", PAYLOAD)
        archive.writestr("buffalo/rec.onnx", PAYLOAD[::-1])
    server.files["/pack.zip"] = pack.read_bytes()
    cache = tmp_path / "cache"
    fake_model["det"] = _spec("det", ArchiveSource(_url(server, "/pack.zip"), "det.onnx"))
    fake_model["rec"] = _spec("rec", ArchiveSource(_url(server, "/pack.zip"), "rec.onnx"))
    assert ensure_model("det", cache_dir=cache, downloader=_fast()).read_bytes() == PAYLOAD
    found = locate_model("rec", cache_dir=cache, downloader=_fast())
    assert found.path.read_bytes() == PAYLOAD[::-1]
    assert server.requests_seen.count(("/pack.zip", None)) == 1  # The pack is reused.
    assert find_model("rec", cache_dir=cache).check == "recorded sha256"  # type: ignore[union-attr]


def test_offline_missing_model_says_pull_or_import(fake_model: dict[str, ModelSpec],
                                                   tmp_path: Path) -> None:
    fake_model["m"] = _spec("m", UrlSource("http://127.0.0.1:9/m.onnx"))
    with pytest.raises(ModelError, match=r"fusionray models pull m.*fusionray models import m"):
        ensure_model("m", cache_dir=tmp_path, offline=True)


def test_shared_folder_is_searched_first_and_never_written(
    fake_model: dict[str, ModelSpec], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared, cache = tmp_path / "shared", tmp_path / "cache"
    shared.mkdir()
    (shared / "m.onnx").write_bytes(PAYLOAD)
    fake_model["m"] = _spec("m", UrlSource("http://127.0.0.1:9/m.onnx"), sha256=_sha(PAYLOAD))
    path = ensure_model("m", cache_dir=cache, shared_dirs=[shared], offline=True)
    assert path == shared / "m.onnx" and not cache.exists()
    (shared / "m.onnx").write_bytes(b"corrupt")
    with caplog.at_level(logging.WARNING), pytest.raises(ModelError, match="downloads are off"):
        ensure_model("m", cache_dir=cache, shared_dirs=[shared], offline=True)
    assert (shared / "m.onnx").read_bytes() == b"corrupt"  # Reported, skipped, not deleted.
    assert any("Skipping the shared copy" in r.message for r in caplog.records)


def test_import_checks_contract(tmp_path: Path) -> None:
    good = tmp_path / "swapper.onnx"
    good.write_bytes(build_identity_swapper())
    with pytest.raises(ModelError, match=r"is not the published file of inswapper_128"):
        import_model("inswapper_128", good, cache_dir=tmp_path / "cache")
    imported = import_model("inswapper_128", good, cache_dir=tmp_path / "cache",
                            allow_unverified=True)
    assert find_model("inswapper_128", cache_dir=tmp_path / "cache").check == (  # type: ignore[union-attr]
        "recorded sha256")
    assert imported.read_bytes() == good.read_bytes()
    with pytest.raises(ModelError, match=r"is not scrfd_10g: its inputs are"):
        import_model("scrfd_10g", good, cache_dir=tmp_path / "cache")
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ModelError, match=r"Cannot load model .*cut\.onnx"):
        import_model("inswapper_128", truncated, cache_dir=tmp_path / "cache")


def test_cli_models(server: _Server, fake_model: dict[str, ModelSpec], tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    server.files["/m.onnx"] = PAYLOAD
    fake_model["m"] = _spec("m", UrlSource(_url(server, "/m.onnx")), sha256=_sha(PAYLOAD))
    cache = ["--cache-dir", str(tmp_path)]
    assert cli.main(["models", "list", *cache]) == 0
    assert "not downloaded" in capsys.readouterr().out
    assert cli.main(["models", "pull", "nope", *cache]) == 2
    assert "Unknown model 'nope'. Choose one of: m" in capsys.readouterr().err
    assert cli.main(["models", "pull", "m", *cache]) == 0
    assert "verified by sha256" in capsys.readouterr().out
    assert cli.main(["models", "verify", *cache]) == 0
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert cli.main(["models", "verify", "m", *cache]) == 1
    assert "BAD" in capsys.readouterr().out
