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

from recsys.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`bentoml serve` in its own process group on loopback; the whole group is stopped on exit."""

    def __init__(self, env: dict[str, str] | None = None, target: str = "service:Recommender",
                 ready_timeout: float = 90, port: int | None = None, log: Path | None = None):
        self.env = env or dict(os.environ)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = Path(self.env.get("RECSYS_HOME", PROJECT_ROOT / "var"))
        self.log = log or home / "logs" / f"serve-{self.port}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.command = [str(BIN / "bentoml"), "serve", target, "--host", "127.0.0.1", "--port", str(self.port)]
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(self.command, env=self.env, cwd=PROJECT_ROOT, stdout=self.log.open("w"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + self.ready_timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"server not ready after {self.ready_timeout}s:\n{self.output()}")

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
