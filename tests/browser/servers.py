"""What the browser tests share to serve a notebook: a free port, a Jupyter home that shows no
news toast, the command lines of JupyterLab / Notebook 7 / Voilà, and a server process that is
waited for (by its own answer, never a sleep) and ended with its whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_for

START_TIMEOUT = 90  # s: a cold JupyterLab on a busy 2-core machine can take 20-40 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jupyter_home(home: Path, drop: tuple[str, ...] = ("SUPERMETRICS_", "SMTK_", "JUPYTER", "MPLBACKEND"),
                 **extra: str) -> dict[str, str]:
    """An environment for a Jupyter server in `home`: its own config (the "get Jupyter news?"
    plugin off, as a user may turn it off), none of this shell's API or Jupyter settings."""
    labconfig = home / "config" / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(
        '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}')
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(HOME=str(home), JUPYTER_PLATFORM_DIRS="1", JUPYTER_CONFIG_DIR=str(home / "config"), **extra)
    return env


def jupyter_args(module: str, port: int, token: str, root: Path) -> list[str]:
    """`python -m jupyter lab|notebook` on 127.0.0.1:`port` with `token`, serving `root`."""
    return [sys.executable, "-m", "jupyter", module, "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]


def voila_args(port: int, notebook: Path) -> list[str]:
    return [sys.executable, "-m", "voila", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1", str(notebook)]


def log_tail(path: Path, n: int = 3000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return f"\n--- {path.name} (tail) ---\n{text[-n:]}"


@contextlib.contextmanager
def running_server(args: list[str], env: dict[str, str], cwd: Path, log_path: Path, probe: str,
                   ok: Callable[[int], bool] = lambda status: status < 500,
                   shutdown: Callable[[], None] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """The server `args` started in its own process group, yielded once `probe` answers `ok`;
    on the way out `shutdown` (if any) is asked first, then the group gets SIGTERM, then SIGKILL."""
    log = open(log_path, "w")
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"{args[2]} exited with {proc.returncode}" + log_tail(log_path))
            try:
                return ok(requests.get(probe, timeout=2).status_code)
            except requests.RequestException:
                return False

        wait_for(up, f"{' '.join(args[2:4])} to answer", START_TIMEOUT, detail=lambda: log_tail(log_path))
        yield proc
    finally:
        if shutdown is not None:
            with contextlib.suppress(requests.RequestException, subprocess.TimeoutExpired):
                shutdown()
                proc.wait(15)
        for sig, grace in ((signal.SIGTERM, 15), (getattr(signal, "SIGKILL", signal.SIGTERM), 10)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        log.close()
