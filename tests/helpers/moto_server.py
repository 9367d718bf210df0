"""A real moto server over HTTP on 127.0.0.1: the AWS APIs the tests call, reached as a real endpoint is."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import boto3
import httpx

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account


@dataclass
class MotoServer:
    url: str
    proc: subprocess.Popen[bytes]

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client pointed at the server, with throwaway credentials."""
        return boto3.session.Session().client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            **kwargs,
        )

    def reset(self) -> None:
        httpx.post(f"{self.url}/moto-api/reset", timeout=30).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_moto_server(port: int, env: dict[str, str] | None = None) -> MotoServer:
    """``env`` e.g. ``{"INITIAL_NO_AUTH_ACTION_COUNT": "5"}``: IAM is enforced after the first 5 calls."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"moto server exited with {proc.returncode}")
        try:
            httpx.get(f"{url}/moto-api/data.json", timeout=2).raise_for_status()
            return MotoServer(url, proc)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("moto server did not start within 60 s")
