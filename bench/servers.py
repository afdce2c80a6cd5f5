"""Start, wait for and stop the processes a benchmark run needs.

Every process is started in a session of its own (``start_new_session``), registered, and ended
by its process group id (SIGTERM, then SIGKILL after a grace period) when its phase ends, and by
``stop_all`` on the way out of ``bench.run`` whatever happened (error, Ctrl-C, SIGTERM).
Readiness is polled, never assumed after a fixed sleep.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .loadgen import HttpConn, require_loopback

HOST = "127.0.0.1"
_RUNNING: list[Managed] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(x) for x in out]


def tree_of(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(children_of(p))
    return seen


class Managed:
    """A started process group with its log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path,
                 cwd: Path | None = None):
        self.name, self.argv, self.log = name, argv, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._logf = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        _RUNNING.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Children may outlive a leader that exited: the group id is still ours.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._logf.close()


def stop_all() -> None:
    for m in list(reversed(_RUNNING)):
        m.stop(grace=5.0)


def wait_http_ready(server: Managed, port: int, path: str = "/bench/floor",
                    timeout: float = 60.0) -> float:
    """Poll ``GET path`` until it answers 200; returns the seconds it took."""
    require_loopback(HOST)
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < timeout:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited ({server.proc.returncode}):\n{server.tail()}")
        conn = HttpConn(HOST, port)
        try:
            status, body = conn.request(conn.build("GET", path))
            if status == 200:
                return time.monotonic() - start
            last = f"HTTP {status} {body[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s ({last}):\n{server.tail()}")


def wait_workers(server: Managed, count: int, timeout: float = 30.0) -> list[int]:
    """Wait until the master has ``count`` worker children; returns their pids."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children_of(server.pid)
        if len(kids) >= count:
            return kids
        time.sleep(0.1)
    raise RuntimeError(f"{server.name}: expected {count} workers, found {children_of(server.pid)}")


def python() -> str:
    return sys.executable


def gunicorn_argv(port: int, worker_class: str, workers: int, threads: int) -> list[str]:
    argv = [python(), "-m", "gunicorn", "orchestrator.wsgi:application",
            "--bind", f"{HOST}:{port}", "--workers", str(workers),
            "--worker-class", worker_class, "--keep-alive", "75", "--timeout", "60",
            "--log-level", "warning", "--worker-tmp-dir", "/dev/shm", "--backlog", "256"]
    if worker_class == "gthread":
        argv += ["--threads", str(threads)]
    return argv


def uvicorn_argv(port: int, workers: int) -> tuple[list[str], dict[str, str]]:
    """uvicorn with uvloop/httptools when installed (``uvicorn[standard]``), else asyncio/h11."""
    impl = {"loop": "asyncio", "http": "h11"}
    try:
        import uvloop  # noqa: F401
        impl["loop"] = "uvloop"
    except ImportError:
        pass
    try:
        import httptools  # noqa: F401
        impl["http"] = "httptools"
    except ImportError:
        pass
    argv = [python(), "-m", "uvicorn", "orchestrator.asgi:application", "--host", HOST,
            "--port", str(port), "--workers", str(workers), "--no-access-log",
            "--log-level", "warning", "--loop", impl["loop"], "--http", impl["http"],
            "--timeout-keep-alive", "75"]
    return argv, impl


def describe(m: Any) -> str:
    return " ".join(str(a) for a in m)


def _socket_inodes(port: int) -> tuple[set[str], set[str]]:
    """(listening, established) socket inodes whose local port is ``port``."""
    listening, established = set(), set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if int(parts[1].rsplit(":", 1)[1], 16) != port:
                continue
            if parts[3] == "0A":
                listening.add(parts[9])
            elif parts[3] == "01":
                established.add(parts[9])
    return listening, established


def connections_per_worker(pids: list[int], port: int) -> list[int]:
    """Established connections held by each process that listens on ``port`` (the workers)."""
    listening, established = _socket_inodes(port)
    counts = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
        if inodes & listening:
            counts.append(len(inodes & established))
    return counts
