"""Exit codes mean one thing each (`fusionray.jobs.exit_codes`), and a complete render is never
reported as failed input: a sidecar that cannot be written is a note, a failed upload keeps
and names the complete local file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusionray.errors import (
    ClusterError,
    ConfigError,
    FaceNotFoundError,
    MediaError,
    OutputError,
    PublishError,
    RenderError,
    RenderInterrupted,
)
from fusionray.jobs import outputs
from fusionray.jobs.exit_codes import exit_code_for, exit_message
from fusionray.jobs.pipeline import OutputPaths, render
from fusionray.media.demo import demo_source_image_path
from tests.clips import write_clip
from tests.s3server import CREDENTIALS, S3Server, running_s3_server
from tests.test_render import ROOT, compose_config


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("bad key"), 2),
        (MediaError("not a video"), 2),
        (FaceNotFoundError("no face"), 2),
        (OutputError("folder not writable"), 2),
        (ClusterError("nothing answers"), 2),
        (RenderError("chunk 3 failed"), 1),
        (PublishError("upload failed"), 3),
        (RenderInterrupted("interrupted"), 130),
        (KeyboardInterrupt(), 130),
        (RuntimeError("a bug"), 1),
    ],
)
def test_exit_code_table(error: BaseException, code: int) -> None:
    assert exit_code_for(error) == code
    assert exit_message(error).startswith("fusionray: error: ")


def small_config(tmp_path: Path, output: str, *extra: str):
    clip = write_clip(tmp_path / "in.mp4", frames=8)
    return compose_config(f"+video={clip}", f"+source={demo_source_image_path()}",
                          f"output={output}", "progress=false", "chunk.frames=4",
                          "preview_frames=2", *extra)


@pytest.mark.ray
def test_a_failing_preview_is_a_note_and_run_json_is_still_written(
    local_ray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OutputError("Could not write preview image: disk quota exceeded")

    monkeypatch.setattr(outputs, "write_preview", broken)
    output = tmp_path / "out.mp4"
    summary = render(small_config(tmp_path, str(output)), run_dir=tmp_path,
                     config_yaml="x: 1\n")
    paths = OutputPaths.for_video(output)
    assert output.exists() and paths.run_json.exists() and not paths.preview.exists()
    run = json.loads(paths.run_json.read_text())
    assert any("preview sidecar" in note and "disk quota exceeded" in note
               for note in run["notes"]), run["notes"]
    assert summary.frames_written == 8


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        (tmp_path / "moto").mkdir()
        with running_s3_server(tmp_path / "moto") as server:
            server.client().create_bucket(Bucket="renders")
            yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.mark.ray
def test_a_failed_upload_keeps_and_names_the_complete_local_file(
    local_ray, s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(local: Path, destination: str) -> None:
        raise OutputError(f"Cannot publish {destination!r}: connection reset")

    monkeypatch.setattr(outputs, "publish", broken)
    destination = s3.uri("renders", "ep1/out.mp4")
    run_dir = tmp_path / "run"
    with pytest.raises(PublishError) as caught:
        render(small_config(tmp_path, f"'{destination}'"), run_dir=run_dir,
               config_yaml="x: 1\n")
    local = run_dir / "out.mp4"
    assert exit_code_for(caught.value) == 3
    assert f"complete and kept at '{local}'" in str(caught.value)
    assert local.exists() and OutputPaths.for_video(local).run_json.exists()


def test_the_cli_ends_without_collecting_the_whole_heap(tmp_path: Path) -> None:
    """The CLI freezes the heap as it ends, whatever its exit (here: bad input, exit 2), so the
    interpreter's final collections skip it; its exit code and message are untouched."""
    probe = (
        "import atexit, gc, runpy, sys\n"
        # Registered first, so it runs last: after the entry point's own teardown began.
        "atexit.register(lambda: print('frozen objects:', gc.get_freeze_count()))\n"
        "sys.argv = ['fusionray.jobs.render', *sys.argv[1:]]\n"
        "runpy.run_module('fusionray.jobs.render', run_name='__main__')\n"
    )
    missing = tmp_path / "no such clip.mp4"
    result = subprocess.run(
        [sys.executable, "-c", probe, f"+video={missing}", f"+source={demo_source_image_path()}",
         "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert str(missing) in result.stderr
    frozen = int(result.stdout.rsplit("frozen objects:", 1)[1])
    assert frozen > 10_000  # the job's heap, not a handful of objects
