"""Start and stop ``tiergate serve`` as a child process for a report run.

The gateway runs its own local Ray instance in the child; stopping it sends SIGINT (the
CLI's clean shutdown), then SIGTERM and SIGKILL to that one process if it does not exit.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from serve.serve_options import free_port

READY = "tiergate: ready."


def _command() -> list[str]:
    # The CLI in this interpreter, with Python's SIGINT handler put back: a child of a shell's
    # background job inherits SIGINT as ignored, and SIGINT is how the CLI shuts down cleanly.
    boot = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from serve.cli import main; sys.exit(main())")
    return [sys.executable, "-c", boot]


class GatewayProcess:
    def __init__(self, pool: str, port: int | None = None, log_path: Path | None = None, *,
                 cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        """``cwd`` and ``env`` run another checkout's gateway (benchmarks: the code before a change)."""
        self.pool = pool
        self.port = port or free_port()
        self.log_path = log_path
        self.cwd, self.env = cwd, env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 300.0) -> str:
        cmd = _command() + ["serve", "--pool", self.pool, "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=self.cwd, env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"})
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc, lines), daemon=True, name="tiergate-serve-log").start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:  # the child exited
                break
            if line.startswith(READY):
                return self.base_url
        tail = "\n".join(self.lines[-20:])
        self.stop()
        raise RuntimeError(f"tiergate serve did not become ready within {timeout_s:g}s:\n{tail}")

    def _pump(self, proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        """Read the child's output for its whole life, so its pipe never fills and blocks it."""
        assert proc.stdout is not None
        sink = self.log_path.open("a", encoding="utf-8") if self.log_path else None
        try:
            for line in proc.stdout:
                self.lines.append(line.rstrip())
                del self.lines[:-200]
                if sink:
                    sink.write(line)
                    sink.flush()
                lines.put(line)
        finally:
            proc.stdout.close()  # at EOF: the child exited
            lines.put(None)
            if sink:
                sink.close()

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        for sig, wait_s in ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            proc.send_signal(sig)
            try:
                return proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        return None

    def __enter__(self) -> "GatewayProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
