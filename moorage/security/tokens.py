"""The static token file (``--auth-token-file``): one accepted bearer token per line, optionally followed by the
task hubs it may use.

    # comments and blank lines are ignored
    s3cr3t-for-ci
    w0rker-token  orders,billing

The file is re-read when it changes (size, mtime or inode), at most once per ``recheck_seconds``, so tokens rotate
without a restart: write the new file next to the old one and rename it over. A file that becomes unreadable or
malformed keeps the last good set (and says so in the log, never with its contents) rather than locking every
worker out mid-rotation. Lookups compare against every entry with ``hmac.compare_digest`` so the time taken does
not tell which prefix matched.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("moorage.security")


@dataclass(frozen=True)
class TokenEntry:
    """One line of the file. ``hubs`` None: every task hub. ``line`` names the entry in logs (never the token)."""

    digest: bytes
    hubs: frozenset[str] | None
    line: int


def parse_token_file(text: str, source: str = "token file") -> list[TokenEntry]:
    """Parse the file's text; raise ValueError naming the line (not its token) on a malformed one."""
    entries: list[TokenEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) > 2:
            raise ValueError(
                f"{source} line {number}: expected 'TOKEN' or 'TOKEN hub1,hub2', found {len(parts)} "
                "fields (tokens cannot contain spaces)"
            )
        hubs: frozenset[str] | None = None
        if len(parts) == 2:
            names = [h.strip() for h in parts[1].split(",") if h.strip()]
            if not names:
                raise ValueError(f"{source} line {number}: the hub list is empty")
            hubs = frozenset(names)
        entries.append(TokenEntry(_digest(parts[0]), hubs, number))
    return entries


def warn_if_readable_by_others(path: Path, what: str) -> None:
    """Secrets in a file anyone on the machine can read are everyone's: say so (chmod 600)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s %s is accessible to other users (mode %o); chmod 600 it", what, path, mode & 0o777)


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps compare_digest's time independent of the tokens' lengths too.
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenFile:
    """The accepted static tokens, kept in step with the file."""

    def __init__(self, path: str | os.PathLike[str], *, recheck_seconds: float = 1.0) -> None:
        self.path = Path(path)
        self.recheck_seconds = recheck_seconds
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        try:
            self._entries = self._read()
        except OSError as exc:
            raise ValueError(f"cannot read the token file {self.path}: {exc.strerror or exc}") from None
        if not self._entries:
            raise ValueError(f"the token file {self.path} holds no token (one token per line)")
        log.info("auth token file loaded path=%s tokens=%d", self.path, len(self._entries))
        warn_if_readable_by_others(self.path, "the token file")

    def _read(self) -> list[TokenEntry]:
        st = os.stat(self.path)
        text = self.path.read_text(encoding="utf-8")
        entries = parse_token_file(text, str(self.path))
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        return entries

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.recheck_seconds:
            return
        with self._lock:
            if now - self._checked < self.recheck_seconds:
                return
            self._checked = now
            try:
                st = os.stat(self.path)
                if (st.st_ino, st.st_size, st.st_mtime_ns) == self._stamp:
                    return
                entries = self._read()
            except (OSError, ValueError) as exc:
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                log.error(
                    "auth token file not reloaded, keeping the previous %d tokens path=%s error=%s",
                    len(self._entries),
                    self.path,
                    detail,
                )
                return
            if not entries:
                log.error(
                    "auth token file now holds no token; keeping the previous %d path=%s", len(self._entries), self.path
                )
                return
            self._entries = entries
            log.info("auth token file reloaded path=%s tokens=%d", self.path, len(entries))

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry for ``token`` or None. Every entry is compared, whichever matches."""
        self._refresh()
        probe = _digest(token)
        found: TokenEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, probe):
                found = entry
        return found


__all__ = ["TokenEntry", "TokenFile", "parse_token_file", "warn_if_readable_by_others"]
