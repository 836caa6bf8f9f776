"""A real PostgreSQL server for the tests: Debian's binaries, a fresh cluster in a temp dir, a free port.

``initdb`` and ``postgres`` refuse to run as root, so as root both run as the ``postgres`` user (the Debian package
creates it) in a directory that user owns. Clients authenticate over TCP with a password (scram-sha-256), handed
to them through ``PGPASSWORD`` as a user would; the server is stopped with a fast shutdown at the end, and dies with
the test process if that is killed.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .ports import free_port
from .processes import die_with_parent

LIVE_SERVERS: list[PostgresServer] = []


def pg_bin_dir() -> Path | None:
    """The newest installed ``/usr/lib/postgresql/N/bin`` with initdb and postgres, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """One cluster. ``url(db)`` names a database on it (without the password: that is in ``env``)."""

    def __init__(
        self, data: Path | None = None, settings: dict[str, str] | None = None, initdb_args: tuple[str, ...] = ()
    ) -> None:
        """``data`` is where initdb puts the cluster (a directory the server's user may create, say on a volume of a
        test's own; by default in a new temporary directory, which holds the log and the socket either way);
        ``settings`` are extra ``-c`` settings of the server, ``initdb_args`` extra ``initdb`` options."""
        bindir = pg_bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/test-deps.sh installs Debian's postgresql)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="moorage-pg-"))
        self.settings = dict(settings or {})
        self.data = Path(data) if data is not None else self.root / "data"
        self.sockets = self.root / "sock"
        self.sockets.mkdir()
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.user = "moorage"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "postgres.log"
        self._as: str | None = None
        if os.geteuid() == 0:
            self._as = "postgres"
            pw = pwd.getpwnam("postgres")
            for p in (self.root, self.sockets):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            os.chown(pwfile, pwd.getpwnam(self._as).pw_uid, -1)
        os.chmod(pwfile, 0o600)
        run = ["runuser", "-u", self._as, "--"] if self._as else []
        subprocess.run(
            [
                *run,
                str(bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                *initdb_args,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        pwfile.unlink()
        with open(self.data / "pg_hba.conf", "a") as hba:  # all of loopback: a relay may connect from 127.0.0.2
            hba.write("host all all 127.0.0.0/8 scram-sha-256\n")
        self.start()

    @property
    def env(self) -> dict[str, str]:
        """What a client needs in its environment to log in (libpq reads it)."""
        return {"PGPASSWORD": self.password}

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def start(self, timeout: float = 30.0) -> None:
        cmd = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.sockets),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
        ]
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={value}"]
        with open(self.log_path, "ab") as log:
            # die_with_parent only calls a libc loaded beforehand: safe between fork and exec in a threaded parent
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=self._as,
                preexec_fn=die_with_parent,
                cwd=self.root,
            )
        if self not in LIVE_SERVERS:
            LIVE_SERVERS.append(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                if self._psql("SELECT 1").returncode == 0:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                str(self.sockets),
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                sql,
            ],
            check=False,
            capture_output=True,
            env={**os.environ, "PGPASSWORD": self.password},
        )

    def sql(self, sql: str, database: str = "postgres") -> str:
        """Run one statement as the superuser over the socket; its output."""
        done = self._psql(sql, database)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        name = name or f"t_{secrets.token_hex(6)}"
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT): sessions are ended, the server checkpoints and exits."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@atexit.register
def _stop_leftovers() -> None:
    for server in LIVE_SERVERS:
        server.close()


# -- which store the sidecar suites run on -----------------------------------------------------------------------------

STORE = os.environ.get("MOORAGE_TEST_STORE", "sqlite").strip().lower() or "sqlite"
if STORE not in ("sqlite", "postgresql"):
    raise RuntimeError(f"MOORAGE_TEST_STORE must be 'sqlite' or 'postgresql', not {STORE!r}")
_SHARED: PostgresServer | None = None
_DATABASES: dict[str, str] = {}


def shared_server() -> PostgresServer:
    """The one PostgreSQL server of this test process (started on first use, stopped at exit)."""
    global _SHARED
    if _SHARED is None or not _SHARED.is_running():
        if _SHARED is not None:
            _SHARED.close()
        _SHARED = PostgresServer()
    return _SHARED


def store_url(db_path: Path) -> str:
    """The ``--store`` of a sidecar whose SQLite file would be ``db_path``: that file, or a database of its own on
    the shared server (the same one on every restart of that sidecar)."""
    if STORE == "sqlite":
        return f"sqlite:///{Path(db_path).resolve()}"
    key = str(Path(db_path).resolve())
    if key not in _DATABASES:
        _DATABASES[key] = shared_server().create_database()
    return _DATABASES[key]


def store_env() -> dict[str, str]:
    """What a sidecar process needs in its environment for ``store_url`` (the password, never on its command line)."""
    return shared_server().env if STORE == "postgresql" else {}
