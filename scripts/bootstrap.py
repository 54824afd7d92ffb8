#!/usr/bin/env python3
"""Set up the locked environment on first use, then run the demo or the test suite.

Usage (from the repository root, with nothing but python3 >= 3.10 installed):

    python3 scripts/bootstrap.py demo [HYDRA_OVERRIDE ...]   # render the built-in demo
    python3 scripts/bootstrap.py test [PYTEST_ARG ...]       # lint, type-check, run the tests

The environment lives in `.venv/` (or `$FUSIONRAY_VENV`). It is built from
`requirements/lock.txt` with `pip install --require-hashes --no-deps`, so it holds exactly the
locked packages, and is rebuilt only when the lock or the `[project]` table of
`pyproject.toml` change (a stamp file records their hash). Standard library only: this runs
before any dependency exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
STAMP_NAME = ".fusionray-lock.sha256"
MIN_PYTHON = (3, 10)
COMMANDS = ("demo", "test")


def venv_dir() -> Path:
    return Path(os.environ.get("FUSIONRAY_VENV", ROOT / ".venv")).resolve()


def venv_python(env_dir: Path) -> Path:
    sub = "Scripts" if os.name == "nt" else "bin"
    return env_dir / sub / ("python.exe" if os.name == "nt" else "python")


def lock_digest() -> str:
    """Hash of what the environment is built from: the lock and the project's entry points."""
    digest = hashlib.sha256(LOCK.read_bytes())
    pyproject = (ROOT / "pyproject.toml").read_text()
    # Only the [project] table changes what the editable install provides; tool settings
    # (pytest, ruff, mypy) must not force a rebuild.
    digest.update(pyproject.split("[project]", 1)[-1].split("\n[tool.", 1)[0].encode())
    return digest.hexdigest()


def run(argv: list[str]) -> None:
    print("+ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True, cwd=ROOT)


def ensure_environment() -> Path:
    """Create or refresh the virtual environment; return its python executable."""
    env_dir = venv_dir()
    python = venv_python(env_dir)
    stamp = env_dir / STAMP_NAME
    wanted = lock_digest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    print(f"fusionray: building the locked environment in {env_dir} (first run only)", flush=True)
    if env_dir.exists():
        shutil.rmtree(env_dir)
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "--require-hashes", "--no-deps", "-r", str(LOCK)])
    run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(ROOT)])
    stamp.write_text(wanted + "\n")
    return python


def main(argv: list[str]) -> int:
    if sys.version_info < MIN_PYTHON:
        print(f"fusionray needs Python >= 3.10, this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python3 scripts/bootstrap.py {{{'|'.join(COMMANDS)}}} [ARGS ...]",
              file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        python = ensure_environment()
    except subprocess.CalledProcessError as error:
        print(f"fusionray: environment set-up failed: {error}", file=sys.stderr)
        return 1
    # An editable install leaves the package as source, and where PYTHONDONTWRITEBYTECODE is
    # set (CI, the render image) no import ever writes its bytecode: every process, the driver
    # and each Ray actor, would compile it again (about 0.1 s a process on the 2-core machine).
    # Up-to-date files are skipped, edited ones recompiled.
    compile_package = [str(python), "-m", "compileall", "-q", "fusionray"]
    if command == "demo":
        steps = [compile_package,
                 [str(python), "-m", "fusionray.jobs.render", "+video=demo", *rest]]
    else:
        steps = [
            compile_package,
            [str(python), "-m", "ruff", "check", "."],
            [str(python), "-m", "mypy"],
            [str(python), "-m", "pytest", *rest],
        ]
    for step in steps:
        print("+ " + " ".join(step), flush=True)
        code = subprocess.call(step, cwd=ROOT)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
