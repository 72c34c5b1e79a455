"""A real Prometheus server (Debian's ``prometheus`` binary) for tests, on a free localhost port."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.deploy.promtool import APT_HINT, RULE_FILES


class PrometheusServer:
    """Scrapes ``targets`` (``host:port``) every second and evaluates tiergate's rules every second."""

    def __init__(self, workdir: Path, targets: list[str], metrics_path: str = "/metrics") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip(f"prometheus not installed (Debian package 'prometheus': {APT_HINT}); CI installs it")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in RULE_FILES],
            "scrape_configs": [{"job_name": "tiergate", "metrics_path": metrics_path,
                                "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=10)
        self.logfile = workdir / "prometheus.log"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.logfile.read_text()[-2000:]}")
            try:
                if self.client.get("/-/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus not ready in time")

    def query(self, expr: str) -> dict:
        """The instant-query response; raises with Prometheus' own error text when it does not parse."""
        r = self.client.post("/api/v1/query", data={"query": expr})
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def wait_for(self, expr: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query(expr)["result"]:
                return
            time.sleep(0.5)
        raise AssertionError(f"no data for {expr!r} after {timeout}s")

    def targets_up(self) -> list[dict]:
        return self.client.get("/api/v1/targets").json()["data"]["activeTargets"]

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
