"""The Keras network for one cell: operators as layers, cells stacked into motifs, and the head.

The macro-architecture follows POPNASv3. The network stacks motifs of normal cells, and each motif
but the last ends with a reduction cell. A reduction cell applies its operators to lookback inputs
with stride 2 and doubles the filters. Every convolution is conv, batch norm and swish, with 'same'
padding and he_uniform initialization. The model is built from ``keras`` layers only, so it is
portable across Keras backends. Training and measurement live in ``popnas.train.proxy``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import keras

from popnas.space import Cell, Operator, OperatorKind, connected_cells, parse_operator, reduction_flags
from popnas.spec.model import ArchitectureSpec, AugmentationSpec, Task

KERNEL_INITIALIZER = "he_uniform"
ACTIVATION = "swish"


def build_model(
    cell: Cell,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    task: Task,
    architecture: ArchitectureSpec,
    augmentation: AugmentationSpec | None = None,
    batch_norm_momentum: float = 0.99,
) -> keras.Model:
    """Build the uncompiled network that stacks ``cell``, with a softmax head of ``classes`` units.

    ``input_shape`` is one sample's shape: (height, width, channels) for images or (length,
    channels) for series. ``augmentation`` adds random shift and flip layers for images, active
    only in training, and is ignored for series. Cells with no path to the output are not built,
    and the empty cell gives input, global average pooling and the dense head.
    ``batch_norm_momentum`` is the momentum of every batch norm's moving statistics (Keras'
    default is 0.99). Short training needs a lower one, or inference uses stale statistics.

    Raises OperatorError when an operator string is invalid for the task, and ValueError for an
    input shape of the wrong rank or fewer than 2 classes.
    """
    dims = task.dims
    if len(input_shape) != dims + 1:
        expected = "(height, width, channels)" if dims == 2 else "(length, channels)"
        raise ValueError(f"{task.value} expects input_shape {expected}, received input_shape={input_shape}")
    if classes < 2:
        raise ValueError(f"expected at least 2 classes, received classes={classes}")
    if not 0 <= batch_norm_momentum < 1:
        raise ValueError(f"batch_norm_momentum must be in [0, 1), received batch_norm_momentum={batch_norm_momentum}")
    operators = {text: parse_operator(text, dims=dims) for block in cell.blocks for _, text in block.operands}
    builder = _NetworkBuilder(
        cell, operators, dims=dims, architecture=architecture, batch_norm_momentum=batch_norm_momentum
    )
    return builder.build(input_shape=input_shape, classes=classes, augmentation=augmentation if dims == 2 else None)


def _halve(spatial: Sequence[int]) -> tuple[int, ...]:
    """Spatial size after a stride-2 layer with 'same' padding: ceil(size / 2) per axis."""
    return tuple(math.ceil(size / 2) for size in spatial)


def _spatial(tensor: Any) -> tuple[int, ...]:
    return tuple(int(size) for size in tensor.shape[1:-1])


def _channels(tensor: Any) -> int:
    return int(tensor.shape[-1])


class _LayerNames:
    """Unique, readable layer names such as ``cell2_block0_in1_conv`` and ``cell2_block0_in1_conv_2``."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def __call__(self, scope: str, kind: str) -> str:
        base = f"{scope}_{kind}"
        self._counts[base] += 1
        count = self._counts[base]
        return base if count == 1 else f"{base}_{count}"


class _NetworkBuilder:
    """Builder of one network, with the layer classes for its dimensions and a layer-name counter."""

    def __init__(
        self,
        cell: Cell,
        operators: dict[str, Operator],
        *,
        dims: int,
        architecture: ArchitectureSpec,
        batch_norm_momentum: float,
    ) -> None:
        self.cell = cell
        self.batch_norm_momentum = batch_norm_momentum
        self.operators = operators
        self.dims = dims
        self.architecture = architecture
        self.names = _LayerNames()
        layers = keras.layers
        self.conv_class = layers.Conv2D if dims == 2 else layers.Conv1D
        self.separable_class = layers.SeparableConv2D if dims == 2 else layers.SeparableConv1D
        self.transpose_class = layers.Conv2DTranspose if dims == 2 else layers.Conv1DTranspose
        self.max_pool_class = layers.MaxPooling2D if dims == 2 else layers.MaxPooling1D
        self.avg_pool_class = layers.AveragePooling2D if dims == 2 else layers.AveragePooling1D
        self.global_pool_class = layers.GlobalAveragePooling2D if dims == 2 else layers.GlobalAveragePooling1D

    def build(
        self, *, input_shape: tuple[int, ...], classes: int, augmentation: AugmentationSpec | None
    ) -> keras.Model:
        inputs = keras.Input(shape=input_shape, name="input")
        network_input = self._augment(inputs, augmentation) if augmentation is not None else inputs

        flags = reduction_flags(
            motifs=self.architecture.motifs, normal_cells_per_motif=self.architecture.normal_cells_per_motif
        )
        # Nominal shapes per cell index: each cell's input spatial size and its filters.
        input_spatial: list[tuple[int, ...]] = []
        filters: list[int] = []
        spatial = tuple(input_shape[:-1])
        cell_filters = self.architecture.filters
        for reduction in flags:
            input_spatial.append(spatial)
            if reduction:
                spatial = _halve(spatial)
                cell_filters *= 2
            filters.append(cell_filters)

        outputs: dict[int, Any] = {}
        for index in connected_cells(self.cell, total=len(flags)):
            lookbacks = {
                lookback: outputs[index + lookback] if index + lookback >= 0 else network_input
                for lookback in self.cell.lookbacks
            }
            outputs[index] = self._cell(
                index,
                lookbacks,
                reduction=flags[index],
                input_spatial=input_spatial[index],
                filters=filters[index],
            )
        features = outputs[max(outputs)] if outputs else network_input

        pooled = self.global_pool_class(name="head_pool")(features)
        probabilities = keras.layers.Dense(classes, activation="softmax", name="head_dense")(pooled)
        return keras.Model(inputs, probabilities, name=f"popnas_cell_{self.cell.key}")

    def _augment(self, tensor: Any, augmentation: AugmentationSpec) -> Any:
        if augmentation.shift > 0:
            tensor = keras.layers.RandomTranslation(augmentation.shift, augmentation.shift, name="augment_shift")(
                tensor
            )
        if augmentation.horizontal_flip:
            tensor = keras.layers.RandomFlip("horizontal", name="augment_flip")(tensor)
        return tensor

    def _cell(
        self,
        index: int,
        lookbacks: dict[int, Any],
        *,
        reduction: bool,
        input_spatial: tuple[int, ...],
        filters: int,
    ) -> Any:
        output_spatial = _halve(input_spatial) if reduction else input_spatial
        # A lookback from before an earlier reduction cell is larger than this cell's input:
        # max-pool it once per cell, shared by every operator that reads it.
        resized: dict[int, Any] = {}
        blocks: list[Any] = []
        for position, block in enumerate(self.cell.blocks):
            branches = []
            for side, (source, text) in enumerate(block.operands, start=1):
                scope = f"cell{index}_block{position}_in{side}"
                if source < 0:
                    if source not in resized:
                        resized[source] = self._resize(
                            lookbacks[source], input_spatial, scope=f"cell{index}_lookback{-source}"
                        )
                    tensor, stride = resized[source], 2 if reduction else 1
                else:
                    tensor, stride = blocks[source], 1
                branches.append(
                    self._operator(tensor, self.operators[text], filters=filters, stride=stride, scope=scope)
                )
            blocks.append(keras.layers.Add(name=self.names(f"cell{index}_block{position}", "add"))(branches))

        unused = self.cell.unused_blocks
        if len(unused) == 1:
            output = blocks[unused[0]]
        else:
            joined = keras.layers.Concatenate(name=self.names(f"cell{index}", "concat"))([blocks[i] for i in unused])
            output = self._conv_unit(joined, filters=filters, kernel=1, scope=f"cell{index}_output")

        if self.architecture.residual_cells:
            nearest = max(self.cell.lookbacks)
            shortcut = self._adapt(lookbacks[nearest], output_spatial, filters, scope=f"cell{index}_residual")
            output = keras.layers.Add(name=self.names(f"cell{index}", "residual_add"))([output, shortcut])
        return output

    def _operator(self, tensor: Any, operator: Operator, *, filters: int, stride: int, scope: str) -> Any:
        """Apply ``operator`` so that the result has ``filters`` channels and the spatial size divided by ``stride``."""
        kind = operator.kind
        target_spatial = _halve(_spatial(tensor)) if stride == 2 else _spatial(tensor)

        if kind is OperatorKind.IDENTITY:
            return self._adapt(tensor, target_spatial, filters, scope=scope)

        if kind in (OperatorKind.CONV, OperatorKind.DEPTHWISE_CONV):
            layer = "separable" if kind is OperatorKind.DEPTHWISE_CONV else "conv"
            if operator.dilation > 1 and stride > 1:
                # Keras rejects a stride above 1 together with a dilation above 1: convolve at
                # stride 1, then max-pool by 2.
                tensor = self._conv_unit(
                    tensor,
                    filters=filters,
                    kernel=operator.kernel,
                    dilation=operator.dilation,
                    layer=layer,
                    scope=scope,
                )
                return self._max_pool(tensor, scope=scope)
            return self._conv_unit(
                tensor,
                filters=filters,
                kernel=operator.kernel,
                strides=stride,
                dilation=operator.dilation,
                layer=layer,
                scope=scope,
            )

        if kind is OperatorKind.SPATIAL_CONV:
            first, second = operator.kernel
            tensor = self._conv_unit(tensor, filters=filters, kernel=(first, second), strides=stride, scope=scope)
            return self._conv_unit(tensor, filters=filters, kernel=(second, first), scope=scope)

        if kind is OperatorKind.TRANSPOSE_CONV:
            # Upsampling by 2 and convolving with stride 2 * stride gives ceil(size / stride) per axis.
            tensor = self._conv_unit(
                tensor, filters=filters, kernel=operator.kernel, strides=2, layer="transpose", scope=scope
            )
            return self._conv_unit(tensor, filters=filters, kernel=operator.kernel, strides=2 * stride, scope=scope)

        if kind in (OperatorKind.MAX_POOL, OperatorKind.AVG_POOL):
            pool_class = self.max_pool_class if kind is OperatorKind.MAX_POOL else self.avg_pool_class
            tensor = pool_class(
                pool_size=operator.kernel,
                strides=stride,
                padding="same",
                name=self.names(scope, kind.value),
            )(tensor)
            return self._adapt(tensor, target_spatial, filters, scope=scope)

        if kind in (OperatorKind.LSTM, OperatorKind.GRU):
            recurrent_class = keras.layers.LSTM if kind is OperatorKind.LSTM else keras.layers.GRU
            tensor = recurrent_class(filters, return_sequences=True, name=self.names(scope, kind.value))(tensor)
            tensor = self._batch_norm(tensor, scope=scope)
            # Recurrent layers have no stride, so a reduction max-pools their output by 2.
            return self._max_pool(tensor, scope=scope) if stride > 1 else tensor

        raise ValueError(f"operator {operator.text!r} of kind {kind.value!r} has no Keras implementation")

    def _conv_unit(
        self,
        tensor: Any,
        *,
        filters: int,
        kernel: int | Sequence[int],
        scope: str,
        strides: int = 1,
        dilation: int = 1,
        layer: str = "conv",
    ) -> Any:
        """Apply a convolution ('conv', 'separable' or 'transpose'), batch norm and swish."""
        options: dict[str, Any] = {
            "filters": filters,
            "kernel_size": kernel,
            "strides": strides,
            "padding": "same",
            "use_bias": False,  # the batch norm that follows has its own offset
        }
        if layer == "separable":
            options |= {
                "dilation_rate": dilation,
                "depthwise_initializer": KERNEL_INITIALIZER,
                "pointwise_initializer": KERNEL_INITIALIZER,
            }
            convolution = self.separable_class(**options, name=self.names(scope, "dconv"))
        elif layer == "transpose":
            options |= {"kernel_initializer": KERNEL_INITIALIZER}
            convolution = self.transpose_class(**options, name=self.names(scope, "tconv"))
        else:
            options |= {"dilation_rate": dilation, "kernel_initializer": KERNEL_INITIALIZER}
            convolution = self.conv_class(**options, name=self.names(scope, "conv"))
        tensor = convolution(tensor)
        tensor = self._batch_norm(tensor, scope=scope)
        return keras.layers.Activation(ACTIVATION, name=self.names(scope, ACTIVATION))(tensor)

    def _batch_norm(self, tensor: Any, *, scope: str) -> Any:
        return keras.layers.BatchNormalization(momentum=self.batch_norm_momentum, name=self.names(scope, "bn"))(tensor)

    def _max_pool(self, tensor: Any, *, scope: str) -> Any:
        return self.max_pool_class(pool_size=2, strides=2, padding="same", name=self.names(scope, "maxpool"))(tensor)

    def _resize(self, tensor: Any, spatial: tuple[int, ...], *, scope: str) -> Any:
        """Max-pool by 2 until the spatial size is ``spatial``; each pool gives ceil(size / 2), as a reduction does."""
        while _spatial(tensor) != spatial:
            current = _spatial(tensor)
            if any(size < target for size, target in zip(current, spatial, strict=True)) or current == _halve(current):
                raise ValueError(f"{scope}: cannot pool spatial size {current} down to {spatial}")
            tensor = self._max_pool(tensor, scope=scope)
        return tensor

    def _adapt(self, tensor: Any, spatial: tuple[int, ...], filters: int, *, scope: str) -> Any:
        """Adapt only what differs: max pooling for the spatial size, a pointwise conv for the channels."""
        tensor = self._resize(tensor, spatial, scope=scope)
        if _channels(tensor) != filters:
            tensor = self._conv_unit(tensor, filters=filters, kernel=1, scope=f"{scope}_pointwise")
        return tensor
