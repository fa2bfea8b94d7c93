"""Run `bentoml serve` as a child process on a loopback port: used by tests, load tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from recsys.serving.server_process import service_pids, stat_fields
from recsys.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`bentoml serve` in its own process group on loopback; the whole group is stopped on exit."""

    metrics = True  # serves Prometheus /metrics

    def __init__(self, env: dict[str, str] | None = None, target: str = "service:Recommender",
                 ready_timeout: float = 90, port: int | None = None, log: Path | None = None,
                 ready_path: str = "/readyz"):
        self.env = env or dict(os.environ)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = Path(self.env.get("RECSYS_HOME", PROJECT_ROOT / "var"))
        self.log = log or home / "logs" / f"serve-{self.port}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.command = [str(BIN / "bentoml"), "serve", target, "--host", "127.0.0.1", "--port", str(self.port)]
        self.ready_timeout = ready_timeout
        self.ready_path = ready_path  # /livez: started, whether or not its dependencies answer
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(self.command, env=self.env, cwd=PROJECT_ROOT, stdout=self.log.open("w"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + self.ready_timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}{self.ready_path}", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"server not ready after {self.ready_timeout}s:\n{self.output()}")

    def service_pids(self) -> dict[str, list[int]]:
        """PIDs of the running service workers by service name (the entry is `recommender`), from /proc."""
        return service_pids(self.process.pid) if self.process else {}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each service's processes."""
        tick = os.sysconf("SC_CLK_TCK")
        return {name: sum((int(f[11]) + int(f[12])) / tick for f in map(stat_fields, pids) if f)
                for name, pids in self.service_pids().items()}

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of each service's processes, in MB."""
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        return {name: round(sum(int(f[21]) * page_mb for f in map(stat_fields, pids) if f), 1)
                for name, pids in self.service_pids().items()}

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class PlainAsgiServer(Server):
    """The smallest ASGI app (recsys/tools/plain_asgi.py) under uvicorn, as BentoML runs its workers: the ceiling of the
    machine for an HTTP endpoint, for the benchmark to compare the service with."""

    metrics = False

    def __init__(self, env: dict[str, str] | None = None):
        super().__init__(env=env)
        self.command = [str(BIN / "uvicorn"), "recsys.tools.plain_asgi:app", "--host", "127.0.0.1", "--port",
                        str(self.port), "--lifespan", "off", "--no-access-log", "--log-level", "warning"]

    def service_pids(self) -> dict[str, list[int]]:
        return {"uvicorn": [self.process.pid]} if self.process else {}
