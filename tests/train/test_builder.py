"""The Keras model builder: operators in 1D and 2D, cell stacking, shape adaptation and the head."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from popnas.space import Cell, OperatorError
from popnas.spec.model import ArchitectureSpec, AugmentationSpec, Task
from popnas.train.builder import build_model

IMAGE = Task.IMAGE_CLASSIFICATION
SERIES = Task.TIME_SERIES_CLASSIFICATION

# Two motifs of one normal cell: cells 0 (normal), 1 (reduction), 2 (normal).
SMALL = ArchitectureSpec(motifs=2, normal_cells_per_motif=1, filters=4)

OPERATORS_2D = [
    "identity",
    "3x3 conv",
    "3x3:2dr conv",
    "3x3 dconv",
    "3x3:2dr dconv",
    "1x3-3x1 conv",
    "3x3 tconv",
    "2x2 maxpool",
    "2x2 avgpool",
]
OPERATORS_1D = [
    "identity",
    "3 conv",
    "3:2dr conv",
    "3 dconv",
    "3:2dr dconv",
    "3 tconv",
    "2 maxpool",
    "2 avgpool",
    "lstm",
    "gru",
]


def _build(
    text: str,
    task: Task,
    input_shape: tuple[int, ...],
    *,
    architecture: ArchitectureSpec = SMALL,
    classes: int = 3,
    augmentation: AugmentationSpec | None = None,
) -> keras.Model:
    return build_model(
        Cell.parse(text),
        input_shape=input_shape,
        classes=classes,
        task=task,
        architecture=architecture,
        augmentation=augmentation,
    )


def _predict(model: keras.Model, batch: int = 2) -> np.ndarray:
    x = np.random.default_rng(0).random((batch, *model.input_shape[1:]), dtype=np.float32)
    return np.asarray(model.predict_on_batch(x))


def _layer_names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


def _output_shape(model: keras.Model, name: str) -> tuple[int | None, ...]:
    return tuple(model.get_layer(name).output.shape)


def _consumers(model: keras.Model, layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return [other for other in model.layers if other.input is layer.output]


def test_empty_cell_is_input_pool_dense() -> None:
    model = _build("[]", IMAGE, (7, 7, 1))

    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "GlobalAveragePooling2D", "Dense"]
    assert model.output.shape == (None, 3)
    assert model.count_params() == 1 * 3 + 3


def test_empty_cell_keeps_augmentation_for_images() -> None:
    model = _build("[]", IMAGE, (8, 8, 3), augmentation=AugmentationSpec(shift=0.1, horizontal_flip=True))

    assert _layer_names(model) == ["input", "augment_shift", "augment_flip", "head_pool", "head_dense"]


def test_augmentation_follows_spec() -> None:
    no_flip = _build("[]", IMAGE, (8, 8, 3), augmentation=AugmentationSpec(shift=0.1, horizontal_flip=False))
    no_shift = _build("[]", IMAGE, (8, 8, 3), augmentation=AugmentationSpec(shift=0.0, horizontal_flip=True))

    assert "augment_flip" not in _layer_names(no_flip)
    assert "augment_shift" in _layer_names(no_flip)
    assert "augment_shift" not in _layer_names(no_shift)


def test_augmentation_ignored_for_series() -> None:
    model = _build("[(-1, '3 conv', -1, 'identity')]", SERIES, (25, 2), augmentation=AugmentationSpec())

    assert not any(name.startswith("augment") for name in _layer_names(model))


def test_augmentation_inactive_in_inference() -> None:
    model = _build("[]", IMAGE, (8, 8, 1), augmentation=AugmentationSpec(shift=0.5, horizontal_flip=True))
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)

    first = np.asarray(model(x, training=False))
    second = np.asarray(model(x, training=False))

    assert np.array_equal(first, second)


def test_cell_shapes_follow_motifs_on_odd_images() -> None:
    model = _build("[(-2, '3x3 conv', -1, '2x2 maxpool')]", IMAGE, (7, 7, 1))

    # Cell 1 reduces 7 to ceil(7 / 2) = 4 and doubles the 4 filters.
    assert _output_shape(model, "cell0_block0_add") == (None, 7, 7, 4)
    assert _output_shape(model, "cell1_block0_add") == (None, 4, 4, 8)
    assert _output_shape(model, "cell2_block0_add") == (None, 4, 4, 8)
    assert _predict(model).shape == (2, 3)


def test_cell_shapes_on_odd_series() -> None:
    model = _build("[(-2, '3 conv', -1, 'gru')]", SERIES, (25, 3))

    assert _output_shape(model, "cell0_block0_add") == (None, 25, 4)
    assert _output_shape(model, "cell1_block0_add") == (None, 13, 8)
    assert _output_shape(model, "cell2_block0_add") == (None, 13, 8)
    assert _predict(model).shape == (2, 3)


def test_lookback_from_before_reduction_is_pooled() -> None:
    model = _build("[(-2, '3x3 conv', -1, '3x3 conv')]", IMAGE, (7, 7, 1))

    # Cell 2 reads cell 0 (7x7) through -2: a max pool brings it to cell 2's input size, 4x4.
    assert _output_shape(model, "cell2_lookback2_maxpool") == (None, 4, 4, 4)
    assert _output_shape(model, "cell2_block0_add") == (None, 4, 4, 8)


def test_output_probabilities_sum_to_one() -> None:
    model = _build("[(-1, '3x3 conv', -2, 'identity'), (0, '2x2 avgpool', -1, '3x3 dconv')]", IMAGE, (9, 9, 2))

    probabilities = _predict(model, batch=4)

    assert probabilities.shape == (4, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_unused_blocks_concatenated_and_projected() -> None:
    model = _build("[(-1, '3x3 conv', -2, 'identity'), (-1, '2x2 maxpool', -1, '3x3 dconv')]", IMAGE, (8, 8, 1))

    assert _output_shape(model, "cell0_concat") == (None, 8, 8, 8)
    assert _output_shape(model, "cell0_output_conv") == (None, 8, 8, 4)


def test_single_unused_block_not_concatenated() -> None:
    model = _build("[(-1, '3x3 conv', -2, 'identity'), (0, '3x3 conv', -1, 'identity')]", IMAGE, (8, 8, 1))

    assert not any("concat" in name for name in _layer_names(model))


def test_cell_using_only_minus_two_skips_unconnected_cells() -> None:
    only_second = _build("[(-2, '3x3 conv', -2, 'identity')]", IMAGE, (7, 7, 1))
    only_first = _build("[(-1, '3x3 conv', -1, 'identity')]", IMAGE, (7, 7, 1))
    names = _layer_names(only_second)

    # The head reads cell 2, which reads cell 0; cell 1 has no path to the output.
    assert any(name.startswith("cell0_") for name in names)
    assert any(name.startswith("cell2_") for name in names)
    assert not any(name.startswith("cell1_") for name in names)
    assert len(only_second.layers) < len(only_first.layers)
    assert _predict(only_second).shape == (2, 3)


def test_residual_cells_add_nearest_lookback() -> None:
    plain = _build("[(-2, '3x3 conv', -2, '3x3 conv')]", IMAGE, (7, 7, 1))
    residual = _build(
        "[(-2, '3x3 conv', -2, '3x3 conv')]",
        IMAGE,
        (7, 7, 1),
        architecture=SMALL.model_copy(update={"residual_cells": True}),
    )
    names = _layer_names(residual)

    assert not any("residual" in name for name in _layer_names(plain))
    assert "cell0_residual_add" in names
    assert "cell2_residual_add" in names
    # Cell 2's nearest lookback is -2 (cell 0: 7x7x4): pooled to 4x4 and projected to 8 channels.
    assert _output_shape(residual, "cell2_residual_pointwise_conv") == (None, 4, 4, 8)
    assert _predict(residual).shape == (2, 3)


def test_residual_series_with_odd_length() -> None:
    model = _build(
        "[(-1, '3 conv', -2, '2 maxpool')]",
        SERIES,
        (25, 1),
        architecture=ArchitectureSpec(motifs=3, normal_cells_per_motif=1, filters=4, residual_cells=True),
    )

    assert _output_shape(model, "cell2_residual_add") == (None, 13, 8)
    assert _output_shape(model, "cell3_residual_add") == (None, 7, 16)
    assert _output_shape(model, "cell4_residual_add") == (None, 7, 16)
    assert _predict(model).shape == (2, 3)


def test_dilated_operator_in_reduction_cell() -> None:
    model = _build("[(-1, '3x3:2dr conv', -1, 'identity')]", IMAGE, (7, 7, 1))
    conv = model.get_layer("cell1_block0_in1_conv")

    assert conv.dilation_rate == (2, 2)
    assert conv.strides == (1, 1)
    assert _output_shape(model, "cell1_block0_in1_conv") == (None, 7, 7, 8)
    assert _output_shape(model, "cell1_block0_in1_maxpool") == (None, 4, 4, 8)
    assert _predict(model).shape == (2, 3)


def test_dilated_series_operator_in_reduction_cell() -> None:
    model = _build("[(-1, '3:2dr dconv', -2, 'identity')]", SERIES, (25, 2))
    conv = model.get_layer("cell1_block0_in1_dconv")

    assert conv.dilation_rate == (2,)
    assert conv.strides == (1,)
    assert _output_shape(model, "cell1_block0_in1_maxpool") == (None, 13, 8)


def test_recurrent_operator_in_reduction_cell_pooled() -> None:
    model = _build("[(-1, 'lstm', -1, 'identity')]", SERIES, (25, 2))

    assert _output_shape(model, "cell1_block0_in1_lstm") == (None, 25, 8)
    assert _output_shape(model, "cell1_block0_in1_maxpool") == (None, 13, 8)


def test_every_convolution_followed_by_batch_norm_and_swish() -> None:
    model = _build("[(-1, '1x3-3x1 conv', -2, '3x3 tconv'), (0, '3x3 dconv', -1, 'identity')]", IMAGE, (7, 7, 1))
    layers = model.layers
    convolution_types = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.Conv2DTranspose)

    convolutions = [layer for layer in layers if isinstance(layer, convolution_types)]
    assert convolutions
    for convolution in convolutions:
        assert convolution.padding == "same"
        assert not convolution.use_bias
        (norm,) = _consumers(model, convolution)
        assert isinstance(norm, keras.layers.BatchNormalization), convolution.name
        (activation,) = _consumers(model, norm)
        assert isinstance(activation, keras.layers.Activation), convolution.name
        assert activation.get_config()["activation"] in ("swish", "silu")  # one function, two names in Keras


def test_batch_norm_momentum_applied() -> None:
    model = build_model(
        Cell.parse("[(-1, '3 conv', -1, 'gru')]"),
        input_shape=(10, 1),
        classes=2,
        task=SERIES,
        architecture=SMALL,
        batch_norm_momentum=0.5,
    )

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms
    assert {layer.momentum for layer in norms} == {0.5}


def test_recurrent_operator_on_images_rejected() -> None:
    with pytest.raises(OperatorError, match="recurrent"):
        _build("[(-1, 'lstm', -1, 'identity')]", IMAGE, (7, 7, 1))


def test_series_kernel_on_images_rejected() -> None:
    with pytest.raises(OperatorError, match="1D"):
        _build("[(-1, '3 conv', -1, 'identity')]", IMAGE, (7, 7, 1))


def test_input_shape_rank_checked() -> None:
    with pytest.raises(ValueError, match=r"expects input_shape \(length, channels\)"):
        _build("[]", SERIES, (7, 7, 1))


def test_one_class_rejected() -> None:
    with pytest.raises(ValueError, match="classes=1"):
        _build("[]", IMAGE, (7, 7, 1), classes=1)


@pytest.mark.slow
@pytest.mark.parametrize("operator", OPERATORS_2D)
def test_every_image_operator_in_normal_and_reduction_cells(operator: str) -> None:
    # Block 0 reads both lookbacks, block 1 reads block 0; cell 1 is a reduction, 7x7 is odd.
    text = f"[(-2, '{operator}', -1, '{operator}'), (0, '{operator}', -1, 'identity')]"
    model = _build(text, IMAGE, (7, 7, 2))

    assert _output_shape(model, "cell0_block1_add") == (None, 7, 7, 4)
    assert _output_shape(model, "cell1_block1_add") == (None, 4, 4, 8)
    assert _output_shape(model, "cell2_block1_add") == (None, 4, 4, 8)
    probabilities = _predict(model)
    assert probabilities.shape == (2, 3)
    assert np.isfinite(probabilities).all()


@pytest.mark.slow
@pytest.mark.parametrize("operator", OPERATORS_1D)
def test_every_series_operator_in_normal_and_reduction_cells(operator: str) -> None:
    text = f"[(-2, '{operator}', -1, '{operator}'), (0, '{operator}', -1, 'identity')]"
    model = _build(text, SERIES, (25, 3))

    assert _output_shape(model, "cell0_block1_add") == (None, 25, 4)
    assert _output_shape(model, "cell1_block1_add") == (None, 13, 8)
    assert _output_shape(model, "cell2_block1_add") == (None, 13, 8)
    probabilities = _predict(model)
    assert probabilities.shape == (2, 3)
    assert np.isfinite(probabilities).all()


@pytest.mark.slow
def test_deep_macro_architecture_with_minus_two_and_residuals() -> None:
    # Two reductions in a row (no normal cells) make -2 skip a whole reduction.
    model = _build(
        "[(-2, '3x3 conv', -1, '2x2 avgpool'), (0, 'identity', -2, '3x3:2dr dconv')]",
        IMAGE,
        (13, 11, 3),
        architecture=ArchitectureSpec(motifs=4, normal_cells_per_motif=0, filters=4, residual_cells=True),
    )

    assert _output_shape(model, "cell2_block1_add") == (None, 2, 2, 32)
    assert _predict(model).shape == (2, 3)
