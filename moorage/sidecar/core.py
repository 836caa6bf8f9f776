"""The sidecar core: task hubs, work-item streams, leases, in-flight tokens, counters and wake-ups.

Everything that talks to the sidecar's state goes through ``SidecarCore``: the gRPC face
(``moorage.sidecar.service``) translates requests into its calls, the dashboard and ``/metrics`` read through it,
and a state change from any of them is an engine transition run by ``run`` — one transaction, then the wake-ups
that transaction calls for. It knows neither gRPC nor SQL (the shape of durabletask-go's backend interface, which
its executor alone uses).

Waiting costs no threads: instance waiters and work-item streams are coroutines parked on ``Signal``s that a
commit fires. A transition that makes orchestration or activity work also leases that work, in its own
transaction, to a stream that can take it (the stream that completed the item it settles, or one waiting for
work), and hands it to that stream: so a work item costs the transition that made it and the one that settles it,
not a third one to lease it. Streams keep their leases alive while they live (``renew_leases_forever``); a dead
worker's leases lapse after ``lease_seconds`` and its items go to another stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

from moorage.sidecar import engine
from moorage.sidecar.engine import Effects, Filters, Lease, LeasedWork
from moorage.sidecar.store.base import Backlog, Change, InstanceRow, Store, StoreTx, StoreUnavailable
from moorage.sidecar.terms import WORK_KINDS, WorkKind

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger("moorage.sidecar")

DEFAULT_STREAM_CAP = 1000  # in-flight items per kind per stream when the worker states no limit
LEASE_BATCH = 64  # most items of one kind handed to one stream per look
RECHECK_SECONDS = 5.0  # an instance waiter looks again at least this often, fired or not


class UnknownHub(LookupError):
    """The request names a task hub this sidecar does not serve (gRPC NOT_FOUND, as from the DTS emulator)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Task hub not found: {name}")
        self.name = name


class Signal:
    """A broadcast wake-up without tasks: note ``generation`` before looking, then ``wait(generation, …)``,
    and no firing in between is missed."""

    def __init__(self) -> None:
        self.generation = 0
        self._waiters: list[asyncio.Future[None]] = []

    def fire(self) -> None:
        self.generation += 1
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, seen: int, timeout: float) -> bool:
        """Wait until fired after ``seen`` or ``timeout`` seconds pass; True if fired."""
        if self.generation != seen:
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        timer = loop.call_later(max(timeout, 0.0), _settle, fut)
        try:
            await fut
        finally:
            timer.cancel()
        return self.generation != seen


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _renew(tx: StoreTx, owners: list[str], until: float) -> None:
    tx.renew_leases(owners, until)


def _per_kind(value: int) -> dict[WorkKind, int]:
    return {kind: value for kind in WORK_KINDS}


@dataclass(frozen=True)
class WorkerInfo:
    """A connected work-item stream as the dashboard shows it."""

    stream_id: str  # also the owner of the stream's leases
    connected_at: float
    filters: Filters
    capacity: Mapping[WorkKind, int]  # most items of each kind it takes at once
    active: Mapping[WorkKind, int]  # items of each kind it holds now


@dataclass(frozen=True)
class Counters:
    """Work items handed out and settled (completed or abandoned) per kind since the sidecar started."""

    dispatched: Mapping[WorkKind, int]
    completed: Mapping[WorkKind, int]
    lease_expiries: Mapping[WorkKind, int]  # items handed out again because their holder's lease lapsed


@dataclass(eq=False)
class WorkStream:
    """One worker's stream of work items (``open_stream``); ``id`` owns the leases of what it receives."""

    hub: str
    id: str
    filters: Filters
    capacity: Mapping[WorkKind, int]
    connected_at: float = field(default_factory=time.time)
    inflight: dict[WorkKind, set[str]] = field(default_factory=lambda: {kind: set() for kind in WORK_KINDS})
    # the hub's work generation per kind when this stream last found that queue empty: no new work since
    # means no need to look again until a timeout (expired leases, timers coming due)
    seen: dict[WorkKind, int] = field(default_factory=lambda: _per_kind(-1))
    next_due: float | None = None  # when delayed work (timers, delayed signals) next becomes visible
    # leased to it by another transition (see SidecarCore._fold), waiting to be sent
    pending: deque[LeasedWork] = field(default_factory=deque)
    # slots promised to leases in flight, so that concurrent leases stay within capacity
    reserved: dict[WorkKind, int] = field(default_factory=lambda: _per_kind(0))
    live: bool = False  # its work() is running, so it sends what is handed to it
    waiting: bool = False  # parked in work() until something happens
    broken: str | None = None  # why it must end (a completion it delivered could not be stored)


@dataclass
class _Hub:
    name: str
    work: Signal = field(default_factory=Signal)
    instance_signals: dict[str, Signal] = field(default_factory=dict)
    waiters: dict[str, int] = field(default_factory=dict)
    streams: dict[str, WorkStream] = field(default_factory=dict)
    tokens: dict[str, tuple[str, WorkKind]] = field(default_factory=dict)  # completion token -> (stream, kind)
    generation: dict[WorkKind, int] = field(default_factory=lambda: _per_kind(0))
    dispatched: dict[WorkKind, int] = field(default_factory=lambda: _per_kind(0))
    completed: dict[WorkKind, int] = field(default_factory=lambda: _per_kind(0))
    lease_expiries: dict[WorkKind, int] = field(default_factory=lambda: _per_kind(0))
    # entities out in a batch at one of this sidecar's streams: entity id -> completion token, and back
    busy_entities: dict[str, str] = field(default_factory=dict)
    entity_of: dict[str, str] = field(default_factory=dict)


class SidecarCore:
    """The task hubs of one sidecar over one store (see the module docstring)."""

    def __init__(self, store: Store, hubs: Sequence[str], lease_seconds: float) -> None:
        if not hubs:
            raise ValueError("a sidecar serves at least one task hub")
        self._store = store
        self.lease_seconds = lease_seconds
        self._hubs = {name: _Hub(name) for name in hubs}
        self._stopping = asyncio.Event()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        store.subscribe(self._on_change)

    # -- hubs ------------------------------------------------------------------------------------------------

    @property
    def hub_names(self) -> list[str]:
        """The served task hubs, in configuration order."""
        return list(self._hubs)

    @property
    def default_hub(self) -> str:
        """``default`` if served, else the first hub."""
        return "default" if "default" in self._hubs else next(iter(self._hubs))

    def require_hub(self, name: str) -> str:
        """``name`` if this sidecar serves it; ``UnknownHub`` otherwise."""
        self._hub(name)
        return name

    def _hub(self, name: str) -> _Hub:
        hub = self._hubs.get(name)
        if hub is None:
            raise UnknownHub(name)
        return hub

    # -- transitions and reads -------------------------------------------------------------------------------

    async def run(
        self, hub: str, transition: Callable[Concatenate[StoreTx, Effects, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run an engine transition in one durable transaction of ``hub``, then wake whoever it concerns."""
        return await self._run(self._hub(hub), None, None, transition, *args, **kwargs)

    async def _run(
        self,
        h: _Hub,
        prefer: WorkStream | None,
        token: str | None,
        transition: Callable[Concatenate[StoreTx, Effects, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``run``, with the work the transition makes leased in the same transaction (``_fold``) to ``prefer`` (the
        stream settling ``token``) if it can take it, else to a stream waiting for work."""
        fx = Effects()
        stream = prefer if prefer is not None and prefer.live else self._waiting_stream(h)
        if stream is None:
            result = await self._store.run(h.name, lambda tx: transition(tx, fx, *args, **kwargs))
            self._committed(h, fx)
            return result
        # Decided here, on the loop, so that the transaction touches no core state (a store may run it elsewhere).
        want = self._free(stream, token)
        # Entity messages are not leased this way: a stream that leases them a moment later takes every message that
        # arrived meanwhile in one batch, where leasing at once makes a batch per message (measured on
        # entity_signals: +14-20% sidecar and +12-35% worker CPU per signal, whether leased by the signal or by the
        # completion of the batch before).
        want[WorkKind.ENTITY] = 0
        generation = dict(h.generation)
        t = time.time()
        lease = Lease(owner=stream.id, now=t, until=t + self.lease_seconds)
        asked: dict[WorkKind, int] = {}
        lease_fx = Effects()

        def body(tx: StoreTx) -> tuple[T, LeasedWork | None]:
            result = transition(tx, fx, *args, **kwargs)
            asked.update({kind: n if kind in fx.work else 0 for kind, n in want.items()})
            if not any(asked.values()):
                return result, None
            return result, engine.lease_work(tx, lease_fx, lease, stream.filters, asked, look_ahead=False)

        for kind, n in want.items():
            stream.reserved[kind] += n
        try:
            result, leased = await self._store.run(h.name, body)
        finally:
            for kind, n in want.items():
                stream.reserved[kind] -= n
        for kind, n in lease_fx.expired.items():
            h.lease_expiries[kind] += n
        if leased is not None:
            self._deliver(h, stream, leased, asked, generation)
        self._committed(h, fx)
        return result

    def _waiting_stream(self, h: _Hub) -> WorkStream | None:
        for stream in h.streams.values():
            if stream.waiting and stream.live:
                return stream
        return None

    def _free(self, stream: WorkStream, settling: str | None = None) -> dict[WorkKind, int]:
        """How many more items of each kind ``stream`` may be leased (at most LEASE_BATCH), counting the slot of
        the item ``settling`` settles as free."""
        out: dict[WorkKind, int] = {}
        for kind in WORK_KINDS:
            held = len(stream.inflight[kind]) + stream.reserved[kind]
            if settling is not None and settling in stream.inflight[kind]:
                held -= 1
            out[kind] = max(min(stream.capacity[kind] - held, LEASE_BATCH), 0)
        return out

    def _deliver(
        self,
        h: _Hub,
        stream: WorkStream,
        leased: LeasedWork,
        asked: Mapping[WorkKind, int],
        generation: Mapping[WorkKind, int],
    ) -> None:
        """Hand work leased by another transition to ``stream``; a queue it drained need not be looked at again for
        the wake-up this transition causes (``generation`` + 1), though any other one still counts."""
        for kind, n in asked.items():
            if n > 0 and leased.count(kind) < n:
                stream.seen[kind] = generation[kind] + 1
        if not leased:
            return
        if stream.id not in h.streams:  # it closed meanwhile: the leases lapse and the items go elsewhere
            return
        self._track_all(h, stream, leased)
        stream.pending.append(leased)
        h.work.fire()

    async def read(self, hub: str, query: Callable[[StoreTx], T]) -> T:
        """Run a read-only ``query`` on a consistent snapshot of ``hub``'s acknowledged state."""
        self._hub(hub)
        return await self._store.read(hub, query)

    async def wait_instance(
        self, hub: str, instance_id: str, done: Callable[[InstanceRow], bool], timeout: float | None
    ) -> InstanceRow | None:
        """The instance once ``done(row)`` holds; ``None`` if ``timeout`` seconds (``None``: no limit) pass first."""
        h = self._hub(hub)
        if not instance_id:
            raise ValueError("instance id must not be empty")
        deadline = time.monotonic() + timeout if timeout is not None else None
        sig = h.instance_signals.setdefault(instance_id, Signal())
        h.waiters[instance_id] = h.waiters.get(instance_id, 0) + 1
        try:
            while True:
                seen = sig.generation
                row = await self._store.read(hub, lambda tx: tx.get_instance(instance_id))
                if row is not None and done(row):
                    return row
                wait = RECHECK_SECONDS if deadline is None else min(RECHECK_SECONDS, deadline - time.monotonic())
                if wait <= 0:
                    return None
                await sig.wait(seen, wait)
        finally:
            h.waiters[instance_id] -= 1
            if not h.waiters[instance_id]:
                del h.waiters[instance_id]
                h.instance_signals.pop(instance_id, None)

    # -- work-item streams -----------------------------------------------------------------------------------

    def open_stream(self, hub: str, filters: Filters, capacity: Mapping[WorkKind, int]) -> WorkStream:
        """Register a worker's stream; a capacity of 0 (the worker states no limit) becomes DEFAULT_STREAM_CAP."""
        h = self._hub(hub)
        stream = WorkStream(
            hub=hub,
            id=f"{hub}/{uuid.uuid4().hex}",
            filters=filters,
            capacity={kind: capacity.get(kind, 0) or DEFAULT_STREAM_CAP for kind in WORK_KINDS},
        )
        h.streams[stream.id] = stream
        return stream

    def close_stream(self, stream: WorkStream) -> None:
        """Forget a stream and its in-flight tokens; its leases lapse unless renewed by another stream."""
        h = self._hub(stream.hub)
        h.streams.pop(stream.id, None)
        for tokens in stream.inflight.values():
            for token in tokens:
                h.tokens.pop(token, None)
                self._entity_done(h, token)

    async def work(self, stream: WorkStream, idle: float) -> AsyncIterator[LeasedWork]:
        """Lease work to ``stream`` as it appears, until ``stop()``.

        Yields each non-empty lease at once, and an empty one after ``idle`` seconds in which nothing was yielded
        (time for the face to send a keep-alive). Between looks it sleeps until a commit brings new work, a
        timer comes due, or leases may have lapsed."""
        h = self._hub(stream.hub)
        last_sent = time.monotonic()
        everywhere = True
        stream.live = True
        try:
            while not self._stopping.is_set():
                if stream.broken is not None:
                    raise StoreUnavailable(stream.broken)
                if stream.pending:  # leased to it by another transition
                    yield stream.pending.popleft()
                    last_sent = time.monotonic()
                    continue
                seen = h.work.generation
                leased = await self.lease_work(stream, everywhere)
                if leased:
                    yield leased
                    last_sent = time.monotonic()
                    continue
                if stream.pending:
                    continue
                idle_left = idle - (time.monotonic() - last_sent)
                if idle_left <= 0:
                    yield leased
                    last_sent = time.monotonic()
                    continue
                timeout = min(idle_left, max(self.lease_seconds / 2, 0.05))
                if stream.next_due is not None:
                    timeout = min(timeout, max(stream.next_due - time.time(), 0.0) + 0.001)
                # a timeout: leases may have lapsed, timers come due, so look everywhere next time
                stream.waiting = True
                try:
                    everywhere = not await h.work.wait(seen, timeout)
                finally:
                    stream.waiting = False
        finally:
            stream.live = stream.waiting = False

    async def lease_work(self, stream: WorkStream, everywhere: bool = True) -> LeasedWork:
        """One look at the queues for ``stream``: up to its free capacity of each kind, leased to it.

        Without ``everywhere`` only queues that got new work since the stream last drained them are looked at."""
        h = self._hub(stream.hub)
        t = time.time()
        lease = Lease(owner=stream.id, now=t, until=t + self.lease_seconds)
        generation = dict(h.generation)
        free = self._free(stream)
        want = {kind: free[kind] if everywhere or generation[kind] != stream.seen[kind] else 0 for kind in WORK_KINDS}
        if not any(n > 0 for n in want.values()):
            return LeasedWork([], [], [])
        fx = Effects()
        for kind, n in want.items():
            stream.reserved[kind] += n
        try:
            leased = await self._store.run(
                stream.hub, lambda tx: engine.lease_work(tx, fx, lease, stream.filters, want), durable=False
            )
        finally:
            for kind, n in want.items():
                stream.reserved[kind] -= n
        for kind, n in fx.expired.items():
            h.lease_expiries[kind] += n
        if not leased:
            stream.next_due = leased.next_due
        for kind in WORK_KINDS:
            if want[kind] > 0 and leased.count(kind) < want[kind]:
                stream.seen[kind] = generation[kind]  # drained as far as this stream can tell
        self._track_all(h, stream, leased)
        return leased

    async def complete_work(
        self,
        hub: str,
        token: str,
        transition: Callable[Concatenate[StoreTx, Effects, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run the transition that settles a leased item (its result or its abandonment), then free its slot. The
        work it makes goes to the same stream first."""
        h = self._hub(hub)
        owner = h.tokens.get(token)
        stream = h.streams.get(owner[0]) if owner is not None else None
        self._entity_done(h, token)  # from now on, messages to it wake the streams again
        try:
            result = await self._run(h, stream, token, transition, *args, **kwargs)
        except (ValueError, engine.NotFound, engine.AlreadyExists, engine.Precondition):
            raise  # the worker's own mistake, told so (INVALID_ARGUMENT, ...)
        except Exception as exc:  # not stored: a store fault, or a bug (e.g. deadlock retries exhausted)
            if stream is not None:
                self._break(h, stream, exc)
            raise
        self._untrack(h, token)
        return result

    def _break(self, h: _Hub, stream: WorkStream, exc: Exception) -> None:
        """End the stream that delivered an item whose completion could not be stored. The worker drops such an
        item (the durabletask SDK logs the failed call and moves on), and while its stream lived the item's lease
        was renewed with the stream's: it would never be handed out again. Ended, its leases lapse after
        ``lease_seconds`` and the work goes out again, to this worker once it reconnects."""
        if stream.broken is None:
            log.warning("ending work stream %s: a completion it delivered could not be stored (%s)", stream.id, exc)
            stream.broken = f"a completion this stream delivered could not be stored ({exc})"
        h.streams.pop(stream.id, None)  # its leases are no longer renewed from now on
        h.work.fire()

    def _track_all(self, h: _Hub, stream: WorkStream, leased: LeasedWork) -> None:
        self._track(h, stream, WorkKind.ORCHESTRATION, (o.row.lease_token for o in leased.orchestrations))
        self._track(h, stream, WorkKind.ACTIVITY, (a.lease_token for a in leased.activities))
        self._track(h, stream, WorkKind.ENTITY, (e.row.lease_token for e in leased.entities))
        for e in leased.entities:
            assert e.row.lease_token is not None
            h.busy_entities[e.row.entity_id] = e.row.lease_token
            h.entity_of[e.row.lease_token] = e.row.entity_id

    @staticmethod
    def _entity_done(h: _Hub, token: str) -> None:
        entity_id = h.entity_of.pop(token, None)
        if entity_id is not None and h.busy_entities.get(entity_id) == token:
            del h.busy_entities[entity_id]

    def _track(self, h: _Hub, stream: WorkStream, kind: WorkKind, tokens: Iterable[str | None]) -> None:
        for token in tokens:
            assert token is not None
            stream.inflight[kind].add(token)
            h.tokens[token] = (stream.id, kind)
            h.dispatched[kind] += 1

    def _untrack(self, h: _Hub, token: str) -> None:
        owner_kind = h.tokens.pop(token, None)
        if owner_kind is None:
            return
        owner, kind = owner_kind
        h.completed[kind] += 1
        stream = h.streams.get(owner)
        if stream is not None:
            stream.inflight[kind].discard(token)
            h.work.fire()  # the stream has room again

    # -- what the dashboard and /metrics see -----------------------------------------------------------------

    def workers(self, hub: str) -> list[WorkerInfo]:
        """The streams connected to ``hub`` now, oldest first."""
        return [
            WorkerInfo(
                stream_id=s.id,
                connected_at=s.connected_at,
                filters=s.filters,
                capacity=dict(s.capacity),
                active={k: len(v) for k, v in s.inflight.items()},
            )
            for s in list(self._hub(hub).streams.values())
        ]

    def counters(self, hub: str) -> Counters:
        """A copy of ``hub``'s dispatched/completed counters."""
        h = self._hub(hub)
        return Counters(
            dispatched=dict(h.dispatched), completed=dict(h.completed), lease_expiries=dict(h.lease_expiries)
        )

    async def backlog(self, hub: str) -> Backlog:
        """Work items of ``hub`` waiting for a worker and held by one now, per kind, as the store sees them (so, on
        a shared store, those of every replica): what an autoscaler scales workers on."""
        return await self.read(hub, lambda tx: tx.backlog(time.time()))

    @property
    def is_open(self) -> bool:
        """True until ``stop()``: the hubs take work (``/readyz``)."""
        return not self._stopping.is_set()

    # -- wake-ups --------------------------------------------------------------------------------------------

    def _committed(self, h: _Hub, fx: Effects) -> None:
        """Wake whoever a committed transition concerns, the work only known after its commit included."""
        fx.settle()
        self._wake(h, fx.changed, fx.work, fx.entity_messages)

    def _wake(
        self, h: _Hub, instances: Iterable[str], work: Iterable[WorkKind], entity_messages: Iterable[str] = ()
    ) -> None:
        for instance_id in instances:
            sig = h.instance_signals.get(instance_id)
            if sig is not None:
                sig.fire()
        kinds = set(work)
        # a message to an entity out in a batch is found by that batch's completion (engine.complete_entity)
        if any(entity_id not in h.busy_entities for entity_id in entity_messages):
            kinds.add(WorkKind.ENTITY)
        if kinds:
            for kind in kinds:
                h.generation[kind] += 1
            h.work.fire()

    def _on_change(self, change: Change) -> None:
        """Another process committed to the shared store: wake as for a local transition, on our loop."""
        h = self._hubs.get(change.hub)
        if h is None:
            return  # a hub another sidecar serves
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._loop is None or running is self._loop:
            self._wake(h, change.instances, change.work)
        else:
            self._loop.call_soon_threadsafe(self._wake, h, change.instances, change.work)

    # -- leases and shutdown ---------------------------------------------------------------------------------

    async def renew_leases_forever(self) -> None:
        """Live streams keep their leases; a dead worker's leases lapse after ``lease_seconds``."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        failing: set[str] = set()  # hubs whose renewal failed last time: an outage is said once, not every round
        while not self._stopping.is_set():
            for h in self._hubs.values():
                owners = list(h.streams)
                if owners:
                    until = time.time() + self.lease_seconds
                    try:
                        await self._store.run(
                            h.name, functools.partial(_renew, owners=owners, until=until), durable=False
                        )
                        failing.discard(h.name)
                    except StoreUnavailable as exc:  # an outage: the leases may lapse, the work goes out again
                        level = logging.DEBUG if h.name in failing else logging.WARNING
                        log.log(level, "lease renewal failed hub=%s: %s", h.name, exc)
                        failing.add(h.name)
                    except Exception:
                        log.exception("lease renewal failed hub=%s", h.name)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.lease_seconds / 3)
            except TimeoutError:
                pass

    def stop(self) -> None:
        """End every work-item stream (they notice on their next wake-up, which this is) and the lease keeper."""
        self._stopping.set()
        for h in self._hubs.values():
            h.work.fire()
