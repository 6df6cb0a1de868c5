"""Hypothesis profiles for the property-based tests.

``default`` (about 20 examples per test) keeps the everyday run fast; ``slow`` runs at least 200.
The profile is chosen by ``PDN_HYPOTHESIS_PROFILE`` when set, else by the marker expression:
``pytest -m slow`` selects ``slow`` and also runs the hypothesis tests (they carry no marker of
their own, so a plain ``pytest`` runs them at the default size).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               derandomize=False, print_blob=True)
settings.register_profile("default", max_examples=20, **_COMMON)
settings.register_profile("slow", max_examples=200, **_COMMON)
settings.register_profile("ci", max_examples=20, **{**_COMMON, "derandomize": True})


def _selects_slow(config: pytest.Config) -> bool:
    """True when the ``-m`` expression selects tests marked ``slow`` (``-m slow``, ``-m "slow or gpu"``)."""
    expr = config.getoption("markexpr", "") or ""
    if not expr:
        return False
    from _pytest.mark.expression import Expression

    try:
        return bool(Expression.compile(expr).evaluate(lambda name, **_: name == "slow"))
    except Exception:  # an expression pytest itself will reject; leave the choice to it
        return False


def pytest_configure(config: pytest.Config) -> None:
    profile = os.environ.get("PDN_HYPOTHESIS_PROFILE") or ("slow" if _selects_slow(config) else "default")
    settings.load_profile(profile)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under ``-m slow`` the property tests run too, with the slow profile's example count.
    if _selects_slow(config):
        for item in items:
            if getattr(getattr(item, "function", None), "is_hypothesis_test", False):
                item.add_marker(pytest.mark.slow)
