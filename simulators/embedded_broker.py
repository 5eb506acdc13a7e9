"""An embedded MQTT broker (amqtt, pure Python) for the demo: no server to install or configure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from typing import Any

__all__ = ["BrokerNotInstalledError", "EmbeddedBroker", "free_port", "require_amqtt"]


class BrokerNotInstalledError(RuntimeError):
    """amqtt, the embedded broker, is an optional extra (`citygw[demo]`) and is not installed here."""


def require_amqtt() -> None:
    """Raise BrokerNotInstalledError, saying how to install it, unless amqtt can be imported."""
    try:
        import amqtt  # noqa: F401
    except ImportError as exc:
        # A kit never runs the demo, so amqtt is not in the base install (pyproject.toml: the `demo` extra).
        raise BrokerNotInstalledError(
            f"the embedded MQTT broker needs amqtt, which is not installed ({exc}). Install the demo extra: "
            "pip install 'citygw[demo]' (in a checkout, bash scripts/dev.sh demo installs it and runs the demo)"
        ) from None


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """amqtt on 127.0.0.1:<port>, running its own event loop in a thread (MQTT 3.1.1, anonymous, loopback)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-broker", daemon=True)
        self._broker: Any = None

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it listens (BrokerNotInstalledError without the `demo` extra)."""
        require_amqtt()
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._thread.start()

        async def _start() -> Any:
            broker = Broker(config)
            await broker.start()
            return broker

        self._broker = asyncio.run_coroutine_threadsafe(_start(), self._loop).result(timeout=15)
        return self

    def stop(self) -> None:
        """Shut the broker down and stop its loop."""
        if self._broker is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
