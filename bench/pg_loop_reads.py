"""What one-statement reads on the event loop cost when the database is not next door
(``python -m bench.pg_loop_reads``).

The PostgreSQL store runs a read of one statement (a status poll, a page) on the event loop, on a connection of its
own, blocking the loop for one round trip: cheaper in CPU than a hop to a pool thread and back while the server is
on loopback. Each such read holds the whole loop (every gRPC call of the sidecar) for its round trip, and reads run
one after another. This bench puts a TCP proxy that delays every chunk by half of ``BENCH_PG_RTT_MS`` each way
between the store and a real PostgreSQL server (the kit's), and for each round trip time runs, in each mode,
``BENCH_PG_READERS`` concurrent readers (``get_instance`` of 200 instances) for ``BENCH_PG_SECONDS``, beside a
ticker that measures how late the loop wakes it (every 5 ms) and a writer (a durable one-row transition in a loop):

- ``loop``: the reads on the loop's connection whenever it is free (the store's default before this bench);
- ``adaptive``: ``PostgresStore(loop_reads=True)``: on the loop until one read takes longer than
  ``LOOP_READ_BUDGET``, then on the pool for ``LOOP_READ_PAUSE``;
- ``pool``: every read on the pool's threads (the default now).

The proxy is the bench's, never the product's. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HUB = "default"


class DelayProxy:
    """A TCP proxy (run in a process of its own, ``--proxy``, so it takes no GIL from the store under test): every
    chunk is forwarded ``delay`` seconds after it arrived, in order (a link with that one-way latency)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay

    async def serve(self) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer), return_exceptions=True)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    dst.close()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await src.read(65536)
                queue.put_nowait((time.monotonic() + self.delay, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


async def _measure(store, mode: str, ids: list[str], readers: int, seconds: float) -> dict[str, float]:
    from moorage.sidecar import engine

    if mode == "loop":
        store._loop_budget = float("inf")  # the adaptation off: every read the loop can take
    stop = time.monotonic() + seconds
    reads = 0
    lags: list[float] = []
    writes: list[float] = []

    async def reader(k: int) -> None:
        nonlocal reads
        i = k
        while time.monotonic() < stop:
            iid = ids[i % len(ids)]
            await store.read(HUB, lambda tx, iid=iid: tx.get_instance(iid))
            reads += 1
            i += readers
            await asyncio.sleep(0)  # as a gRPC call does after its one read: a read done on the loop never yields

    async def ticker() -> None:
        while time.monotonic() < stop:
            t = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - t - 0.005)

    async def writer() -> None:
        n = 0
        while time.monotonic() < stop:
            t = time.monotonic()
            await store.run(HUB, lambda tx, n=n: engine.raise_event(tx, engine.Effects(), ids[n % len(ids)], "e", None))
            writes.append(time.monotonic() - t)
            n += 1

    await asyncio.sleep(0.3)  # the loop's read connection opens on a thread
    c0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(ticker(), writer(), *(reader(k) for k in range(readers)))
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    lags.sort()
    return {
        "reads/s": reads / wall,
        "cpu ms/read": 1000 * cpu / max(reads, 1),
        "loop lag p50 ms": 1000 * statistics.median(lags),
        "loop lag p99 ms": 1000 * lags[int(len(lags) * 0.99)],
        "write p50 ms": 1000 * statistics.median(writes),
    }


async def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from moorage.sidecar import engine
    from moorage.sidecar.store.postgres import PostgresStore
    from tests.kit.postgres import PostgresServer

    rtts = os.environ.get("BENCH_PG_RTT_MS", "direct,0,1").split(",")  # "direct": no proxy
    readers = int(os.environ.get("BENCH_PG_READERS", "50"))
    seconds = float(os.environ.get("BENCH_PG_SECONDS", "3"))
    rounds = int(os.environ.get("BENCH_PG_ROUNDS", "3"))
    modes = os.environ.get("BENCH_PG_MODES", "loop,adaptive,pool").split(",")
    server = PostgresServer()
    os.environ.update(server.env)
    try:
        url = server.create_database()
        ids = [f"i{k}" for k in range(200)]
        seed = PostgresStore(url)

        def create(tx) -> None:
            for iid in ids:
                engine.create_instance(tx, engine.Effects(), instance_id=iid, name="orch", input=None)

        await seed.run(HUB, create)
        await seed.close()
        print(
            f"{readers} readers, {seconds:g} s per run, median of {rounds} rounds (modes interleaved); "
            f"load average {os.getloadavg()[0]:.1f} at start"
        )
        for rtt in rtts:
            proxy = None
            proxied = url
            if rtt != "direct":
                proxy = subprocess.Popen(
                    [sys.executable, "-m", "bench.pg_loop_reads", "--proxy", str(server.port), str(float(rtt) / 2000)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert proxy.stdout is not None
                proxied = url.replace(f":{server.port}/", f":{proxy.stdout.readline().strip()}/")
            results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
            for _ in range(rounds):
                for mode in modes:
                    store = PostgresStore(proxied, loop_reads=mode != "pool")
                    try:
                        results[mode].append(await _measure(store, mode, ids, readers, seconds))
                    finally:
                        await store.close()
            if proxy is not None:
                proxy.kill()
                proxy.wait()
            for mode in modes:
                med = {k: statistics.median(r[k] for r in results[mode]) for k in results[mode][0]}
                print(f"RTT {rtt:>6s} ms  {mode:5s}  " + "  ".join(f"{k} {v:8.2f}" for k, v in med.items()))
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        server.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--proxy"]:
        asyncio.run(DelayProxy(int(sys.argv[2]), float(sys.argv[3])).serve())
    else:
        asyncio.run(main())
