"""`python -m bench.echo`: server CPU per bare unary RPC (an echo of ~100 bytes, no service behind it) on the
three ways a Python process can serve gRPC here: grpc.aio (the sidecar's `--front grpcio`), the Go front with
the Python handler behind its socketpair (`--front go`, both processes' CPU counted), and grpc's sync server with
a thread pool (what the SDK's in-memory backend runs on). Interleaved rounds, medians.

  ECHO_CALLS    calls per round and server (4000)    ECHO_THREADS  client threads (8)
  ECHO_ROUNDS   rounds (5)                           ECHO_SERVERS  comma list (grpcio,go,sync)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from bench import procs

METHOD = "/moorage.bench.Echo/Echo"


def _handler(behaviour):
    return grpc.method_handlers_generic_handler(
        "moorage.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(behaviour)}
    )


def serve(kind: str, port: int) -> None:
    if kind == "sync":

        def echo_sync(request: bytes, context: grpc.ServicerContext) -> bytes:
            return request

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
        server.add_generic_rpc_handlers((_handler(echo_sync),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def main() -> None:
        if kind == "go":
            from moorage.front import FrontServer, find_binary

            binary = find_binary()
            if binary is None:
                raise SystemExit("no moorage-front binary (make install)")
            server: grpc.aio.Server = FrontServer(binary, max_receive_bytes=4 << 20, max_send_bytes=4 << 20)
        else:
            server = grpc.aio.server()
        server.add_generic_rpc_handlers((_handler(echo),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await asyncio.Event().wait()

    asyncio.run(main())


def drive(port: int, proc: procs.ManagedProcess, calls: int, threads: int) -> tuple[float, float, float]:
    """(wall seconds, server CPU seconds, client CPU seconds) for `calls` echoes from `threads` threads over one
    channel."""
    payload = os.urandom(100)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
        grpc.channel_ready_future(channel).result(timeout=30)
        for _ in range(50):
            echo(payload, timeout=10)
        per = calls // threads

        def worker() -> None:
            for _ in range(per):
                assert echo(payload, timeout=10) == payload

        cpu = proc.cpu_seconds()
        mine = procs.self_cpu_seconds()
        started = time.perf_counter()
        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return time.perf_counter() - started, proc.cpu_seconds() - cpu, procs.self_cpu_seconds() - mine


def main() -> int:
    calls = int(os.environ.get("ECHO_CALLS", "4000"))
    threads = int(os.environ.get("ECHO_THREADS", "8"))
    rounds = int(os.environ.get("ECHO_ROUNDS", "5"))
    kinds = [k.strip() for k in os.environ.get("ECHO_SERVERS", "grpcio,go,sync").split(",") if k.strip()]
    workdir = Path(os.environ.get("TMPDIR", "/tmp"))
    servers = {}
    try:
        for kind in kinds:
            port = procs.free_port()
            servers[kind] = (
                port,
                procs.ManagedProcess(
                    f"echo-{kind}",
                    [sys.executable, "-m", "bench.echo", "serve", kind, str(port)],
                    workdir / f"bench-echo-{kind}.log",
                ),
            )
        cpu: dict[str, list[float]] = {k: [] for k in kinds}
        rate: dict[str, list[float]] = {k: [] for k in kinds}
        client: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(rounds):
            for kind in kinds:
                port, proc = servers[kind]
                wall, used, own = drive(port, proc, calls, threads)
                cpu[kind].append(used / calls * 1e6)
                client[kind].append(own / calls * 1e6)
                rate[kind].append(calls / wall)
        print(f"bare unary echo, {calls} calls x {rounds} rounds, {threads} client threads; load {os.getloadavg()}")
        print(f"{'server':<10} {'server CPU us/call':>20} {'client CPU us/call':>20} {'calls/s':>10}")
        for kind in kinds:
            print(
                f"{kind:<10} {statistics.median(cpu[kind]):>20.0f} {statistics.median(client[kind]):>20.0f}"
                f" {statistics.median(rate[kind]):>10.0f}"
            )
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(main())
