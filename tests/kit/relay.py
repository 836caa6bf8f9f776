"""A TCP relay in front of a sidecar, as a Kubernetes Service or a load balancer stands in front of its replicas:
the reconnect tests send one client through each relay, so that every connection attempt it accepts is that
client's, with its time. While the target is down a connection is accepted and closed at once (a failed attempt
to the client, as an address with no endpoints behind it)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from .toolchains import CI

OUTAGE_SECONDS = 30  # long enough for gRPC's and the SDK's default backoff to reach 10 s and more between attempts
MAX_ATTEMPT_GAP_SECONDS = 8  # Moorage's cap is 5 s (plus gRPC's 20% jitter); the defaults' gaps were 10-30 s by now


class TcpRelay:
    def __init__(
        self,
        target_port: int,
        host: str = "127.0.0.1",
        source_host: str | None = None,
        fallback_ports: Sequence[int] = (),
    ) -> None:
        """``source_host``: the loopback address its connections to the target come from (127.0.0.2, ...), so that
        :func:`kernel_blackhole` can cut them and nothing else to that target. ``fallback_ports``: tried in order when
        the target refuses a connection, as a Service's other endpoints are when one replica is gone."""
        self.target = (host, target_port)
        self.fallbacks = [(host, port) for port in fallback_ports]
        self.source = (source_host, 0) if source_host else None
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self.attempts: list[tuple[float, bool]] = []  # (time.monotonic(), reached the target) per connection
        self._closed = False
        self._partitioned = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_loop, name=f"relay:{self.port}", daemon=True).start()

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def failed_attempts(self, since: float = 0.0) -> list[float]:
        with self._lock:
            return [t for t, ok in self.attempts if not ok and t >= since]

    def longest_wait(self, down: float, up: float) -> float:
        """The longest time the client let pass without a connection attempt while the target was down."""
        times = [down, *self.failed_attempts(since=down), up]
        return max(b - a for a, b in itertools.pairwise(times))

    def partition(self) -> None:
        """From now on every byte through the relay is dropped and new connections hang, until :meth:`close`."""
        self._partitioned = True

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self._partitioned:  # the connection never gets anywhere, and nothing says so
                with self._lock:
                    self._open.add(conn)
                continue
            upstream = self._connect()
            if upstream is None:
                with self._lock:
                    self.attempts.append((time.monotonic(), False))
                conn.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.attempts.append((time.monotonic(), True))
                self._open.update((conn, upstream))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        for target in (self.target, *self.fallbacks):
            try:
                return socket.create_connection(target, timeout=2, source_address=self.source)
            except OSError:
                continue
        return None

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self._partitioned:
                    dst.sendall(data)
        except OSError:
            pass
        finally:  # one side gone (the sidecar was killed): drop both, as a proxy does
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
                with self._lock:
                    self._open.discard(s)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def kernel_blackhole(port: int | None = None, host: str | None = None) -> Iterator[None]:
    """Drop every TCP segment to or from ``port``, and every packet to or from the loopback address ``host``, on
    this machine (iptables, removed on exit). Unlike :meth:`TcpRelay.partition` nothing acknowledges what is sent,
    so TCP's own timeouts and keepalives apply, as on a real partition. Needs root with CAP_NET_ADMIN: skipped
    without it, except in CI."""
    iptables = shutil.which("iptables")
    reason = None if iptables and os.geteuid() == 0 else "iptables as root is needed to drop a port's packets"
    rules = [["INPUT", "-p", "tcp", f"--{end}", str(port), "-j", "DROP"] for end in ("dport", "sport") if port]
    rules += [["INPUT", flag, host, "-j", "DROP"] for flag in ("-s", "-d") if host]
    added: list[list[str]] = []
    try:
        while reason is None and len(added) < len(rules):
            rule = rules[len(added)]
            done = subprocess.run([str(iptables), "-w", "-I", *rule], capture_output=True, text=True)
            if done.returncode != 0:
                reason = f"iptables refused a rule: {done.stderr.strip()}"
            else:
                added.append(rule)
        if reason is not None:
            (pytest.fail if CI else pytest.skip)(reason)
        yield
    finally:
        for rule in added:
            subprocess.run([str(iptables), "-w", "-D", *rule], capture_output=True)
