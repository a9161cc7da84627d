"""Expose a transformer's intermediate token states as extra outputs of its ONNX graph.

ONNX Runtime returns only a graph's declared outputs. To read the token states of
an inner layer from the same forward pass that makes the sentence embedding, the
layer's tensor is declared as one more output of the graph, in memory: the file
on disk (and so its SHA-256, which routers pin) is untouched, and every node is
the same, so the sentence embedding is the same computation.

An ONNX file is a protobuf ``ModelProto``; this module reads and appends to it
with the protobuf wire format directly (``ModelProto.graph`` is field 7,
``GraphProto.node`` field 1, ``GraphProto.output`` field 12, ``NodeProto.output``
field 2), so scoring needs no ``onnx`` package.
"""

from __future__ import annotations

import re
from typing import Iterator

from shared_core.errors import EmbeddingError

__all__ = ["layer_output_names", "with_float_outputs"]

_MODEL_GRAPH, _GRAPH_NODE, _GRAPH_OUTPUT, _NODE_OUTPUT = 7, 1, 12, 2
_LENGTH_DELIMITED = 2
_FLOAT = 1  # TensorProto.FLOAT
#: The output of a BERT-style encoder layer (its last LayerNorm), as torch.onnx names it.
_LAYER_OUTPUT = re.compile(r"/encoder/layer\.(\d+)/output/LayerNorm/LayerNormalization_output_0$")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise EmbeddingError("the ONNX file ends inside a protobuf varint: it is truncated or not an ONNX model")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """``(field, wire type, start of the field, start of its value, end)`` of each top-level field of a message."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, end = _varint(data, pos)
            value = pos
        elif wire == 1:
            value, end = pos, pos + 8
        elif wire == _LENGTH_DELIMITED:
            length, value = _varint(data, pos)
            end = value + length
        elif wire == 5:
            value, end = pos, pos + 4
        else:
            raise EmbeddingError(f"unsupported protobuf wire type {wire} at byte {start}: not an ONNX model")
        if end > len(data):
            raise EmbeddingError(f"a protobuf field at byte {start} runs past the end: the ONNX file is truncated")
        yield field, wire, start, value, end
        pos = end


def _delimited(field: int, payload: bytes) -> bytes:
    return _encode_varint(field << 3 | _LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload


def _graph_span(model: bytes) -> tuple[int, int, int]:
    """``(start of the graph field, start of the graph message, end)`` in a serialised ModelProto."""
    spans = [(s, v, e) for f, w, s, v, e in _fields(model) if f == _MODEL_GRAPH and w == _LENGTH_DELIMITED]
    if len(spans) != 1:
        raise EmbeddingError(f"expected one graph in the ONNX model, found {len(spans)}")
    return spans[0]


def layer_output_names(model: bytes) -> dict[int, str]:
    """The tensor after each encoder layer, by layer number (1 = the first layer's output)."""
    _, start, end = _graph_span(model)
    graph = model[start:end]
    names: dict[int, str] = {}
    for field, wire, _, value, stop in _fields(graph):
        if field != _GRAPH_NODE or wire != _LENGTH_DELIMITED:
            continue
        node = graph[value:stop]
        for f, w, _, v, e in _fields(node):
            if f == _NODE_OUTPUT and w == _LENGTH_DELIMITED:
                match = _LAYER_OUTPUT.search(node[v:e].decode("utf-8", "replace"))
                if match:
                    names[int(match[1]) + 1] = node[v:e].decode("utf-8")
    return names


def with_float_outputs(model: bytes, names: list[str]) -> bytes:
    """``model`` with the float tensors ``names`` declared as extra graph outputs (after the existing ones)."""
    start, value, end = _graph_span(model)
    graph = model[value:end]
    for name in names:
        # TypeProto.Tensor: elem_type FLOAT and a shape of three named (dynamic) dimensions
        shape = b"".join(_delimited(1, _delimited(2, dim.encode())) for dim in ("batch", "sequence", "hidden"))
        tensor = _encode_varint(1 << 3) + _encode_varint(_FLOAT) + _delimited(2, shape)
        info = _delimited(1, name.encode("utf-8")) + _delimited(2, _delimited(1, tensor))  # ValueInfoProto
        graph += _delimited(_GRAPH_OUTPUT, info)
    return model[:start] + _delimited(_MODEL_GRAPH, graph) + model[end:]
