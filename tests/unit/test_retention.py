"""What a registration that left the catalog leaves behind in the pure core: nothing.

The catalog is anyone's to write (issue 11): a caller that churns instances with large
metadata must not fill the gateway's memory with registrations long gone. Caches keyed by
catalog values (validated instances, admitted addresses, server names) and a memo of every
answer seen kept them (up to 16,384 instances and 20,000 answers); the memos now hold the
last snapshot only. Measured with tracemalloc: a memory figure, not a time.
"""

from __future__ import annotations

import gc
import tracemalloc

from sidecar.core.desired import desired_state
from sidecar.core.model import DesiredState
from tests.unit.factories import inst, port_map, settings, snap

ROUNDS, PER_ROUND, META = 20, 10, 20_000  # 4 MB of metadata churned through, 0.2 MB a round


def test_registrations_that_left_leave_nothing_behind() -> None:
    s, pm = settings(), port_map()
    previous: DesiredState | None = None
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for r in range(ROUNDS):
            # each round replaces every instance: new IDs, each with its own large metadata
            members = [inst(f"r{r}-{j}", note=f"{r}-{j}-" + "x" * META) for j in range(PER_ROUND)]
            previous = desired_state(snap(("x", members)), s, pm, previous)
            del members
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert previous is not None and len(previous.listed[0].servers) == PER_ROUND
    # the last round's instances stay (they are the catalog); the 19 before them must not
    assert held < 3 * PER_ROUND * META, f"{held / 1e6:.1f} MB still held"
