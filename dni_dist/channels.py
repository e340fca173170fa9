"""The in-memory channel between the stages of one block (one process).

    ch = InMemoryChannel()
    ch.send(msg); ch.recv()  # -> msg, or None when empty

Between blocks, the worker's ZeroMQ edges (dni_dist/worker/edges.py) carry the same Messages;
the stages never see which one carried theirs.
"""

from __future__ import annotations

from collections import deque

from dni_dist.messages import Message


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
