"""Shared by the notification tests: a webhook receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.payments.fakes.server import FakeServer, Request, Response


class Receiver:
    """A webhook endpoint answering `status` (changeable) and recording what it got."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.server = FakeServer(self._handle)

    def _handle(self, request: Request) -> Response:
        self.received.append((request.headers, request.body))
        return Response(self.status, {})

    @property
    def url(self) -> str:
        return f"{self.server.url}/hooks"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.server.start()
    try:
        yield receiver
    finally:
        receiver.server.stop()
