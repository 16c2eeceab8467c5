from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import Cluster

#: Test files whose tests run on one worker: they share a module-scoped cluster or servers
#: (started once there, not once per worker), or a fixed port and file.
ONE_WORKER_FILES = {
    "tests/test_async.py",
    "tests/test_cluster.py",
    "tests/test_continuous.py",
    "tests/test_hostile.py",
    "tests/test_http1.py",
    "tests/test_openai.py",
    "tests/test_streaming.py",
    "tests/test_tracing.py",
    "tests/test_oracle_answers.py",
    "tests/test_oracle_auth.py",
    "tests/test_oracle_middlewares.py",
    # LitServe's e2e scripts serve on port 8000 and write client.py in the suite's folder.
    "tests/litserve_suite/tests/e2e/test_e2e.py",
}

#: Tests run one after the other on a single worker, never beside each other (node id
#: prefixes): they load the machine as a whole (a chaos run, hundreds of simulated workers,
#: a browser).
ONE_AFTER_ANOTHER = (
    "tests/test_chaos.py",
    "tests/test_status_scale.py",
    "tests/test_dashboard.py",
)

#: Tests run last, one after the other, when the other workers are done: LitServe's whose
#: wall-clock bounds count their server's start (tests/litserve_suite/conftest.py).
LAST = (
    "tests/litserve_suite/tests/unit/test_simple.py::test_workers_health",
    "tests/litserve_suite/tests/unit/test_openai_embedding.py::test_openai_embedding_spec_with_batching",
)


def _scope(nodeid: str) -> str:
    """What runs together on one worker: a test alone, or its file, or its group."""
    if nodeid.startswith(LAST):
        return "last"
    if nodeid.startswith(ONE_AFTER_ANOTHER):
        return "one after another"
    path = nodeid.split("::", 1)[0]
    return path if path in ONE_WORKER_FILES else nodeid


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The groups first (the longest), then single tests, and LAST at the end: the workers
    take the tests in this order."""

    def rank(item: pytest.Item) -> int:
        scope = _scope(item.nodeid)
        return 2 if scope == "last" else 1 if scope == item.nodeid else 0

    items.sort(key=rank)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: twice the usable cores, as most tests wait on the processes they start."""
    return 2 * len(os.sched_getaffinity(0))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadscope` as this suite needs it: each test on its own (the best balance),
    except those of ONE_WORKER_FILES, each file together, and of ONE_AFTER_ANOTHER and LAST,
    each group together, in the order pytest_collection_modifyitems gives.
    (pytest-xdist's `xdist_group` marks do not work with pytest 9.2, which fixed node ids.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return Scheduling(config, log)  # type: ignore[arg-type]


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
