"""A real, independent implementation of both provider protocols for the tests: the LiteLLM proxy, offline.

The proxy lives in its own virtualenv (`.local/litellm-venv`, pinned to `LITELLM_VERSION`) so that its many pins
never touch the project's environment. The venv is created on first use; two pytest-xdist workers asking at once
on a fresh machine serialize on an `fcntl.flock` lock and the second one finds it ready (a stamp file written last
marks a finished install). Each worker then starts its own proxy on a free loopback port, with no database, no
telemetry and `LITELLM_LOCAL_MODEL_COST_MAP=True`, so it never reaches out.

Models it serves (see `tests/support/transcripts/README.md` for what each one answers, byte for byte):

- `OPENAI_MODEL` on `/v1/chat/completions`: LiteLLM's `mock_response`, streamed or not.
- `ANTHROPIC_MODEL` on `/v1/messages`: LiteLLM's own Anthropic Messages implementation (its adapter from chat
  completions to Messages, streamed or not) in front of its own mock, reached over loopback. This is the path
  whose stream puts `input_tokens: 0` in `message_start` and the real count in `message_delta`.
- `ANTHROPIC_CANNED_MODEL` on `/v1/messages`: LiteLLM's `mock_response` for an `anthropic/` model. It answers one
  fixed JSON message (fixed usage, and a non-standard `total_tokens`) and ignores `stream: true`.

Use it from a test module (the fixture is session-scoped, so one proxy per xdist worker):

    from tests.support.litellm_proxy import LiteLLMProxy, litellm_proxy_fixture  # noqa: F401  (registers it)

    def test_something(litellm_proxy: LiteLLMProxy) -> None:
        httpx.post(f"{litellm_proxy.base_url}/v1/chat/completions", headers=litellm_proxy.openai_headers, ...)

Outside pytest (`tests/support/transcripts/record.py`): `with running_proxy() as proxy: ...`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

LITELLM_VERSION = "1.83.14"
ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("LITELLM_VENV", str(ROOT / ".local" / "litellm-venv")))
# Every package of the venv pinned (a freeze of a working install): reproducible, and no resolver backtracking.
CONSTRAINTS = Path(__file__).resolve().parent / "litellm-constraints.txt"


def _stamp_name() -> str:
    digest = hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()[:12]
    return f".installed-litellm-{LITELLM_VERSION}-{digest}"  # a new pin or constraint means a new venv

MASTER_KEY = "sk-litellm-test-master-key-0123456789"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
ANTHROPIC_CANNED_MODEL = "claude-haiku-4-5-canned"
MOCK_TEXT = "Hello from the LiteLLM mock model."
CANNED_TEXT = "Hello from the canned Anthropic mock."
ANTHROPIC_VERSION = "2023-06-01"

INSTALL_TIMEOUT = 900.0
START_TIMEOUT = 90.0

# The requests the recordings were made with; the live checks send the same ones, so the answers must match.
PROMPT = [{"role": "user", "content": "Say hello in one short sentence."}]
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("/v1/chat/completions", {"model": OPENAI_MODEL, "messages": PROMPT}),
    "openai_stream": ("/v1/chat/completions", {
        "model": OPENAI_MODEL, "messages": PROMPT, "stream": True, "stream_options": {"include_usage": True}}),
    "anthropic": ("/v1/messages", {"model": ANTHROPIC_MODEL, "max_tokens": 256, "messages": PROMPT}),
    "anthropic_stream": ("/v1/messages", {
        "model": ANTHROPIC_MODEL, "max_tokens": 256, "messages": PROMPT, "stream": True}),
    "anthropic_canned": ("/v1/messages", {"model": ANTHROPIC_CANNED_MODEL, "max_tokens": 256, "messages": PROMPT}),
    "anthropic_canned_stream": ("/v1/messages", {
        "model": ANTHROPIC_CANNED_MODEL, "max_tokens": 256, "messages": PROMPT, "stream": True}),
}


class ProxyUnavailable(RuntimeError):
    """The proxy's virtualenv could not be created (for example: no route to PyPI)."""


@dataclass(frozen=True)
class LiteLLMProxy:
    base_url: str  # http://127.0.0.1:<port>, no trailing /v1
    master_key: str
    log_path: Path
    openai_model: str = OPENAI_MODEL
    anthropic_model: str = ANTHROPIC_MODEL
    anthropic_canned_model: str = ANTHROPIC_CANNED_MODEL
    mock_text: str = MOCK_TEXT
    version: str = LITELLM_VERSION
    startup_seconds: float = field(default=0.0, compare=False)

    @property
    def openai_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.master_key}"}

    @property
    def anthropic_headers(self) -> dict[str, str]:
        return {"x-api-key": self.master_key, "anthropic-version": ANTHROPIC_VERSION}

    def headers_for(self, path: str) -> dict[str, str]:
        return self.anthropic_headers if path.endswith("/messages") else self.openai_headers


# --- the virtualenv -------------------------------------------------------------------------------------------


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path = VENV) -> Path:
    """Create the proxy's venv once per machine (safe across concurrent processes); return its python."""
    stamp = venv / _stamp_name()
    if stamp.exists():
        return venv_python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / f"{venv.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if stamp.exists():  # another process finished while this one waited
            return venv_python(venv)
        # A venv without the stamp is a half-made one (interrupted install) or another version: start over.
        shutil.rmtree(venv, ignore_errors=True)
        log = venv.parent / f"{venv.name}.install.log"
        try:
            with log.open("w") as out:
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=out, stderr=out,
                               timeout=INSTALL_TIMEOUT)
                subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check",
                                "-q", "-c", str(CONSTRAINTS), f"litellm[proxy]=={LITELLM_VERSION}"],
                               check=True, stdout=out, stderr=out, timeout=INSTALL_TIMEOUT)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ProxyUnavailable(f"could not install litellm[proxy]=={LITELLM_VERSION} into {venv}: {exc}\n"
                                   f"{tail}") from exc
        stamp.write_text(f"litellm[proxy]=={LITELLM_VERSION} -c {CONSTRAINTS.name}\n")  # written last: complete
    return venv_python(venv)


# --- the proxy ------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


def config_yaml(port: int) -> str:
    """The proxy's configuration; the Anthropic model reaches LiteLLM's own OpenAI mock over loopback."""
    return f"""\
model_list:
  - model_name: {OPENAI_MODEL}
    litellm_params:
      model: openai/{OPENAI_MODEL}
      api_key: sk-unused-offline
      mock_response: {_yaml_str(MOCK_TEXT)}
  - model_name: {ANTHROPIC_MODEL}
    litellm_params:
      model: openai/{OPENAI_MODEL}
      api_base: http://127.0.0.1:{port}/v1
      api_key: {MASTER_KEY}
  - model_name: {ANTHROPIC_CANNED_MODEL}
    litellm_params:
      model: anthropic/{ANTHROPIC_MODEL}
      api_key: sk-ant-unused-offline
      mock_response: {_yaml_str(CANNED_TEXT)}
litellm_settings:
  telemetry: false
  # /v1/messages for an openai/ model goes through chat completions, not the Responses API.
  use_chat_completions_url_for_anthropic_messages: true
general_settings:
  master_key: {MASTER_KEY}
"""


def _proxy_env(workdir: Path) -> dict[str, str]:
    # A minimal environment: no DATABASE_URL (the proxy would try Prisma), no provider keys or base URLs.
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE"}}
    env.update({
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MODE": "PRODUCTION",  # do not load a .env file from the working directory
        "LITELLM_LOG": "ERROR",
        "TMPDIR": str(workdir),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"litellm exited with {proc.returncode}:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{base_url}/health/liveliness").status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"litellm did not answer within {START_TIMEOUT} s:\n"
                       f"{log_path.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the proxy's own process group (start_new_session)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@contextlib.contextmanager
def running_proxy() -> Iterator[LiteLLMProxy]:
    """Install if needed, start one proxy on a free loopback port, and stop it on exit."""
    python = ensure_venv()
    workdir = Path(tempfile.mkdtemp(prefix="litellm-proxy-"))
    try:
        for attempt in range(3):  # the free port may be taken between choosing it and the bind
            port = _free_port()
            config = workdir / "config.yaml"
            config.write_text(config_yaml(port))
            log_path = workdir / f"proxy-{port}.log"
            started = time.monotonic()
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [str(python), "-m", "litellm.proxy.proxy_cli", "--config", str(config), "--host", "127.0.0.1",
                     "--port", str(port), "--telemetry", "False", "--num_workers", "1"],
                    cwd=workdir, env=_proxy_env(workdir), stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True)
            base_url = f"http://127.0.0.1:{port}"
            try:
                _wait_ready(proc, base_url, log_path)
            except RuntimeError:
                _stop(proc)
                if attempt == 2 or "address already in use" not in log_path.read_text(errors="replace"):
                    raise
                continue
            try:
                yield LiteLLMProxy(base_url=base_url, master_key=MASTER_KEY, log_path=log_path,
                                   startup_seconds=time.monotonic() - started)
            finally:
                _stop(proc)
            return
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session", name="litellm_proxy")
def litellm_proxy_fixture() -> Iterator[LiteLLMProxy]:
    """One running LiteLLM proxy per test process. Skipped (failed on CI) when its venv cannot be installed."""
    try:
        ensure_venv()
    except ProxyUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the LiteLLM proxy is required on CI: {exc}")
        pytest.skip(f"LiteLLM proxy unavailable (its venv could not be installed from PyPI): {exc}")
    with running_proxy() as proxy:
        yield proxy


# --- talking to it --------------------------------------------------------------------------------------------


def send(proxy: LiteLLMProxy, case: str, client: httpx.Client | None = None) -> tuple[int, str, bytes]:
    """Send one of `REQUESTS` and return (status, content type, the raw body bytes as the server sent them)."""
    path, body = REQUESTS[case]
    own = client is None
    c = client or httpx.Client(timeout=30.0)
    try:
        headers = {**proxy.headers_for(path), "Accept-Encoding": "identity"}  # the bytes as sent, uncompressed
        with c.stream("POST", proxy.base_url + path, json=body, headers=headers) as response:
            raw = b"".join(response.iter_raw())
            return response.status_code, response.headers.get("content-type", ""), raw
    finally:
        if own:
            c.close()
