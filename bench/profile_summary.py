"""Summarise a py-spy `--format raw` (collapsed stacks) profile written by BENCH_PROFILE.

    python -m bench.profile_summary bench/out/profiles/moorage-backend.collapsed.txt [--top 30] [--grep TEXT]

Prints the functions with the most samples on-CPU (self) and in the stack (inclusive), and the
share per thread.  `--grep` keeps only stacks containing TEXT (e.g. a module name).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")

# Leaf functions that (almost always) mean "blocked in a C call with the GIL released", which
# py-spy's default mode often still reports as active.  Their samples are counted as waiting.
WAITING = {
    "Condition.wait (python3.11/threading.py)",
    "Event.wait (python3.11/threading.py)",
    "Condition.__enter__ (python3.11/threading.py)",  # blocking lock acquire (contention)
    "_worker (futures/thread.py)",  # ThreadPoolExecutor idle: queue.get()
    "_serve (grpc/_server.py)",  # completion_queue.poll()
    "_UnaryUnaryMultiCallable._blocking (grpc/_channel.py)",  # waiting for an RPC response
    "_MultiThreadedRendezvous._next (grpc/_channel.py)",
    "_run_channel_spin_thread.<locals>.channel_spin (grpc/_channel.py)",
    "EpollSelector.select (python3.11/selectors.py)",
    "sleep",
    "Queue.get (python3.11/queue.py)",
    "Thread.join (python3.11/threading.py)",
    "_wait_for_tstate_lock (python3.11/threading.py)",
}
_LINENO = re.compile(r":\d+\)$")


def _func(frame: str) -> str:
    # "fn (path/to/file.py:123)" -> "fn (file.py)": aggregate over lines of one function
    frame = _LINENO.sub(")", frame)
    m = re.match(r"^(.*) \((.*)\)$", frame)
    if not m:
        return frame
    name, path = m.groups()
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


def _bucket(frames: list[str], app: str) -> str:
    """Classify a stack by the innermost interesting frame: gRPC internals, SQLite, app code, ..."""
    if frames and frames[-1].startswith("Handle._run (") and "asyncio/events.py" in frames[-1]:
        # The leaf is an event-loop callback with no Python frame below it: native code run as an
        # asyncio callback, i.e. grpc.aio's Cython core in an aio server (py-spy without --native).
        return "native code run by event-loop callbacks (grpc.aio Cython core)"
    for f in reversed(frames):
        if "grpc/_cython" in f or "cygrpc" in f or "grpc/_server" in f or "grpc/aio" in f or "grpc/_channel" in f:
            return "grpc (server/channel internals, incl. socket syscalls)"
        if "sqlite3" in f or "_sqlite3" in f or "_pysqlite" in f or ("libsqlite" in f):
            return "sqlite3 (C library / driver)"
        if "protobuf" in f or "_message.abi3" in f or "_upb" in f:
            return "protobuf"
        if app and app in f:
            return f"app code ({app}) itself"
        if "asyncio/" in f or "_asynciomodule" in f or "selectors.py" in f:
            return "asyncio event loop"
    return "other (interpreter, threads, imports)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("path", type=Path)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--grep", default="")
    ap.add_argument(
        "--app", default="moorage/", help="path fragment of the code under test, for the 'where does CPU go' split"
    )
    ap.add_argument(
        "--include-waiting", action="store_true", help="keep samples whose leaf is a known blocking call (see WAITING)"
    )
    args = ap.parse_args()

    self_c: Counter[str] = Counter()
    waiting = 0
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in args.path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stack, n = m.group(1), int(m.group(2))
        if args.grep and args.grep not in stack:
            continue
        frames = stack.split(";")
        total += n
        thread = None
        # --threads / --subprocesses add pseudo-frames at the root
        while frames and frames[0].startswith(("thread (", "process ")):
            if frames[0].startswith("thread ("):
                # "thread (0x7f..)" or "thread (123): Name" -> group pool threads by name prefix
                thread = re.sub(r"[_-]\d+$", "_*", frames[0].split(": ", 1)[-1])
            frames = frames[1:]
        funcs = [_func(f) for f in frames]
        if funcs and funcs[-1] in WAITING and not args.include_waiting:
            waiting += n
            continue
        if thread:
            threads[thread] += n
        buckets[_bucket(frames, args.app)] += n
        if funcs:
            self_c[funcs[-1]] += n
        for f in set(funcs):
            incl[f] += n
    if not total:
        print("no samples")
        return
    print(f"{total} samples ({args.path.name}{', stacks containing ' + repr(args.grep) if args.grep else ''})")
    if waiting:
        print(
            f"{waiting} ({100 * waiting / total:.1f}%) were blocked in a known waiting call and are left out; "
            f"percentages below are of the remaining {total - waiting}"
        )
        total -= waiting
    print(f"\nwhere samples are (deepest matching frame decides; app = frames containing {args.app!r}):")
    for b, n in buckets.most_common():
        print(f"  {100 * n / total:5.1f}%  {b}")
    if threads:
        print("\nby thread:")
        for t, n in threads.most_common(10):
            print(f"  {100 * n / total:5.1f}%  {t}")
    print(f"\ntop {args.top} self (on-CPU leaf):")
    for f, n in self_c.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print(f"\ntop {args.top} inclusive:")
    for f, n in incl.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    main()
