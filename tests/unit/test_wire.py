"""Protocol v1: round trips, and every malformed message becomes a WireError with a reason."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dni_dist.messages import Kind, Marker, MarkerKind, Message, WireError, decode, encode

RUN = "run-1"


def act(step: int = 3, dtype: torch.dtype = torch.float32) -> Message:
    return Message(Kind.ACTIVATION, step, 1, torch.randn(4, 5).to(dtype), torch.eye(4)[:, :3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_roundtrip_activation(dtype: torch.dtype) -> None:
    msg = act(dtype=dtype)
    got = decode([bytes(f) for f in encode(msg, run=RUN, block=0)], run=RUN, expect_block=0)
    assert isinstance(got, Message)
    assert (got.kind, got.step, got.sender) == (msg.kind, msg.step, msg.sender)
    assert torch.equal(got.tensor, msg.tensor) and got.labels is not None and torch.equal(got.labels, msg.labels)


def test_roundtrip_gradient_non_contiguous_and_markers() -> None:
    t = torch.randn(5, 4).T  # non-contiguous
    got = decode(encode(Message(Kind.GRADIENT, 9, 2, t), run=RUN, block=1), run=RUN)
    assert isinstance(got, Message) and torch.equal(got.tensor, t) and got.labels is None
    assert decode(encode(Marker(MarkerKind.END, 7, 0), run=RUN, block=0), run=RUN) == Marker(MarkerKind.END, 7, 0)


@pytest.mark.parametrize("offset", [0, 4, 8, 36])
def test_received_tensors_start_on_a_64_byte_boundary(offset: int) -> None:
    """A frame's bytes may start anywhere (offset into a receive buffer); a misaligned tensor
    would make some CPU kernels round differently than on the sender's side, so decode copies
    it to an aligned one. Aligned frames stay zero-copy."""
    t = torch.randn(8, 16)
    header, body = encode(Message(Kind.GRADIENT, 3, 1, t), run=RUN, block=1)
    storage = torch.zeros(len(body) + 128, dtype=torch.uint8)
    start = (-storage.data_ptr()) % 64 + offset  # `offset` bytes past a 64-byte boundary
    storage[start : start + len(body)] = torch.frombuffer(bytearray(bytes(body)), dtype=torch.uint8)
    frame = storage.numpy().data[start : start + len(body)]
    got = decode([header, frame], run=RUN)
    assert isinstance(got, Message) and torch.equal(got.tensor, t)
    assert got.tensor.data_ptr() % 64 == 0
    assert (got.tensor.data_ptr() == storage.data_ptr() + start) == (offset == 0)  # copied only when needed
    view = decode([header, frame], run=RUN, align=False)  # free-running blocks: never a copy
    assert isinstance(view, Message) and torch.equal(view.tensor, t)
    assert view.tensor.data_ptr() == storage.data_ptr() + start


def header_of(msg: Message) -> dict:  # type: ignore[type-arg]
    return msgpack.unpackb(encode(msg, run=RUN, block=0)[0])  # type: ignore[no-any-return]


def frames_with(msg: Message, **changes: object) -> list[bytes]:
    frames = [bytes(f) for f in encode(msg, run=RUN, block=0)]
    header = header_of(msg)
    header.update(changes)
    return [msgpack.packb(header), *frames[1:]]


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "bad_frames"),
        ([b"\xc1garbage"], "bad_msgpack"),
        ([msgpack.packb([1, 2])], "bad_header"),
        (frames_with(act(), v=2), "bad_version"),
        (frames_with(act(), kind="pickle"), "bad_kind"),
        (frames_with(act(), run="other"), "wrong_run"),
        (frames_with(act(), block=5), "wrong_sender"),
        (frames_with(act(), step=-1), "bad_header"),
        (frames_with(act(), step="3"), "bad_header"),
        (frames_with(act(), dtype="int64"), "bad_dtype"),
        (frames_with(act(), dtype="object"), "bad_dtype"),
        (frames_with(act(), shape=[4, 6]), "bad_size"),
        (frames_with(act(), shape=[1, 1, 1, 1, 20]), "bad_shape"),
        (frames_with(act(), nbytes=1), "bad_size"),
        (frames_with(act())[:2], "bad_frames"),
        ([msgpack.packb({"v": 1, "kind": "activation"}) + b"x" * 5000], "too_large"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(frames: list[bytes], reason: str) -> None:
    with pytest.raises(WireError) as info:
        decode(frames, run=RUN, expect_block=0)
    assert info.value.reason == reason


def test_size_cap() -> None:
    with pytest.raises(WireError, match="too_large"):
        decode(encode(act(), run=RUN, block=0), run=RUN, max_bytes=16)


frame = st.binary(max_size=64)
header_values = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=8),
    st.none(),
    st.booleans(),
    st.lists(st.integers(-3, 10), max_size=6),
    st.floats(allow_nan=True),
)
headers = st.dictionaries(
    st.sampled_from(["v", "kind", "run", "block", "stage", "step", "dtype", "shape", "nbytes", "labels"]),
    header_values,
    max_size=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.lists(frame, max_size=4),
        st.tuples(headers.map(msgpack.packb), st.lists(frame, max_size=3)).map(lambda t: [t[0], *t[1]]),
    )
)
def test_decoder_never_raises_anything_but_wire_error(frames: list[bytes]) -> None:
    with contextlib.suppress(WireError):
        decode(frames, run=RUN)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["v", "kind", "run", "block", "stage", "step", "dtype", "shape", "nbytes", "labels"]),
    header_values,
    st.integers(-1, 2),
)
def test_one_corrupted_field_of_a_valid_message_is_caught_or_harmless(key: str, value: object, extra: int) -> None:
    msg = act()
    frames = frames_with(msg, **{key: value})
    if extra > 0:
        frames = [*frames, b"x" * extra]
    elif extra < 0:
        frames = frames[:-1]
    try:
        got = decode(frames, run=RUN, expect_block=0)
    except WireError:
        return
    # accepted: then it must be self-consistent (a tensor matching its declared shape)
    assert isinstance(got, Message) and got.labels is not None
    assert got.tensor.numel() * got.tensor.element_size() == len(frames[1])
