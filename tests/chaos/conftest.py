"""The chaos suite is long: `./test` skips it unless asked for with `-m chaos`
(`./test tests/chaos -m chaos`, as .ci/run does)."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: long fault-injection runs (tests/chaos)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "chaos" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="chaos test: run with `./test tests/chaos -m chaos`")
    for item in items:
        if item.get_closest_marker("chaos"):
            item.add_marker(skip)
