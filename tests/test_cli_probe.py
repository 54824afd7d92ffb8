"""`fusionray probe FILE`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fusionray.cli import main
from tests.clips import write_clip


def test_probe_prints_what_the_pipeline_sees(tmp_path: Path, capsys) -> None:
    clip = write_clip(tmp_path / "phone.mp4", frames=50, gop=10, rotation=90, audio=True)
    assert main(["probe", str(clip), "--chunk-frames", "20", "--overlap", "2"]) == 0
    text = capsys.readouterr().out
    assert "stream 0: video h264 160x96" in text
    assert "stream 1: audio aac" in text
    assert "frames: 50" in text
    assert "fps: 25" in text
    assert "rotation: 90 degrees" in text
    assert "keyframes: 5, every 10/10/10 frames" in text
    assert "chunks: 3 of 20 frames, overlap 2" in text


def test_probe_json(tmp_path: Path, capsys) -> None:
    clip = write_clip(tmp_path / "a.mkv", frames=30, gop=30, audio=False)
    assert main(["probe", str(clip), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["frames"] == 30 and data["chunks"] == 1 and data["keyframes"] == 1
    assert [s["kind"] for s in data["streams"]] == ["video"]
    assert data["provenance"] is None


def test_probe_of_a_missing_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["probe", str(tmp_path / "nope.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fusionray: error: Input video not found") and err.count("\n") == 1


def test_bad_chunking_is_refused(tmp_path: Path, capsys) -> None:
    clip = write_clip(tmp_path / "a.mp4", frames=5, audio=False)
    assert main(["probe", str(clip), "--chunk-frames", "-1"]) == 2
    assert "chunk.frames=-1" in capsys.readouterr().err


def test_console_script_entry_point(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "a.mp4", frames=5, audio=False)
    script = Path(sys.executable).with_name("fusionray")
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    result = subprocess.run([str(script), "probe", str(clip)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "frames: 5" in result.stdout
