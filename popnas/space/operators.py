"""Operator strings of the search space: parsing, validation and canonical text.

An operator is written the way the POPNASv3 papers write it, for example ``"3x3:2dr conv"``
(a 3x3 convolution with dilation 2) or ``"7 dconv"`` (a depthwise-separable convolution with a
kernel of 7 on series). This module only parses and describes operators; the Keras layers that
implement them live in ``popnas.train.builder``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class OperatorKind(StrEnum):
    """The family of an operator; its member value is the suffix written in the operator string."""

    IDENTITY = "identity"
    """Passes its input through; adapts shape only where the block needs it."""
    CONV = "conv"
    """Convolution, optionally dilated, then batch norm and swish."""
    DEPTHWISE_CONV = "dconv"
    """Depthwise-separable convolution, then batch norm and swish."""
    SPATIAL_CONV = "sconv"
    """Spatially separable convolution, written ``AxB-BxA conv``: an AxB then a BxA convolution."""
    TRANSPOSE_CONV = "tconv"
    """Transposed convolution (upsampling by 2) followed by a convolution of stride 2."""
    MAX_POOL = "maxpool"
    """Max pooling with 'same' padding."""
    AVG_POOL = "avgpool"
    """Average pooling with 'same' padding."""
    LSTM = "lstm"
    """LSTM returning sequences, then batch norm; series only."""
    GRU = "gru"
    """GRU returning sequences, then batch norm; series only."""


RECURRENT_KINDS = frozenset({OperatorKind.LSTM, OperatorKind.GRU})

VALID_FORMS_2D = (
    "identity",
    "KxK conv",
    "KxK:Ddr conv",
    "KxK dconv",
    "KxK:Ddr dconv",
    "AxB-BxA conv",
    "KxK tconv",
    "KxK maxpool",
    "KxK avgpool",
)
VALID_FORMS_1D = (
    "identity",
    "K conv",
    "K:Ddr conv",
    "K dconv",
    "K:Ddr dconv",
    "K tconv",
    "K maxpool",
    "K avgpool",
    "lstm",
    "gru",
)

_KERNEL_OPERATOR = re.compile(
    r"^(?P<kernel>\d+(?:x\d+)?)(?::(?P<dilation>\d+)dr)?\s+(?P<kind>conv|dconv|tconv|maxpool|avgpool)$"
)
_SPATIAL_CONV = re.compile(r"^(?P<a>\d+)x(?P<b>\d+)-(?P<c>\d+)x(?P<d>\d+)\s+conv$")


class OperatorError(ValueError):
    """An operator string that is malformed or not allowed for the input's dimensions."""


@dataclass(frozen=True)
class Operator:
    """A parsed operator.

    ``kernel`` has one entry per spatial dimension (``(3, 3)`` for ``3x3``, ``(7,)`` for ``7``);
    for a spatially separable convolution it is ``(A, B)``, meaning an AxB then a BxA convolution.
    It is empty for identity and the recurrent operators. ``dims`` is 1 or 2, or None for the
    operators that fit any input (identity).
    """

    kind: OperatorKind
    kernel: tuple[int, ...] = ()
    dilation: int = 1
    dims: int | None = None

    @property
    def text(self) -> str:
        """Return the canonical operator string, the form stored in cells and results."""
        if self.kind in (OperatorKind.IDENTITY, *RECURRENT_KINDS):
            return self.kind.value
        if self.kind is OperatorKind.SPATIAL_CONV:
            a, b = self.kernel
            return f"{a}x{b}-{b}x{a} conv"
        kernel = "x".join(str(k) for k in self.kernel)
        dilation = f":{self.dilation}dr" if self.dilation > 1 else ""
        return f"{kernel}{dilation} {self.kind.value}"

    @property
    def is_recurrent(self) -> bool:
        return self.kind in RECURRENT_KINDS

    def __str__(self) -> str:
        return self.text


def _valid_forms(dims: int) -> str:
    forms = VALID_FORMS_2D if dims == 2 else VALID_FORMS_1D
    return ", ".join(f"'{form}'" for form in forms)


def parse_operator(text: str, *, dims: int) -> Operator:
    """Parse an operator string for inputs with ``dims`` spatial dimensions (2 for images, 1 for series).

    Raises OperatorError naming the string and listing the valid forms when it is malformed, uses
    the other dimensionality (``"7 conv"`` on images), or is recurrent on images.
    """
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, received dims={dims}")
    normalized = " ".join(str(text).strip().lower().split())
    task = "image" if dims == 2 else "time-series"
    hint = f"valid forms for {task} inputs: {_valid_forms(dims)} (K, A, B and D are positive integers)"

    if normalized == OperatorKind.IDENTITY:
        return Operator(OperatorKind.IDENTITY)
    if normalized in (OperatorKind.LSTM, OperatorKind.GRU):
        if dims == 2:
            raise OperatorError(f"operator '{text}' is recurrent and works only on time series; {hint}")
        return Operator(OperatorKind(normalized), dims=1)

    spatial = _SPATIAL_CONV.match(normalized)
    if spatial:
        a, b, c, d = (int(spatial.group(name)) for name in "abcd")
        if dims == 1:
            raise OperatorError(f"operator '{text}' is a 2D spatially separable convolution; {hint}")
        if (a, b) != (d, c) or a == b or min(a, b) < 1:
            raise OperatorError(
                f"operator '{text}' must be written AxB-BxA with A different from B, such as '1x7-7x1 conv'"
            )
        return Operator(OperatorKind.SPATIAL_CONV, kernel=(a, b), dims=2)

    match = _KERNEL_OPERATOR.match(normalized)
    if not match:
        raise OperatorError(f"operator '{text}' is not recognized; {hint}")
    sizes = tuple(int(size) for size in match.group("kernel").split("x"))
    kind = OperatorKind(match.group("kind"))
    dilation = int(match.group("dilation") or 1)
    if len(sizes) != dims:
        written = "2D (KxK)" if len(sizes) == 2 else "1D (K)"
        raise OperatorError(f"operator '{text}' has a {written} kernel; {hint}")
    if len(set(sizes)) != 1:
        raise OperatorError(f"operator '{text}' must have a square kernel (KxK); {hint}")
    if sizes[0] < 1 or dilation < 1:
        raise OperatorError(f"operator '{text}' needs a kernel size and dilation of at least 1")
    if dilation > 1 and kind not in (OperatorKind.CONV, OperatorKind.DEPTHWISE_CONV):
        raise OperatorError(f"operator '{text}': only conv and dconv take a dilation; {hint}")
    return Operator(kind, kernel=sizes, dilation=dilation, dims=dims)
