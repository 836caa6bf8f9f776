"""Short form of ``make fuzz`` (tests/reliability/fuzz.py): each property with a few dozen examples and a fixed
seed against one real sidecar + gateway + dashboard + worker."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzz import PROPERTIES, FuzzStack
from kit import sidecar_only

pytestmark = sidecar_only("fuzzes the Moorage sidecar, its gateway and dashboard")

# Examples per property in the short form (the work-item property costs ~1 s an example: real leases and waits).
EXAMPLES = {"fuzz_grpc_messages": 80, "fuzz_grpc_bytes": 60, "fuzz_work_items": 12, "fuzz_http": 150}
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzStack]:
    stack = FuzzStack(Path(tmp_path_factory.mktemp("fuzz"))).start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.mark.parametrize("prop", PROPERTIES, ids=[p.__name__ for p in PROPERTIES])
def test_fuzz_short(fuzz_stack: FuzzStack, prop) -> None:  # type: ignore[no-untyped-def]
    tally: collections.Counter[str] = collections.Counter()
    examples = EXAMPLES[prop.__name__]
    prop(fuzz_stack, examples, SEED, tally)
    assert sum(tally.values()) >= examples // 2, tally
