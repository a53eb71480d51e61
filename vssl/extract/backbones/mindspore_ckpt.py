"""Read MindSpore ``.ckpt`` files without MindSpore.

MindSpore releases (SCMA is one; no test loads its files) save parameters as a stream of protobuf ``Checkpoint``
messages (proto2)::

    message Checkpoint { message Value { required string tag = 1;
                                         required TensorProto tensor = 2; }
                         repeated Value value = 1; }
    message TensorProto { repeated int64 dims = 1; required string tensor_type = 2;
                          required bytes tensor_content = 3; }

Concatenated messages parse as one with the repeated field merged, so a single pass over
the wire format suffices. Tensors larger than MindSpore's slice size are written as
several ``Value`` entries with the same tag whose contents concatenate; scalars carry
``dims: [0]``; ``dims`` may be packed or unpacked; newer versions append a short
``crc_num`` trailer (at most 17 bytes), which is ignored. Names are MindSpore's
(``gamma``/``beta`` for LayerNorm, ``moving_mean``/``moving_variance`` for BatchNorm);
:func:`mindspore_to_torch_names` maps them and drops optimizer state.
"""

from __future__ import annotations

import mmap
import re
from pathlib import Path

import numpy as np
import torch

from vssl.errors import CheckpointError

from .checkpoints import StateDict, drop_keys, rename_keys

CRC_TRAILER_MAX = 17

_DTYPES: dict[str, np.dtype] = {
    "Float16": np.dtype("<f2"), "Float32": np.dtype("<f4"), "Float64": np.dtype("<f8"),
    "Int8": np.dtype("i1"), "Int16": np.dtype("<i2"), "Int32": np.dtype("<i4"), "Int64": np.dtype("<i8"),
    "UInt8": np.dtype("u1"), "UInt16": np.dtype("<u2"), "UInt32": np.dtype("<u4"), "UInt64": np.dtype("<u8"),
    "Bool": np.dtype("?"), "BFloat16": np.dtype("<u2"),
}


class _Truncated(Exception):
    pass


def _varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Truncated
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: memoryview, start: int, end: int):
    """Yield (field number, wire type, value, next position); value is int or (start, stop)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Truncated
            value, pos = (pos, pos + length), pos + length
        elif wire == 1:
            if pos + 8 > end:
                raise _Truncated
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            if pos + 4 > end:
                raise _Truncated
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value, pos


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_tensor(buf: memoryview, start: int, end: int) -> tuple[list[int], str, bytes]:
    dims: list[int] = []
    dtype, content = "", b""
    for number, wire, value, _ in _fields(buf, start, end):
        if number == 1 and wire == 0:
            dims.append(_signed64(value))
        elif number == 1 and wire == 2:  # packed
            pos, stop = value
            while pos < stop:
                dim, pos = _varint(buf, pos, stop)
                dims.append(_signed64(dim))
        elif number == 2 and wire == 2:
            dtype = bytes(buf[value[0]:value[1]]).decode()
        elif number == 3 and wire == 2:
            content = bytes(buf[value[0]:value[1]])
    return dims, dtype, content


def read_mindspore_checkpoint(path: str | Path) -> StateDict:
    """All tensors of a MindSpore ``.ckpt`` by tag, as torch tensors (names unchanged)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read {path}: the file is empty; download it again")
    with open(path, "rb") as fh:  # memory-mapped: only the tensors themselves are copied
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mapped)
    try:
        return _read(path, view)
    finally:
        view.release()
        mapped.close()


def _read(path: Path, data: memoryview) -> StateDict:
    parts: dict[str, list[bytes]] = {}
    meta: dict[str, tuple[list[int], str]] = {}
    pos, end = 0, len(data)
    try:
        while pos < end:
            try:
                number, wire, value, next_pos = next(_fields(data, pos, end))
            except (_Truncated, ValueError):
                if end - pos <= CRC_TRAILER_MAX and parts:
                    break  # the crc_num trailer of newer MindSpore versions
                raise
            pos = next_pos
            if number != 1 or wire != 2:
                continue  # crc_num or another top-level field we do not need
            tag, tensor = "", None
            for vnum, vwire, vval, _ in _fields(data, *value):
                if vnum == 1 and vwire == 2:
                    tag = bytes(data[vval[0]:vval[1]]).decode()
                elif vnum == 2 and vwire == 2:
                    tensor = _parse_tensor(data, *vval)
            if tensor is None:
                continue
            dims, dtype, content = tensor
            parts.setdefault(tag, []).append(content)
            meta.setdefault(tag, (dims, dtype))
    except _Truncated:
        raise CheckpointError(f"cannot read {path}: MindSpore checkpoint is truncated at byte {pos} of {end};"
                              " download it again") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: not a MindSpore checkpoint ({exc})") from None
    if not parts:
        raise CheckpointError(f"cannot read {path}: no tensors found (empty or not a MindSpore checkpoint)")
    return {tag: _to_tensor(path, tag, *meta[tag], b"".join(chunks)) for tag, chunks in parts.items()}


def _to_tensor(path: Path, tag: str, dims: list[int], dtype: str, content: bytes) -> torch.Tensor:
    if dtype not in _DTYPES:
        # Strings and other non-numeric entries carry no weights.
        return torch.empty(0)
    np_dtype = _DTYPES[dtype]
    array = np.frombuffer(content, dtype=np_dtype).copy()
    shape = [] if dims in ([], [0]) else dims
    expected = int(np.prod(shape)) if shape else 1
    if array.size != expected:
        raise CheckpointError(f"cannot read {path}: tensor {tag!r} has {array.size} values for shape {shape}"
                              " (truncated file?)")
    tensor = torch.from_numpy(array.reshape(shape))
    if dtype == "BFloat16":
        tensor = tensor.view(torch.bfloat16)
    return tensor


# Optimizer/training state that MindSpore stores next to the weights.
OPTIMIZER_PATTERNS = (r"adam_[mv]\.", r"moment[s12]?\.", r"accum\.", r"global_step$", r"learning_rate",
                      r"beta[12]_power$", r"scale_sense$", r"current_iterator_step$",
                      r"last_overflow_iterator_step$", r"epoch_num$", r"step_num$", r"loss_scale")


def mindspore_to_torch_names(sd: StateDict) -> StateDict:
    """Rename MindSpore norm parameters to torch's and drop optimizer and empty entries."""
    sd = {k: v for k, v in sd.items() if v.numel() > 0}
    sd = drop_keys(sd, OPTIMIZER_PATTERNS)
    return rename_keys(sd, [(r"\.gamma$", ".weight"), (r"\.beta$", ".bias"),
                            (r"\.moving_mean$", ".running_mean"), (r"\.moving_variance$", ".running_var"),
                            (r"^(network\.|_backbone\.|backbone\.)", "")])


def is_mindspore_layout(keys: set[str]) -> bool:
    """True when norm parameters use MindSpore's names."""
    return any(re.search(r"\.(gamma|beta|moving_mean|moving_variance)$", k) for k in keys)
