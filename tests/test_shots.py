"""Many shots in one Ray job: shot lists (CSV, YAML, a list +video), shared pools, one broken
shot failing alone, per-shot manifests and outputs, the summary table and the exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from fusionray.config import register_configs
from fusionray.errors import ConfigError
from fusionray.jobs.inputs import OutputPaths
from fusionray.jobs.shots import ShotSpec, load_shot_list, render_shots, shot_config, shot_specs
from fusionray.media.demo import demo_source_image_path
from tests.clips import write_face_clip

ROOT = Path(__file__).resolve().parents[1]
register_configs()


def compose_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_csv_shot_list(tmp_path: Path) -> None:
    path = tmp_path / "shots.csv"
    path.write_text("video,sources,output,overrides\n"
                    "/s/a.mov,/f/a.png,/r/a.mov,\n"
                    "/s/b.mov,/f/a.png;/f/b.png,,swapper.mask_blur=0.2 chunk.frames=24\n")
    assert load_shot_list(path) == [
        ShotSpec("/s/a.mov", ("/f/a.png",), "/r/a.mov", ()),
        ShotSpec("/s/b.mov", ("/f/a.png", "/f/b.png"), None,
                 ("swapper.mask_blur=0.2", "chunk.frames=24")),
    ]


def test_yaml_shot_list(tmp_path: Path) -> None:
    path = tmp_path / "shots.yaml"
    path.write_text("shots:\n  - /s/a.mov\n  - video: /s/b.mov\n    sources: [/f/b.png]\n"
                    "    overrides: {chunk.frames: 24}\n")
    assert load_shot_list(path) == [
        ShotSpec("/s/a.mov"), ShotSpec("/s/b.mov", ("/f/b.png",), None, ("chunk.frames=24",))]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("shots.txt", "", r"Unknown shot list format '\.txt'.*\.csv, \.yaml, \.yml"),
    ("shots.csv", "video,source\n/a.mov,/f.png\n", r"Unknown shot list column 'source'"),
    ("shots.yaml", "- output: /r/a.mov\n", r"shot 1 .*every shot needs a video"),
    ("shots.yaml", "[]\n", r"holds no shot"),
])
def test_bad_shot_lists_name_the_problem(tmp_path: Path, name: str, text: str,
                                         message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_shot_list(path)


def test_a_list_video_is_a_shot_list_and_overrides_apply_per_shot() -> None:
    cfg = compose_cfg("+video=[/s/a.mov,/s/b.mov]", "+source=/f/a.png")
    specs = shot_specs(cfg)
    assert specs == [ShotSpec("/s/a.mov"), ShotSpec("/s/b.mov")]
    shot = shot_config(cfg, ShotSpec("/s/b.mov", ("/f/b.png",), None, ("chunk.frames=7",)))
    assert (shot.video, list(shot.source), shot.chunk.frames) == ("/s/b.mov", ["/f/b.png"], 7)
    assert shot_specs(compose_cfg("+video=/s/a.mov", "+source=/f/a.png")) is None


@pytest.mark.ray
def test_three_shots_one_broken_render_in_one_job(local_ray, tmp_path: Path) -> None:
    clips = [write_face_clip(tmp_path / f"shot{i}.mp4", frames=12) for i in (1, 3)]
    broken = tmp_path / "shot2.mp4"
    broken.write_bytes(b"not a video at all")
    shots = tmp_path / "shots.csv"
    out = tmp_path / "renders"
    shots.write_text("video,output\n"
                     f"{clips[0]},{out / 'one.mp4'}\n{broken},{out / 'two.mp4'}\n"
                     f"{clips[1]},{out / 'three.mp4'}\n")
    cfg = compose_cfg(f"+shots={shots}", f"+source={demo_source_image_path()}",
                      "progress=false", "preview_frames=0", "chunk.frames=4")
    specs = shot_specs(cfg)
    assert specs is not None
    report = render_shots(cfg, specs, run_dir=tmp_path / "run")

    assert [row.status for row in report.rows] == ["ok", "failed", "ok"]
    assert report.exit_code == 1
    assert "shot2.mp4" in report.rows[1].error
    assert not (out / "two.mp4").exists()
    for name in ("one", "three"):
        paths = OutputPaths.for_video(out / f"{name}.mp4")
        run = json.loads(paths.run_json.read_text())
        assert run["frames"] == run["frames_written"] == 12 and run["chunks_rendered"] == 3
        assert not paths.work.exists()  # each shot had its own work folder, cleaned on success
    # One Ray job, shared pools: both shots report the same actors and session.
    first, second = report.summaries
    assert first.ray_session == second.ray_session and first.chunks_by_actor
    assert sum(first.chunks_by_actor.values()) == 6  # the pool rendered both shots' chunks
    table = report.table()
    assert table.splitlines()[0].split()[:5] == ["shot", "status", "frames", "faces", "seconds"]
    assert len(table.splitlines()) == 4
    saved = json.loads((tmp_path / "run" / "shots.json").read_text())
    assert [row["status"] for row in saved["shots"]] == ["ok", "failed", "ok"]


@pytest.mark.slow
def test_shot_list_from_the_command_line_exits_non_zero(tmp_path: Path) -> None:
    clip = write_face_clip(tmp_path / "a.mp4", frames=8)
    broken = tmp_path / "b.mp4"
    broken.write_bytes(b"broken")
    result = subprocess.run(
        [sys.executable, "-m", "fusionray.jobs.render", f"+video=[{clip},{broken}]",
         f"+source={demo_source_image_path()}", "progress=false", "preview_frames=0",
         "cluster.num_cpus=2", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["1", "ok"] for line in lines), result.stdout
    assert any(line.split()[:2] == ["2", "failed"] for line in lines), result.stdout
    assert (tmp_path / "run" / "a.swapped.mp4").exists()
