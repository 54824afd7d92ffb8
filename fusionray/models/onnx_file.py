"""Read single parts of an ONNX file without parsing the whole graph.

An ONNX file is one protobuf `ModelProto` whose `graph` field holds every node and every weight
(554 MB for inswapper_128). `onnx.load` parses all of it into Python objects (seconds, and the
whole file's size again in memory) although a swap actor needs one 1 MiB tensor from it (the
emap, the graph's LAST initializer) and the session reads the file itself anyway. This module
walks the protobuf wire format over a memory map instead: each field's tag and length are read
and its payload is skipped, so only the few pages holding field headers and the wanted payload
are touched, and only that payload is parsed (by onnx's own message classes).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

import onnx

from fusionray.errors import ModelError

_MODEL_GRAPH = 7
"""`ModelProto.graph` field number."""
_GRAPH_INITIALIZER = 5
_GRAPH_INPUT = 11
_GRAPH_OUTPUT = 12

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _varint(buffer: mmap.mmap | bytes, offset: int, end: int) -> tuple[int, int]:
    """Decode a protobuf varint at `offset`; returns (value, offset after it)."""
    value = 0
    shift = 0
    while True:
        if offset >= end:
            raise ValueError("truncated varint")
        byte = buffer[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buffer: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, payload start, payload end) of each length-delimited field in
    `buffer[start:end]`; other wire types are skipped."""
    offset = start
    while offset < end:
        tag, offset = _varint(buffer, offset, end)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            _, offset = _varint(buffer, offset, end)
        elif wire == _FIXED64:
            offset += 8
        elif wire == _FIXED32:
            offset += 4
        elif wire == _LENGTH:
            length, offset = _varint(buffer, offset, end)
            if offset + length > end:
                raise ValueError(f"field {number} runs past the end of its message")
            yield number, offset, offset + length
            offset += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {number})")
    if offset != end:
        raise ValueError("message ends inside a field")


class OnnxFileParts:
    """The graph-level parts of one ONNX file that the engines need, read in one pass.

    Attributes are parsed protobuf messages (`onnx.TensorProto`, `onnx.ValueInfoProto`).
    """

    def __init__(self, path: Path) -> None:
        """Map the file and read the graph's field layout (not its payloads).

        Raises:
            ModelError: the file cannot be read or is not a well-formed ONNX model.
        """
        self.path = Path(path)
        try:
            with self.path.open("rb") as handle:
                size = self.path.stat().st_size
                if size == 0:
                    raise ValueError("empty file")
                with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                    self._scan(view, size)
        except (OSError, ValueError) as error:
            raise ModelError(f"Cannot read {self.path} as ONNX: {error}") from error

    def _scan(self, view: mmap.mmap, size: int) -> None:
        graphs = [(s, e) for number, s, e in _fields(view, 0, size) if number == _MODEL_GRAPH]
        if not graphs:
            raise ValueError("no graph in the model")
        last_initializer: tuple[int, int] | None = None
        inputs: list[bytes] = []
        outputs: list[bytes] = []
        initializer_count = 0
        # Protobuf merges repeated occurrences of a message field; exporters write one graph.
        for graph_start, graph_end in graphs:
            for number, start, end in _fields(view, graph_start, graph_end):
                if number == _GRAPH_INITIALIZER:
                    last_initializer = (start, end)
                    initializer_count += 1
                elif number == _GRAPH_INPUT:
                    inputs.append(view[start:end])
                elif number == _GRAPH_OUTPUT:
                    outputs.append(view[start:end])
        self.initializer_count = initializer_count
        """How many initializers the graph has."""
        self.last_initializer: onnx.TensorProto | None = None
        """The graph's last initializer, or None when it has none."""
        if last_initializer is not None:
            self.last_initializer = onnx.TensorProto.FromString(
                view[last_initializer[0]:last_initializer[1]])
        self.inputs = [onnx.ValueInfoProto.FromString(data) for data in inputs]
        """Graph inputs in order (initializers listed as inputs by old exporters included)."""
        self.outputs = [onnx.ValueInfoProto.FromString(data) for data in outputs]
        """Graph outputs in order."""


def batch_dimension(value: onnx.ValueInfoProto) -> int | str | None:
    """The first dimension of a tensor value: an int, a symbolic name, or None (unknown/rank 0)."""
    dims = value.type.tensor_type.shape.dim
    if not dims:
        return None
    first = dims[0]
    if first.HasField("dim_value"):
        return int(first.dim_value)
    if first.HasField("dim_param"):
        return str(first.dim_param)
    return None
