from __future__ import annotations

from collections.abc import Iterator

import pytest

import flowstone as fs
from flowstone.records import Status


class Tracked:
    """A resource with an explicit lifecycle that logs what happens to it."""

    def __init__(self, log: list[str], name: str, *, fail: bool = False) -> None:
        self.log, self.name, self.fail = log, name, fail

    def setup(self) -> str:
        self.log.append(f"setup {self.name}")
        if self.fail:
            raise ConnectionError(f"{self.name} is down")
        return f"{self.name}-client"

    def teardown(self, value: str) -> None:
        self.log.append(f"teardown {value}")


def test_set_up_once_per_run_shared_and_torn_down() -> None:
    log: list[str] = []
    received: list[object] = []

    @fs.asset(requires=["db"])
    def a(ctx):
        received.append(dict(ctx.resources))
        return 1

    @fs.asset(requires=["db"])
    def b(ctx, a):
        received.append(dict(ctx.resources))
        return 2

    @fs.asset
    def c(ctx, b):
        received.append(dict(ctx.resources))
        return 3

    pipeline = fs.Pipeline(
        [a, b, c],
        store="memory",
        resources={"db": Tracked(log, "db"), "unused": Tracked(log, "unused")},
    )
    assert pipeline.materialize_all().ok
    assert log == ["setup db", "teardown db-client"]
    assert received == [{"db": "db-client"}, {"db": "db-client"}, {}]
    pipeline.materialize_all()
    assert log == ["setup db", "teardown db-client"] * 2


def test_teardown_runs_even_when_an_asset_fails() -> None:
    log: list[str] = []

    @fs.asset(requires=["db"])
    def a(ctx):
        raise RuntimeError("boom")

    pipeline = fs.Pipeline([a], store="memory", resources={"db": Tracked(log, "db")})
    assert not pipeline.materialize_all().ok
    assert log == ["setup db", "teardown db-client"]


def test_failed_setup_fails_only_the_assets_that_need_it() -> None:
    log: list[str] = []

    @fs.asset(requires=["api"])
    def needs_api(ctx):
        return 1

    @fs.asset(requires=["api"])
    def also_needs_api(ctx):
        return 1

    @fs.asset
    def independent():
        return 2

    pipeline = fs.Pipeline(
        [needs_api, also_needs_api, independent],
        store="memory",
        resources={"api": Tracked(log, "api", fail=True)},
        max_workers=1,
    )
    run = pipeline.materialize_all()
    statuses = {r.asset: r.status for r in run.materializations}
    assert statuses == {
        "needs_api": Status.FAILED,
        "also_needs_api": Status.FAILED,
        "independent": Status.SUCCESS,
    }
    assert run["needs_api"].error_type == "ResourceSetupError"
    assert "api is down" in (run["needs_api"].error_message or "")
    # Setup is attempted once per run, not once per asset.
    assert log == ["setup api"]


def test_generator_function_and_context_manager_resources_across_runs() -> None:
    log: list[str] = []

    @fs.resource
    def session() -> Iterator[str]:
        log.append("open session")
        yield "session"
        log.append("close session")

    class Lock:
        """A re-enterable context manager: entered once per run."""

        def __enter__(self) -> str:
            log.append("acquire")
            return "lock"

        def __exit__(self, *exc: object) -> None:
            log.append("release")

    @fs.asset(requires=["session", "lock", "constant"])
    def a(ctx):
        return sorted(ctx.resources.values())

    pipeline = fs.Pipeline(
        [a],
        store="memory",
        resources={"session": session, "lock": Lock(), "constant": "plain"},
    )
    for _ in range(2):
        assert pipeline.materialize_all().ok
    assert pipeline.load("a") == ["lock", "plain", "session"]
    # Set up in name order, torn down in reverse, once per run.
    assert log == ["acquire", "open session", "close session", "release"] * 2


def test_a_slow_setup_does_not_block_assets_using_other_resources() -> None:
    import threading

    slow_started = threading.Event()
    release_slow = threading.Event()
    order: list[str] = []

    class Slow:
        def setup(self) -> str:
            slow_started.set()
            assert release_slow.wait(5)
            return "slow"

    @fs.asset(requires=["slow"])
    def uses_slow(ctx):
        order.append("slow")
        return 1

    @fs.asset(requires=["fast"])
    def uses_fast(ctx):
        assert slow_started.wait(5)
        order.append("fast")
        release_slow.set()  # only reachable if this asset was not blocked behind Slow.setup
        return 2

    pipeline = fs.Pipeline(
        [uses_slow, uses_fast],
        store="memory",
        resources={"slow": Slow(), "fast": "f"},
        max_workers=2,
    )
    assert pipeline.materialize_all().ok
    assert order == ["fast", "slow"]


def test_failing_teardown_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []

    class BadTeardown(Tracked):
        def teardown(self, value: str) -> None:
            raise OSError("cannot close")

    @fs.asset(requires=["a", "b"])
    def x(ctx):
        return 1

    pipeline = fs.Pipeline(
        [x], store="memory", resources={"a": Tracked(log, "a"), "b": BadTeardown(log, "b")}
    )
    assert pipeline.materialize_all().ok
    assert "teardown a-client" in log
    assert "cannot close" in caplog.text
