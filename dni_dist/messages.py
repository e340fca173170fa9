"""Messages between stages, and their wire format (protocol v1, docs/design.md).

    frames = encode(msg, run="r1", block=0)          # [msgpack header, tensor bytes, (label bytes)]
    msg = decode(frames, run="r1", expect_block=0)  # validated, or WireError saying why

A `Message` is what the stage logic consumes and produces: an activation (h_i with labels y)
going forward, a gradient/target going back, or the output error broadcast by the last stage.
A `Marker` is a tensor-free signal that rides the same edges: `end` (no more steps after
`step`) and `done` (lockstep: every block below has finished `step`).

[Note: wire format]
Frame 0 is a msgpack map {v, kind, run, block, stage, step, dtype, shape, nbytes} plus, for
activations, labels: {dtype, shape, nbytes}. Then one raw frame per tensor, C-contiguous.
Receivers validate everything before touching a tensor: frame count, header size and
msgpack limits, version, kind, run id, sender block, step range, dtype allowlist, and
prod(shape)·itemsize == nbytes == len(frame) under a size cap. Nothing is ever unpickled.
"""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import dataclass
from typing import Any

import msgpack
import torch

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 4096
MAX_TENSOR_BYTES = 256 * 1024 * 1024  # per frame; ZMQ_MAXMSGSIZE is set to the same cap
MAX_DIMS = 4
MAX_STEP = 2**62
ALIGNMENT = 64  # bytes: received tensors start on such a boundary (copied when their frame does not)


class Kind(str, enum.Enum):
    ACTIVATION = "activation"  # h_i (and labels y) from stage i to stage i+1
    GRADIENT = "gradient"  # δ_i = ∂L/∂h_i (or its bootstrapped estimate) from stage i+1 to stage i
    OUTPUT_ERROR = "output_error"  # e = ∂L/∂ŷ, broadcast by the last stage for DFA / Kickback


class MarkerKind(str, enum.Enum):
    END = "end"  # forward: the sender will send no step after `step`
    DONE = "done"  # backward (lockstep): all blocks from the sender down finished `step`
    CHECKPOINT = "checkpoint"  # forward: save the state after `step` (a consistent cut), pass it on


@dataclass(frozen=True, order=True)
class MessageId:
    """Names one message of a run: at most one of each kind leaves a stage per step."""

    kind: str  # a Kind value
    step: int
    stage: int  # the stage that produced it

    def __str__(self) -> str:
        return f"{self.kind}@{self.stage}:{self.step}"


@dataclass(frozen=True)
class Message:
    kind: Kind
    step: int
    sender: int  # stage index
    tensor: torch.Tensor
    labels: torch.Tensor | None = None  # one-hot targets, carried with activations

    @property
    def id(self) -> MessageId:
        return MessageId(self.kind.value, self.step, self.sender)

    def describe(self) -> str:
        return f"{self.kind.value} step {self.step} from stage {self.sender} {tuple(self.tensor.shape)}"


@dataclass(frozen=True)
class Marker:
    kind: MarkerKind
    step: int
    block: int  # sender block

    def describe(self) -> str:
        return f"{self.kind.value} marker step {self.step} from block {self.block}"


DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_KINDS = {k.value: k for k in Kind} | {k.value: k for k in MarkerKind}


class WireError(ValueError):
    """A received message failed validation. `reason` is a short, stable label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _tensor_header(t: torch.Tensor) -> dict[str, Any]:
    if t.dtype not in _DTYPE_NAMES:
        raise TypeError(f"cannot send dtype {t.dtype}; allowed: {', '.join(DTYPES)}")
    return {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "nbytes": t.nbytes}


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """A zero-copy byte view of a CPU tensor (contiguous copy only if needed)."""
    if t.device.type != "cpu":
        raise ValueError(f"move {t.device} tensors to (pinned) host memory before sending")
    return t.detach().contiguous().view(-1).view(torch.uint8).numpy().data


def encode(item: Message | Marker, *, run: str, block: int) -> list[bytes | memoryview]:
    """Frames for `item`; the tensor frames are views of the tensors (do not mutate them until
    the send completes; the transport tracks large sends for that)."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "kind": item.kind.value, "run": run, "block": block}
    if isinstance(item, Marker):
        header.update(stage=-1, step=item.step)
        return [msgpack.packb(header)]
    header.update(stage=item.sender, step=item.step, **_tensor_header(item.tensor))
    frames: list[bytes | memoryview] = [b"", tensor_bytes(item.tensor)]
    if item.labels is not None:
        header["labels"] = _tensor_header(item.labels)
        frames.append(tensor_bytes(item.labels))
    frames[0] = msgpack.packb(header)
    return frames


def _int(header: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise WireError("bad_header", f"{key}={value!r} is not an integer in [{lo}, {hi}]")
    return value


# zmq frames are read-only and received tensors are never written in place; torch warns once per
# process about such buffers, so that one warning is taken here, where it is silenced
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    torch.frombuffer(bytes(4), dtype=torch.uint8)


def _tensor(spec: Any, frame: Any, what: str, max_bytes: int, align: bool) -> torch.Tensor:
    if not isinstance(spec, dict):
        raise WireError("bad_header", f"{what} description is {type(spec).__name__}, not a map")
    name = spec.get("dtype")
    dtype = DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise WireError("bad_dtype", f"{what} dtype {spec.get('dtype')!r} not in {', '.join(DTYPES)}")
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 2**31 for d in shape)
    ):
        raise WireError("bad_shape", f"{what} shape {shape!r} is not 1-{MAX_DIMS} non-negative ints")
    nbytes = spec.get("nbytes")
    itemsize = dtype.itemsize
    expected = math.prod(shape) * itemsize
    size = len(frame)
    if nbytes != expected or size != expected:
        raise WireError("bad_size", f"{what}: shape {shape} × {itemsize} B = {expected}, nbytes={nbytes}, frame={size}")
    if size > max_bytes:
        raise WireError("too_large", f"{what}: {size} bytes exceeds the cap of {max_bytes}")
    if size == 0:
        return torch.empty(shape, dtype=dtype)
    tensor = torch.frombuffer(frame, dtype=dtype).view(shape)
    # a frame's bytes may start anywhere; some CPU kernels (oneDNN convolutions among them) round
    # differently on memory that is not 64-byte aligned, so with `align` such a tensor is copied to an
    # aligned one (torch allocates aligned): a received activation then computes exactly as in one process
    return tensor if not align or tensor.data_ptr() % ALIGNMENT == 0 else tensor.clone()


def decode(
    frames: list[Any],
    *,
    run: str,
    expect_block: int | None = None,
    allowed: frozenset[str] | None = None,
    max_bytes: int = MAX_TENSOR_BYTES,
    align: bool = True,
) -> Message | Marker:
    """Validate and decode a multipart message (frames may be bytes or zmq.Frame buffers).
    Tensors are read-only views of the frames; with `align`, a frame that does not start on a
    64-byte boundary is copied instead (bit-for-bit equal arithmetic with one process, at the
    cost of one copy: lockstep runs want it, free-running ones, which timing makes irreproducible
    anyway, do not).

    Raises WireError(reason, detail) for anything malformed; never raises anything else for
    bad input, and never unpickles."""
    if not frames:
        raise WireError("bad_frames", "empty message")
    head = frames[0]
    if len(head) > MAX_HEADER_BYTES:
        raise WireError("too_large", f"header is {len(head)} bytes (cap {MAX_HEADER_BYTES})")
    try:
        header = msgpack.unpackb(
            bytes(head),
            raw=False,
            strict_map_key=True,
            max_str_len=256,
            max_bin_len=0,
            max_array_len=2 * MAX_DIMS,
            max_map_len=16,
            max_ext_len=0,
        )
    except Exception as e:  # msgpack raises many types for garbage; all mean the same here
        raise WireError("bad_msgpack", f"{type(e).__name__}: {e}") from None
    if not isinstance(header, dict):
        raise WireError("bad_header", f"header is a {type(header).__name__}, not a map")
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise WireError("bad_version", f"protocol version {version!r}, this worker speaks {PROTOCOL_VERSION}")
    kind_name = header.get("kind")
    kind = _KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None or (allowed is not None and kind.value not in allowed):
        raise WireError("bad_kind", f"kind {kind_name!r} not accepted here")
    if header.get("run") != run:
        raise WireError("wrong_run", f"run id {header.get('run')!r}, expected {run!r}")
    block = _int(header, "block", 0, 1 << 20)
    if expect_block is not None and block != expect_block:
        raise WireError("wrong_sender", f"from block {block}, expected block {expect_block}")
    step = _int(header, "step", 0, MAX_STEP)
    if isinstance(kind, MarkerKind):
        if len(frames) != 1:
            raise WireError("bad_frames", f"{kind.value} carries no tensor but has {len(frames)} frames")
        return Marker(kind, step, block)
    stage = _int(header, "stage", 0, 1 << 20)
    has_labels = "labels" in header
    if kind is Kind.ACTIVATION and not has_labels:
        raise WireError("bad_header", "activation without labels")
    want = 3 if has_labels else 2
    if len(frames) != want:
        raise WireError("bad_frames", f"{kind.value} with{'' if has_labels else 'out'} labels needs {want} frames")
    tensor = _tensor(header, frames[1], "tensor", max_bytes, align)
    labels = _tensor(header["labels"], frames[2], "labels", max_bytes, align) if has_labels else None
    if labels is not None and (labels.dim() != 2 or tensor.dim() < 1 or labels.shape[0] != tensor.shape[0]):
        raise WireError("bad_shape", f"labels {tuple(labels.shape)} do not match batch {tuple(tensor.shape)}")
    return Message(kind, step, stage, tensor, labels)
