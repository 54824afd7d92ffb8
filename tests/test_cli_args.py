"""Paths on the command line as users paste them (issue 12 item 7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusionray.jobs.cli_args import (
    PathArgumentError,
    plain_render_overrides,
    prepare_overrides,
    quote_value,
)
from tests.test_render import ROOT, compose_config

AWKWARD_PATHS = [
    "shot 01 – café.mp4",
    "it's mine.mov",
    "/mnt/shows/Épisode 3/plan-04 (v2).mkv",
    "C:\\Users\\ana\\clip.mp4",
    "ends with backslash\\",
    "a#b@c&d![1]{2}.mp4",
    "x${y}.mp4",
    'say "hi".mp4',
    "日本語/ü.mp4",
]


@pytest.mark.parametrize("path", AWKWARD_PATHS)
def test_awkward_paths_compose_to_exactly_what_was_typed(path: str) -> None:
    overrides = prepare_overrides([f"+video={path}", f"+source={path}.jpg", f"output={path}.mov",
                                   "quality=draft"])
    assert overrides[-1] == "quality=draft"
    config = compose_config(*overrides)
    assert (config.video, config.source, config.output) == (path, f"{path}.jpg", f"{path}.mov")


@pytest.mark.parametrize(
    "argument",
    ["+video=plain.mp4", "+source=[a.jpg,b.jpg]", "+video='already quoted é.mp4'",
     "output=null", "quality=master", "encode.crf=12", "+video=demo", "-m",
     "output=/tmp/with space.mov"],
)
def test_what_hydra_reads_verbatim_is_left_alone(argument: str) -> None:
    assert prepare_overrides([argument]) == [argument]


@pytest.mark.parametrize(
    ("argument", "quoted"),
    [
        ("+video=a,b.mp4", "\"+video='a,b.mp4'\""),
        ("+source=x=y.jpg", "\"+source='x=y.jpg'\""),
        ("output=out=1.mov", "\"output='out=1.mov'\""),
    ],
)
def test_comma_and_equals_need_quotes_and_say_how(argument: str, quoted: str) -> None:
    with pytest.raises(PathArgumentError) as caught:
        prepare_overrides([argument])
    message = str(caught.value)
    assert "\n" not in message and message.endswith(quoted)
    # The form the message shows is the one that works.
    key, _, path = argument.partition("=")
    config = compose_config("+video=demo", "+source=demo.jpg", quoted.strip('"').replace(
        "+video=", "++video=").replace("+source=", "++source="))
    assert getattr(config, key.lstrip("+")) == path


def test_a_multirun_keeps_commas_as_sweeps() -> None:
    assert prepare_overrides(["-m", "+video=a.mp4,b.mp4"]) == ["-m", "+video=a.mp4,b.mp4"]
    with pytest.raises(PathArgumentError, match="'='"):
        prepare_overrides(["-m", "+video=a=b.mp4"])


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("plain", "'plain'"), ("it's", "'it\\'s'"), ("a\\'b", "'a\\\\\\'b'"),
     ("end\\", "'end\\\\'"), ("x${y}", "'x\\${y}'")],
)
def test_quote_value_table(value: str, quoted: str) -> None:
    assert quote_value(value) == quoted


def test_plain_render_form(tmp_path: Path) -> None:
    video = tmp_path / "shot 01 – café.mov"
    faces = [tmp_path / "ana's face.jpg", tmp_path / "b=c.png"]
    for path in (video, *faces):
        path.write_bytes(b"")
    overrides = plain_render_overrides([str(video), *map(str, faces), "quality=draft",
                                        f"output={tmp_path}/out é.mov"])
    config = compose_config(*overrides)
    assert config.video == str(video) and config.source == [str(f) for f in faces]
    assert (config.output, overrides[-2]) == (f"{tmp_path}/out é.mov", "quality=draft")
    one = compose_config(*plain_render_overrides(["demo", str(faces[0])]))
    assert one.source == str(faces[0])
    with pytest.raises(PathArgumentError, match="Usage: fusionray render VIDEO SOURCE"):
        plain_render_overrides(["quality=draft"])


def test_render_module_exits_2_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fusionray.jobs.render", "+video=a,b.mp4", "+source=x.jpg"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "fusionray: error: video path 'a,b.mp4' holds ',', which Hydra reads as syntax (it "
        "separates a sweep's values; sources are listed as [a.jpg,b.jpg]): quote the path, "
        "\"+video='a,b.mp4'\""]
