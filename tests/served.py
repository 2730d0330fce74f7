"""`smtoolkit panel` in a child process, for the e2e and browser tests: the key only in its
environment, its stdout and stderr in files (read while it runs), stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from smtoolkit.config import API_KEY_ENV, BASE_URL_ENV, PANEL_TOKEN_ENV
from tests.helpers import wait_for


def panel_env(home: Path, *, key: str | None, base_url: str | None, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SUPERMETRICS_", "SMTK_", "JUPYTER_", "VOILA_"))}
    env.update(HOME=str(home), JUPYTER_PLATFORM_DIRS="1", PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    if key is not None:
        env[API_KEY_ENV] = key
    if base_url is not None:
        env[BASE_URL_ENV] = base_url
    if token is not None:
        env[PANEL_TOKEN_ENV] = token
    return env


def run_panel(folder: Path, *args: str, key: str | None, base_url: str | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `smtoolkit panel` to completion (for the refusals, which never serve)."""
    home = folder / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "smtoolkit", "panel", *args], cwd=folder, capture_output=True,
                          text=True, timeout=timeout, env=panel_env(home, key=key, base_url=base_url))


class ServedPanel:
    """A running `smtoolkit panel --port 0`; `url` is the URL it printed to open."""

    def __init__(self, folder: Path, *args: str, key: str | None, base_url: str, token: str | None = None,
                 audit: Path | None = None) -> None:
        self.folder = folder
        home = folder / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.audit = audit or folder / "audit.jsonl"
        self.out_path, self.err_path = folder / "panel.out", folder / "panel.err"
        self._out, self._err = self.out_path.open("w"), self.err_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smtoolkit", "panel", "--port", "0", "--audit", str(self.audit), *args],
            cwd=folder, stdout=self._out, stderr=self._err, env=panel_env(home, key=key, base_url=base_url,
                                                                          token=token))
        self.returncode: int | None = None
        def printed() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"smtoolkit panel exited:\n{self.out()}\n{self.err()[-3000:]}")
            out = self.out_path.read_text()
            return re.search(r"Open: (http://\S+)", out) if "Ctrl-C to stop." in out else None

        try:
            m = wait_for(printed, "smtoolkit panel to print its URL", detail=lambda: f":\n{self.out()}\n{self.err()[-3000:]}")
        except BaseException:
            self.stop()
            raise
        self.url = m.group(1)
        self.base = self.url.split("?")[0]

    def out(self) -> str:
        return self.out_path.read_text(encoding="utf-8")

    def err(self) -> str:
        return self.err_path.read_text(encoding="utf-8")

    @property
    def token(self) -> str:
        """The token the server generated (and printed in its URL)."""
        return self.url.split("?token=")[1]

    def kernels(self) -> list[str]:
        """Command lines of the kernels the server has started and not yet shut down."""
        return [cmdline for cmdline, _ in self._kernel_processes()]

    def kernels_rss(self) -> int:
        """The resident memory of the server's kernel processes together, in bytes."""
        return sum(rss for _, rss in self._kernel_processes())

    def _kernel_processes(self) -> list[tuple[str, int]]:
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for c in children:
            try:
                found.append((" ".join(c.cmdline()), c.memory_info().rss))
            except psutil.Error:
                continue
        return [(cmdline, rss) for cmdline, rss in found if "ipykernel" in cmdline]

    def get_page(self, source: str = "127.0.0.1") -> tuple[int, dict[str, str], str]:
        """The page, as a script with the token gets it from the address `source` (any 127.x.y.z
        on Linux): its status, headers and text. Nothing on it ever connects to its kernel."""
        import http.client
        from urllib.parse import urlsplit

        where = urlsplit(self.base)
        conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=120,
                                          source_address=(source, 0))
        try:
            conn.request("GET", "/", headers={"Authorization": f"token {self.token}"})
            answer = conn.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read().decode("utf-8")
        finally:
            conn.close()

    def stop(self) -> int:
        """Ctrl-C (SIGINT; on Windows a kill) and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if os.name == "posix" else signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        self._err.close()
        self.returncode = self.proc.returncode
        return self.returncode
