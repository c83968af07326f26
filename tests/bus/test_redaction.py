"""A failing bus connection logs its broker URL without the password, on the real brokers.

Each case is a URL carrying a password that cannot work: a port nothing listens on, or the real
Redis / PostgreSQL refusing the credentials (the local Redis has no password set; PostgreSQL has
no such role). The bus must log the failure — with the host, so an operator knows which broker —
and never the password, in the message or in anything the log record carries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from sitecomms.bus import Bus, open_bus
from tests.bus.test_backends import WAIT, Recorder, closed_port, org

SECRET = "s3cret-Pa55word"


class FirstWarning(logging.Handler):
    """Wakes the test at the bus's first warning (the failed connection), without polling."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.set()


CASES = {  # {port}: a local port nothing listens on
    "redis user and password": f"redis://user:{SECRET}@127.0.0.1:{{port}}/0",
    "redis password only": f"redis://:{SECRET}@127.0.0.1:{{port}}/0",
    "redis password parameter": f"redis://127.0.0.1:{{port}}/0?password={SECRET}",
    "redis refuses the credentials": f"redis://sitecomms-test:{SECRET}@127.0.0.1:6379/0",
    "postgres unreachable": f"postgresql://u:{SECRET}@127.0.0.1:{{port}}/db",
    "postgres refuses the role": f"postgres://sitecomms_nobody:{SECRET}@127.0.0.1:5432/postgres",
}


@pytest.mark.parametrize("template", CASES.values(), ids=CASES.keys())
async def test_a_failing_bus_never_logs_its_password(template: str, caplog: pytest.LogCaptureFixture) -> None:
    url = template.format(port=closed_port())
    handler = FirstWarning()
    bus_log = logging.getLogger("sitecomms.bus")
    bus_log.addHandler(handler)
    caplog.set_level(logging.DEBUG, logger="sitecomms")
    bus = open_bus(url, heartbeat_seconds=1.0)
    bus.start(Recorder(org()))
    try:
        async with asyncio.timeout(WAIT):
            await handler.seen.wait()
        assert not bus.connected.is_set(), bus.state
    finally:
        bus_log.removeHandler(handler)
        async with asyncio.timeout(WAIT):
            await bus.close()

    warnings = [r for r in caplog.records if r.name == "sitecomms.bus" and r.levelno >= logging.WARNING]
    assert warnings, caplog.text
    assert "127.0.0.1" in warnings[0].getMessage()  # the operator still sees which broker failed
    assert "***" in warnings[0].getMessage()  # and that it has a password, not what it is
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.getMessage()
        assert SECRET not in repr(record.args)
    assert SECRET not in caplog.text
    assert SECRET not in bus.url and "127.0.0.1" in bus.url


async def test_a_publish_failure_never_logs_its_password(caplog: pytest.LogCaptureFixture) -> None:
    """The backend's error quotes the URL it was given (as some drivers do): the log scrubs it."""
    url = f"redis://user:{SECRET}@127.0.0.1:6379/0"

    class Quoting:
        async def connect(self) -> None:
            return None

        async def close(self) -> None:
            return None

        async def publish(self, payload: str) -> None:
            raise ConnectionError(f"cannot publish to {url} (password {SECRET})")

        async def listen(self) -> AsyncIterator[str]:
            await asyncio.Event().wait()  # connected and quiet until closed
            yield ""

    caplog.set_level(logging.DEBUG, logger="sitecomms")
    bus = Bus(Quoting(), url=url, publish_timeout=1.0)
    bus.start(Recorder(org()))
    try:
        async with asyncio.timeout(WAIT):
            await bus.connected.wait()
        await bus.publish("org-x", 1)
    finally:
        async with asyncio.timeout(WAIT):
            await bus.close()
    assert "bus publish failed" in caplog.text
    assert "redis://user:***@127.0.0.1:6379/0" in caplog.text
    assert SECRET not in caplog.text
