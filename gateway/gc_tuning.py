"""Garbage collector settings for a serving process.

Under load CPython's default collector (a young collection every 700 net
container allocations) ran ~110 times a second here and took 1.5-2.1 s of
every 20 s with the GIL held, with full collections pausing the whole
process for up to ~120 ms (gc callbacks, 1,000 customers, 64-128
connections): every request in flight waited, which is most of the p99.

Each charge allocates a few hundred containers that live for its ~50 ms in
flight and are then freed by reference counting; cycles are rare. So the
young generation can be much larger: collections become rare (4 in the same
run, 0.07 s) and a cycle still goes within 20,000 allocations. `gc.freeze()`
moves what start-up built (modules, the app, the tree) out of every later
collection's way.
"""

from __future__ import annotations

import gc
from typing import Final

from ledger.limits import gc_young_allocations_max

# Young collections per middle one, and middle ones per full one.
GC_MIDDLE_EVERY: Final = 20
GC_FULL_EVERY: Final = 10


def tune_gc_for_serving() -> None:
    """Call once start-up is done, before serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(gc_young_allocations_max, GC_MIDDLE_EVERY, GC_FULL_EVERY)
