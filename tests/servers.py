"""``recscope serve`` as a real process, for the tests that need one (a browser, a kill -9).

``Server(run, *args, log=...)`` starts ``recscope serve RUN --port P ARGS`` on 127.0.0.1 and a
free port and returns once ``/health/ready`` answers 200, at ``server.base``. Its output goes
to a log file, not a pipe: a pipe nobody reads fills up and stalls the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recscope() -> str:
    """The ``recscope`` command of this venv."""
    return str(Path(sys.executable).parent / "recscope")


class Server:
    def __init__(self, run: Path, *args: str, log: Path, env: dict[str, str] | None = None, ready_in: float = 60):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.log = log.open("ab")  # appended: a restarted server keeps the first one's lines
        cmd = [recscope(), "serve", str(run), "--port", str(self.port), *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # A session of its own: kill() ends the server and every worker process it started.
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self._wait_until_ready(ready_in)
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.base}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the service did not get ready in {seconds:g} s"
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the server and its workers: no shutdown, no flush, no lifespan exit."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.log.close()

    def workers(self) -> list[int]:
        """The process ids of the server's worker processes (none when it serves in one process)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        # uvicorn's manager also starts multiprocessing's resource tracker: workers run the app
        return [p for p in pids if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
