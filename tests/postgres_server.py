"""A throwaway PostgreSQL server for tests: Debian's binaries, a data folder on tmp, 127.0.0.1.

PostgreSQL refuses to run as root, so as root (CI, the dev machines) its commands run as
the ``postgres`` user that Debian's package creates. Password auth over TCP (scram), as a
real deployment has it.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

USER = "mlflow"


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@dataclass
class Postgres:
    """One running server; ``uri`` has the password of the ``mlflow`` user, database ``mlflow``.

    Its folder is a new one under the system temp dir (pytest's tmp_path is root's alone,
    and the ``postgres`` user could not enter it); ``stop`` removes it.
    """

    bin: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rayinfra-pg-")))

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def uri(self) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/mlflow"

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        env = {**os.environ, "PGPASSWORD": self.password}
        done = subprocess.run([*prefix, *cmd], env=env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}\n{done.stderr}")

    def start(self) -> Postgres:
        self.data.mkdir(mode=0o700)
        pwfile = self.base / "pgpass"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            for path in (self.base, self.data, pwfile):
                shutil.chown(path, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                  "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--no-sync")  # fmt: skip
        pwfile.unlink()
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-l", str(self.data / "log"), "start"
        )
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "mlflow")
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
