"""A real S3-compatible server on loopback for tests: moto in server mode, in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "fusionray-test",
    "AWS_SECRET_ACCESS_KEY": "fusionray-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    """host:port on loopback."""

    def uri(self, bucket: str, key: str) -> str:
        """An s3:// URI that pyarrow.fs resolves against this server."""
        return (f"s3://{bucket}/{key}?endpoint_override={self.endpoint}&scheme=http"
                "&region=us-east-1")

    def client(self):  # boto3 client, for arranging and inspecting buckets
        import boto3

        return boto3.client("s3", endpoint_url=f"http://{self.endpoint}",
                            region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def keys(self, bucket: str) -> list[str]:
        """Object keys, without the empty `folder/` markers pyarrow.fs keeps for directories."""
        listing = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listing.get("Contents", [])
                      if not item["Key"].endswith("/"))


@contextmanager
def running_s3_server(log_dir: Path) -> Iterator[S3Server]:
    """Start `moto_server` on 127.0.0.1 at a free port; stop it on exit."""
    port = free_port()
    executable = Path(sys.executable).with_name("moto_server")
    command = ([str(executable)] if executable.exists()
               else [sys.executable, "-m", "moto.server"])
    log = open(log_dir / "moto.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, **CREDENTIALS})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start: "
                                       + (log_dir / "moto.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        yield S3Server(endpoint=f"127.0.0.1:{port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
