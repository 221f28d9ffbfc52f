"""Operator strings: every valid form parses, canonical text round-trips, invalid forms are rejected."""

import pytest

from popnas.space import Operator, OperatorError, OperatorKind, parse_operator

IMAGE_CASES = [
    ("identity", OperatorKind.IDENTITY, (), 1),
    ("3x3 conv", OperatorKind.CONV, (3, 3), 1),
    ("3x3:2dr conv", OperatorKind.CONV, (3, 3), 2),
    ("5x5 dconv", OperatorKind.DEPTHWISE_CONV, (5, 5), 1),
    ("3x3:4dr dconv", OperatorKind.DEPTHWISE_CONV, (3, 3), 4),
    ("1x7-7x1 conv", OperatorKind.SPATIAL_CONV, (1, 7), 1),
    ("7x1-1x7 conv", OperatorKind.SPATIAL_CONV, (7, 1), 1),
    ("3x3 tconv", OperatorKind.TRANSPOSE_CONV, (3, 3), 1),
    ("2x2 maxpool", OperatorKind.MAX_POOL, (2, 2), 1),
    ("2x2 avgpool", OperatorKind.AVG_POOL, (2, 2), 1),
]

SERIES_CASES = [
    ("identity", OperatorKind.IDENTITY, (), 1),
    ("7 conv", OperatorKind.CONV, (7,), 1),
    ("7:4dr conv", OperatorKind.CONV, (7,), 4),
    ("13 dconv", OperatorKind.DEPTHWISE_CONV, (13,), 1),
    ("7:2dr dconv", OperatorKind.DEPTHWISE_CONV, (7,), 2),
    ("5 tconv", OperatorKind.TRANSPOSE_CONV, (5,), 1),
    ("2 maxpool", OperatorKind.MAX_POOL, (2,), 1),
    ("2 avgpool", OperatorKind.AVG_POOL, (2,), 1),
    ("lstm", OperatorKind.LSTM, (), 1),
    ("gru", OperatorKind.GRU, (), 1),
]


@pytest.mark.parametrize(("text", "kind", "kernel", "dilation"), IMAGE_CASES)
def test_image_form_parses(text: str, kind: OperatorKind, kernel: tuple[int, ...], dilation: int) -> None:
    operator = parse_operator(text, dims=2)
    assert operator.kind is kind
    assert operator.kernel == kernel
    assert operator.dilation == dilation
    assert operator.text == text


@pytest.mark.parametrize(("text", "kind", "kernel", "dilation"), SERIES_CASES)
def test_series_form_parses(text: str, kind: OperatorKind, kernel: tuple[int, ...], dilation: int) -> None:
    operator = parse_operator(text, dims=1)
    assert operator.kind is kind
    assert operator.kernel == kernel
    assert operator.dilation == dilation
    assert operator.text == text


@pytest.mark.parametrize(
    ("text", "dims"), [(text, 2) for text, *_ in IMAGE_CASES] + [(text, 1) for text, *_ in SERIES_CASES]
)
def test_canonical_text_round_trips(text: str, dims: int) -> None:
    operator = parse_operator(text, dims=dims)
    assert parse_operator(operator.text, dims=dims) == operator
    assert str(operator) == operator.text


def test_identity_fits_both_dims() -> None:
    assert parse_operator("identity", dims=1) == parse_operator("identity", dims=2)
    assert parse_operator("identity", dims=2).dims is None


def test_kernel_operator_records_dims() -> None:
    assert parse_operator("3x3 conv", dims=2).dims == 2
    assert parse_operator("3 conv", dims=1).dims == 1
    assert parse_operator("gru", dims=1).dims == 1


def test_recurrent_flag() -> None:
    assert parse_operator("lstm", dims=1).is_recurrent
    assert parse_operator("gru", dims=1).is_recurrent
    assert not parse_operator("7 conv", dims=1).is_recurrent
    assert not parse_operator("identity", dims=1).is_recurrent


@pytest.mark.parametrize(
    ("written", "dims", "canonical"),
    [
        ("3X3 Conv", 2, "3x3 conv"),
        ("  3x3   conv  ", 2, "3x3 conv"),
        ("3x3:2DR CONV", 2, "3x3:2dr conv"),
        ("1X7-7X1\tconv", 2, "1x7-7x1 conv"),
        ("Identity", 2, "identity"),
        ("GRU", 1, "gru"),
        (" LSTM\n", 1, "lstm"),
        ("7  MaxPool", 1, "7 maxpool"),
    ],
)
def test_case_and_whitespace_normalized(written: str, dims: int, canonical: str) -> None:
    assert parse_operator(written, dims=dims).text == canonical


def test_dilation_one_normalized() -> None:
    assert parse_operator("3x3:1dr conv", dims=2).text == "3x3 conv"
    assert parse_operator("3x3:1dr conv", dims=2) == parse_operator("3x3 conv", dims=2)


def test_leading_zeros_normalized() -> None:
    assert parse_operator("03x03 conv", dims=2).text == "3x3 conv"


def test_operator_is_hashable_value() -> None:
    first = parse_operator("3x3 conv", dims=2)
    second = parse_operator("3X3 conv", dims=2)
    assert first == second
    assert len({first, second}) == 1
    assert first == Operator(OperatorKind.CONV, kernel=(3, 3), dims=2)


@pytest.mark.parametrize("text", ["", "conv", "3x3", "3x3 convolution", "foo", "3x3x3 conv", "x3 conv", "3x3 zconv"])
def test_malformed_rejected_with_valid_forms(text: str) -> None:
    with pytest.raises(OperatorError) as caught:
        parse_operator(text, dims=2)
    message = str(caught.value)
    assert repr(text) in message or f"'{text}'" in message
    assert "not recognized" in message
    assert "'KxK conv'" in message
    assert "'AxB-BxA conv'" in message
    assert "'identity'" in message


def test_malformed_series_lists_series_forms() -> None:
    with pytest.raises(OperatorError) as caught:
        parse_operator("bogus", dims=1)
    message = str(caught.value)
    assert "time-series" in message
    assert "'K conv'" in message
    assert "'gru'" in message
    assert "KxK" not in message


@pytest.mark.parametrize("text", ["7 conv", "7:2dr conv", "13 dconv", "2 maxpool", "2 avgpool", "3 tconv"])
def test_series_form_rejected_on_images(text: str) -> None:
    with pytest.raises(OperatorError, match=r"1D \(K\) kernel"):
        parse_operator(text, dims=2)


@pytest.mark.parametrize("text", ["3x3 conv", "3x3:2dr conv", "5x5 dconv", "2x2 maxpool", "2x2 avgpool"])
def test_image_form_rejected_on_series(text: str) -> None:
    with pytest.raises(OperatorError, match=r"2D \(KxK\) kernel"):
        parse_operator(text, dims=1)


def test_spatial_conv_rejected_on_series() -> None:
    with pytest.raises(OperatorError, match="spatially separable"):
        parse_operator("1x7-7x1 conv", dims=1)


@pytest.mark.parametrize("text", ["lstm", "gru", "LSTM"])
def test_recurrent_rejected_on_images(text: str) -> None:
    with pytest.raises(OperatorError, match="recurrent"):
        parse_operator(text, dims=2)


@pytest.mark.parametrize("text", ["1x7-1x7 conv", "3x3-3x3 conv", "1x7-7x2 conv", "0x7-7x0 conv"])
def test_spatial_conv_needs_mirrored_kernels(text: str) -> None:
    with pytest.raises(OperatorError, match="AxB-BxA"):
        parse_operator(text, dims=2)


@pytest.mark.parametrize("text", ["1x7-7x1 dconv", "1x7-7x1 maxpool", "1x7:2dr-7x1 conv"])
def test_spatial_form_only_for_conv(text: str) -> None:
    with pytest.raises(OperatorError):
        parse_operator(text, dims=2)


@pytest.mark.parametrize("text", ["3x5 conv", "1x3 dconv", "2x3 maxpool", "5x3:2dr conv"])
def test_non_square_kernel_rejected(text: str) -> None:
    with pytest.raises(OperatorError, match="square"):
        parse_operator(text, dims=2)


@pytest.mark.parametrize(
    ("text", "dims"),
    [("2x2:2dr maxpool", 2), ("2x2:2dr avgpool", 2), ("3x3:2dr tconv", 2), ("2:2dr maxpool", 1), ("2:3dr avgpool", 1)],
)
def test_dilation_rejected_outside_convolutions(text: str, dims: int) -> None:
    with pytest.raises(OperatorError, match="only conv and dconv take a dilation"):
        parse_operator(text, dims=dims)


@pytest.mark.parametrize(
    ("text", "dims"), [("0x0 conv", 2), ("0 conv", 1), ("0 maxpool", 1), ("3x3:0dr conv", 2), ("7:0dr conv", 1)]
)
def test_zero_kernel_or_dilation_rejected(text: str, dims: int) -> None:
    with pytest.raises(OperatorError, match="at least 1"):
        parse_operator(text, dims=dims)


@pytest.mark.parametrize("text", ["-3x-3 conv", "3x3:-2dr conv", "3.5x3.5 conv", "3x3: 2dr conv"])
def test_signs_and_fractions_rejected(text: str) -> None:
    with pytest.raises(OperatorError, match="not recognized"):
        parse_operator(text, dims=2)


@pytest.mark.parametrize("dims", [0, 3, -1])
def test_invalid_dims_rejected(dims: int) -> None:
    with pytest.raises(ValueError, match="dims must be 1 or 2"):
        parse_operator("identity", dims=dims)


def test_error_is_value_error() -> None:
    assert issubclass(OperatorError, ValueError)
