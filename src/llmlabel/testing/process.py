"""``FakeLLMProcess``: the fake server as a child process (``python -m llmlabel.testing``).

For tests that need the endpoint out of process — a server that dies mid-run (``kill()``), or a
labeler in another process. The script is the JSON form of ``responder_from_config``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import llmlabel.testing as _pkg

_READY = "READY "


class FakeLLMProcess:
    """Start ``python -m llmlabel.testing`` with a JSON script; stop (or kill) it on exit."""

    def __init__(
        self,
        script: Mapping[str, Any] | Path | None = None,
        *,
        port: int = 0,
        model: str = "fake",
        start_timeout: float = 15.0,
    ) -> None:
        self.script = script
        self._port_arg = port
        self.model = model
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> FakeLLMProcess:
        cmd = [sys.executable, "-m", "llmlabel.testing", "--port", str(self._port_arg)]
        cmd += ["--model", self.model]
        self._tmp = tempfile.TemporaryDirectory(prefix="llmlabel-fake-")
        tmp = Path(self._tmp.name)
        if self.script is not None:
            path = self.script
            if not isinstance(path, Path):
                path = tmp / "script.json"
                path.write_text(json.dumps(self.script), encoding="utf-8")
            cmd += ["--script", str(path)]
        env = dict(os.environ)
        src = str(Path(_pkg.__file__).resolve().parents[2])  # the dir holding llmlabel/
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self._stderr_path = tmp / "stderr.txt"
        with open(self._stderr_path, "w", encoding="utf-8") as stderr:
            self.process = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
            )
        line = self._read_ready_line()
        if not line.startswith(_READY):
            err = self.stderr()
            self.kill()
            raise RuntimeError(f"fake LLM process did not start: {line!r} {err.strip()}")
        self.base_url = line[len(_READY) :].strip()
        return self

    def _read_ready_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(self.process.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(self.start_timeout)
        return out[0] if out else f"<no READY line within {self.start_timeout}s>"

    def stderr(self) -> str:
        """What the process wrote to stderr so far."""
        try:
            return self._stderr_path.read_text(encoding="utf-8")
        except (AttributeError, OSError):
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def stats(self) -> dict[str, Any]:
        """What the process received: ``request_count``, ``status_counts``, ``requests``."""
        with urllib.request.urlopen(self.url + "/_fake/stats", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in ``timeout``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the endpoint vanishes mid-whatever (for crash tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FakeLLMProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
