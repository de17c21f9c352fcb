"""Read the weights and activation scales out of a quantised (QDQ) ONNX graph, to rebuild it in torch.

A QDQ graph stores each weight as an integer initializer behind a ``DequantizeLinear`` node
(w = (q − zero_point) · scale, per output channel along ``axis``) and brackets every activation with
``QuantizeLinear`` → ``DequantizeLinear``. :class:`QDQGraph` answers, by the graph's own node names,
the float weight and bias of a convolution and the (scale, zero_point) an activation is quantised
with. Only the ``onnx`` package's protobuf reader runs: a model file is data, never code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class ActivationQuant:
    """How the graph quantises one activation: q = clamp(round(x / scale) + zero_point, qmin, qmax)."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int


class QDQGraph:
    """A loaded ONNX graph with its quantised initializers resolved to float tensors."""

    def __init__(self, path: Path) -> None:
        import onnx
        from onnx import numpy_helper

        self.path = Path(path)
        model = onnx.load(str(self.path), load_external_data=False)
        graph = model.graph
        self._initializers = {item.name: numpy_helper.to_array(item) for item in graph.initializer}
        self._producer = {output: node for node in graph.node for output in node.output}
        self._consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self._consumers.setdefault(name, []).append(node)
        self._nodes = {node.name: node for node in graph.node}
        self.inputs = [item.name for item in graph.input if item.name not in self._initializers]
        self.outputs = [item.name for item in graph.output]

    # -- weights -----------------------------------------------------------------------------

    def constant(self, tensor: str) -> np.ndarray:
        """The float value of a constant tensor: a float initializer, or one behind DequantizeLinear."""
        if tensor in self._initializers:
            return self._initializers[tensor].astype(np.float32)
        node = self._producer.get(tensor)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in self._initializers:
            raise KeyError(f"{self.path.name}: {tensor!r} is not a constant (produced by "
                           f"{node.op_type if node is not None else 'nothing'})")
        values = self._initializers[node.input[0]].astype(np.float64)
        scale = self._initializers[node.input[1]].astype(np.float64)
        zero = (self._initializers[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2]
                else np.zeros_like(scale))
        if scale.size > 1:  # per-channel along the node's axis (default 1, ONNX's convention)
            axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 1)
            shape = [1] * values.ndim
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((values - zero) * scale).astype(np.float32)

    def conv(self, node_name: str) -> tuple[Tensor, Tensor]:
        """(weight, bias) of the Conv node ``node_name`` as float tensors (bias zeros when the node has none)."""
        node = self._nodes.get(node_name)
        if node is None or node.op_type != "Conv":
            raise KeyError(f"{self.path.name} has no Conv node named {node_name!r}")
        weight = torch.from_numpy(self.constant(node.input[1]))
        if len(node.input) > 2 and node.input[2]:
            bias = torch.from_numpy(self.constant(node.input[2]))
        else:
            bias = torch.zeros(weight.shape[0])
        return weight, bias

    def conv_names(self) -> list[str]:
        return [name for name, node in self._nodes.items() if node.op_type == "Conv"]

    # -- activations -------------------------------------------------------------------------

    def quantization(self, tensor: str) -> ActivationQuant | None:
        """How ``tensor`` (a node output or a graph input) is quantised, or None when it is not."""
        for node in self._consumers.get(tensor, []):
            if node.op_type == "QuantizeLinear":
                scale = float(self._initializers[node.input[1]])
                zero = self._initializers[node.input[2]] if len(node.input) > 2 and node.input[2] else np.uint8(0)
                info = np.iinfo(zero.dtype)
                return ActivationQuant(scale, int(zero), int(info.min), int(info.max))
        return None

    def output_of(self, node_name: str) -> str:
        node = self._nodes.get(node_name)
        if node is None:
            raise KeyError(f"{self.path.name} has no node named {node_name!r}")
        return node.output[0]

    def after(self, node_name: str, op_type: str) -> str:
        """The output of the ``op_type`` node that reads ``node_name``'s output (through Q/DQ pairs)."""
        frontier = [self.output_of(node_name)]
        for _ in range(4):  # at most a Q → DQ pair between two real nodes
            following = []
            for tensor in frontier:
                for node in self._consumers.get(tensor, []):
                    if node.op_type == op_type:
                        return node.output[0]
                    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                        following.extend(node.output)
            frontier = following
        raise KeyError(f"{self.path.name}: no {op_type} reads the output of {node_name!r}")
