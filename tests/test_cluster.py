"""cluster/: every recipe parses and carries what its tool requires; and a real
`ray start --head` on loopback runs `ray job submit --working-dir . -- python -m
fusionray.jobs.render ...` to completion."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.ports import free_ports

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def load(name: str) -> dict:
    data = yaml.safe_load((CLUSTER / name).read_text())
    assert isinstance(data, dict)
    return data


def test_every_cluster_yaml_parses() -> None:
    names = sorted(p.name for p in CLUSTER.glob("*.yaml"))
    assert names == ["kuberay-raycluster.yaml", "kuberay-rayjob.yaml",
                     "launcher-aws-gpu.yaml", "runtime_env.yaml"]
    for name in names:
        load(name)


def test_launcher_config_passes_rays_own_schema() -> None:
    import jsonschema
    import ray.autoscaler

    config = load("launcher-aws-gpu.yaml")
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # the schema `ray up` validates against
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] in config["available_node_types"]
    gpu_nodes = [n for n in config["available_node_types"].values()
                 if n["resources"].get("GPU", 0) >= 1]
    assert gpu_nodes and all(n["max_workers"] >= 1 for n in gpu_nodes)
    assert config["docker"]["image"] and "--gpus all" in config["docker"]["run_options"]


def _check_pod_template(template: dict, *, gpu: bool) -> None:
    containers = template["spec"]["containers"]
    assert containers and all(c["image"] and c["name"] for c in containers)
    limits = containers[0]["resources"]["limits"]
    if gpu:
        assert int(limits["nvidia.com/gpu"]) >= 1
        assert containers[0]["resources"]["requests"]["nvidia.com/gpu"] == limits["nvidia.com/gpu"]


def _check_ray_cluster_spec(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    _check_pod_template(head["template"], gpu=False)
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["groupName"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        _check_pod_template(group["template"], gpu=True)


def test_kuberay_raycluster() -> None:
    manifest = load("kuberay-raycluster.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    _check_ray_cluster_spec(manifest["spec"])


def test_kuberay_rayjob() -> None:
    manifest = load("kuberay-rayjob.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    assert spec["entrypoint"].startswith("python -m fusionray.jobs.render ")
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict) and runtime_env["working_dir"]
    assert spec["shutdownAfterJobFinishes"] is True
    _check_ray_cluster_spec(spec["rayClusterSpec"])


def test_runtime_env_is_valid_and_excludes_the_venv() -> None:
    from ray.runtime_env import RuntimeEnv

    data = load("runtime_env.yaml")
    RuntimeEnv(**data)  # Ray's own validation
    assert {".venv/", ".git/"} <= set(data["excludes"])


def test_dockerfile_installs_the_lock_exactly_on_a_cuda_runtime() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    first = next(line for line in text.splitlines() if line.startswith("FROM "))
    assert first.startswith("FROM nvidia/cuda:") and "runtime" in first
    assert "COPY requirements/lock.txt" in text
    assert "pip install --no-cache-dir --require-hashes --no-deps -r requirements/lock.txt" in text
    assert "onnxruntime-gpu==" in (ROOT / "requirements" / "lock.txt").read_text()


# --- a real head node on loopback ----------------------------------------------------------


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], int]]:
    """`ray start --head --block` on 127.0.0.1 with unique ports, its own temp dir and a fresh
    auth token; stopped by its process id. Yields the dashboard address, the client
    environment and the GCS port."""
    temp_dir = Path("/tmp") / f"fr6-ray-{uuid.uuid4().hex[:8]}"
    with running_head(tmp_path, temp_dir) as head:
        yield head


@contextlib.contextmanager
def running_head(
    tmp_path: Path, temp_dir: Path | None
) -> Iterator[tuple[str, dict[str, str], int]]:
    """A head node as in `ray_head`; `temp_dir=None` uses Ray's default one, where a node
    announces itself to every plain `ray.init()` on the machine (as a studio node's does)."""
    names = ("port", "dashboard-port", "ray-client-server-port", "node-manager-port",
             "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "metrics-export-port", "runtime-env-agent-port")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    bin_dir = Path(sys.executable).parent
    # Ray enables token authentication for new clusters: give head and clients one token.
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex}
    env.pop("RAY_ADDRESS", None)
    command = [str(bin_dir / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2",
               "--num-gpus=0", *([f"--temp-dir={temp_dir}"] if temp_dir else []),
               "--disable-usage-stats",
               *(f"--{name}={port}" for name, port in ports.items())]
    log = open(tmp_path / "ray-head.log", "wb")  # noqa: SIM115 - closed below
    head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    dashboard = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.monotonic() + 180
        while True:
            probe = subprocess.run([str(bin_dir / "ray"), "job", "list", "--address", dashboard],
                                   capture_output=True, text=True, env=env, timeout=60)
            if probe.returncode == 0:
                break
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ray head did not come up:\n"
                                   + (tmp_path / "ray-head.log").read_text()[-3000:])
            time.sleep(2)
        yield dashboard, env, ports["port"]
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ray stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        # Anything of this head's session still alive: its own process group, by our id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(head.pid, signal.SIGKILL)
        # A head in Ray's default temp folder recorded its address there for `auto`; a later
        # `auto` (another test's) must not find this stopped one.
        recorded = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if temp_dir is None and recorded.exists() and recorded.read_text().strip().endswith(
                f":{ports['port']}"):
            recorded.unlink(missing_ok=True)
        log.close()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_renders_the_demo(ray_head: tuple[str, dict[str, str], int],
                                         tmp_path: Path) -> None:
    address, env, gcs_port = ray_head
    output = tmp_path / "out" / "demo.swapped.mp4"
    bin_dir = Path(sys.executable).parent
    started = time.monotonic()
    result = subprocess.run(
        [str(bin_dir / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
         "--runtime-env", "cluster/runtime_env.yaml", "--",
         "python", "-m", "fusionray.jobs.render", "+video=demo", f"output={output}",
         "progress=false", "chunk.frames=50", "preview_frames=1", "quality=draft"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=900,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "succeeded" in result.stdout, result.stdout[-3000:]
    assert output.exists()
    run = json.loads(output.with_name("demo.swapped.run.json").read_text())
    assert run["frames"] == 100 and run["faces_swapped"] >= 90
    # The job joined the head we started (RAY_ADDRESS is set inside a Ray job). Ray advertises
    # this machine's own interface address even when told 127.0.0.1, so compare the GCS port.
    assert run["ray_address"].rsplit(":", 1)[1] == str(gcs_port)
    print(f"ray job submit: {seconds:.1f} s, {run['frames_per_second']} frames/s")


@pytest.mark.ray
@pytest.mark.slow
def test_a_local_render_beside_a_running_ray_node_uses_its_own_ray(tmp_path: Path) -> None:
    """A workstation that is also a Ray node (`ray start --head`, default temp dir): a render
    without cluster.address starts its own Ray instead of joining or tripping over that one."""
    with running_head(tmp_path, None) as (_, _, gcs_port):
        # The user's own shell: none of the head's settings.
        client_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        output = tmp_path / "local" / "demo.mp4"
        result = subprocess.run(
            [sys.executable, "-m", "fusionray.jobs.render", "+video=demo", f"output={output}",
             "progress=false", "preview_frames=0", "quality=draft", "cluster.num_cpus=2",
             # Ray's path (a 2-CPU job would otherwise render without starting any Ray)
             "cluster.inline=false", f"hydra.run.dir={tmp_path / 'hydra'}"],
            cwd=ROOT, capture_output=True, text=True, env=client_env, timeout=600,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(output.with_name("demo.run.json").read_text())
    assert run["frames"] == 100
    assert run["ray_address"].rsplit(":", 1)[1] != str(gcs_port)
