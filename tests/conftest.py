from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(c.logs())


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster shared by a module's tests that only send it requests (none stops, restarts
    or reconfigures it): a module's fixture starts it once, and it stops after the last test.
    A failing test gets its logs in its report."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop_all()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    shared = getattr(item, "funcargs", {}).get("module_cluster")
    if report.failed and isinstance(shared, Cluster):
        report.sections.append(("the module's cluster", shared.logs()))
    return report
