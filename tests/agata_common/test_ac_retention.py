"""The retention policy: the newest runs kept within a count and a size, the oldest go first."""

import pytest

from agata_common.retention import RetentionPolicy


@pytest.mark.parametrize(("sizes", "keep_runs", "keep_bytes", "pruned"), [
    ({}, 2, 100, []),
    ({1: 10, 2: 10}, 2, 100, []),
    ({1: 10, 2: 10, 3: 10}, 2, 100, [1]),
    ({5: 10, 1: 10, 3: 10, 4: 10}, 1, 100, [1, 3, 4]),
    ({1: 50, 2: 40, 3: 30}, 5, 75, [1]),
    ({1: 50, 2: 40, 3: 30}, 5, 65, [1, 2]),
    ({1: 1, 2: 500}, 5, 100, [1]),      # the newest stays, whatever its size
    ({1: 60, 2: 1, 3: 1}, 5, 61, [1]),  # once one goes, no older one stays
])
def test_runs_to_prune(sizes, keep_runs, keep_bytes, pruned) -> None:
    assert RetentionPolicy(keep_runs, keep_bytes).runs_to_prune(sizes) == pruned
