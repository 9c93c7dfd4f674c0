"""``ScanInputs``: one direction's arguments of a selective scan, the one input type of every implementation.

The reference, the chunked scan, the custom op (C++ on CPU, Triton on CUDA), their bidirectional forms,
the TorchScript formulation and the ONNX translation all read a scan's tensors as a ``ScanInputs``
(``muse_infer.ops.dispatch`` is where they are chosen). It is a NamedTuple, so ``selective_scan_ref(*inputs)``
works and its fields are in the order of the ``muse::selective_scan`` schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import torch

SCAN_FIELDS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")  # one direction's arguments, in order
OPTIONAL_FIELDS = ("D", "z", "delta_bias")
TIME_FIELDS = ("u", "delta", "B", "C", "z")  # the tensors with a time axis (the last one)


class ScanInputs(NamedTuple):
    """One direction's arguments of a selective scan (Mamba-1's ``selective_scan_ref`` arguments).

    Shapes: u, delta, z (batch, Di, L); A (Di, N); B, C (batch, N, L) or (batch, groups, N, L) with Di
    divisible by groups; D, delta_bias (Di,). Any strides. See ``reference.selective_scan_ref`` for the math.
    """

    u: torch.Tensor  # (batch, Di, L)
    delta: torch.Tensor  # (batch, Di, L)
    A: torch.Tensor  # (Di, N)
    B: torch.Tensor  # (batch, N, L) or (batch, groups, N, L)
    C: torch.Tensor  # (batch, N, L) or (batch, groups, N, L)
    D: torch.Tensor | None = None  # (Di,)
    z: torch.Tensor | None = None  # (batch, Di, L)
    delta_bias: torch.Tensor | None = None  # (Di,)

    @classmethod
    def of(cls, args) -> ScanInputs:
        """A ``ScanInputs`` from one: a ScanInputs, or a sequence (u, delta, A, B, C[, D, z, delta_bias])."""
        if isinstance(args, cls):
            return args
        args = tuple(args)
        if not 5 <= len(args) <= 8:
            raise ValueError(f"a direction is (u, delta, A, B, C[, D, z, delta_bias]); got {len(args)} items")
        return cls(*args)

    def flip_time(self) -> ScanInputs:
        """The same inputs in reversed time order (u, delta, B, C, z flipped along their last axis)."""
        return self._replace(
            **{name: getattr(self, name).flip(-1) for name in TIME_FIELDS if getattr(self, name) is not None}
        )

    def cast(self, dtype: torch.dtype) -> ScanInputs:
        """Every tensor converted to ``dtype`` (absent ones stay None)."""
        return ScanInputs(*(None if t is None else t.to(dtype) for t in self))


def check_same_options(forward: ScanInputs, backward: ScanInputs) -> None:
    """ValueError unless D, z and delta_bias are given for both directions or for neither."""
    for name in OPTIONAL_FIELDS:
        if (getattr(forward, name) is None) != (getattr(backward, name) is None):
            raise ValueError(f"give {name} for both directions or for neither")
