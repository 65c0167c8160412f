"""Property-based fuzz of every loader (bounded here; bench/fuzz_loaders.py runs thousands of cases).

Every input either loads, with every row read counted as kept, skipped or dropped and each
user's events in time order (ties in file order), or stops with a DataError naming the file
and a row or column. The inputs and the property are in loader_fuzz.py.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader_fuzz import STRATEGIES, configs, run_case

BOUNDED = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
@BOUNDED
@given(data=st.data(), config=configs)
def test_loader_loads_and_accounts_for_every_row_or_stops_with_a_located_error(kind, data, config):
    run_case(kind, data.draw(STRATEGIES[kind], label=kind), config)
