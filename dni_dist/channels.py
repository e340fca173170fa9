"""Channels move Messages between stages. This module: the interface and the in-memory one.

    ch = InMemoryChannel()
    ch.send(msg); ch.recv()  # -> msg, or None when empty

The ZeroMQ channel (separate processes or hosts) implements the same two methods, so a
stage is driven identically whichever carries its messages.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from dni_dist.messages import Message


class Channel(Protocol):
    def send(self, msg: Message) -> None: ...

    def recv(self) -> Message | None:
        """The next message, or None when none is waiting."""
        ...


class InMemoryChannel:
    """A FIFO inside one process. Tensors are passed by reference (the stage detaches them)."""

    def __init__(self) -> None:
        self._queue: deque[Message] = deque()

    def send(self, msg: Message) -> None:
        self._queue.append(msg)

    def recv(self) -> Message | None:
        return self._queue.popleft() if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)
