"""A MuseModel in bfloat16 or float16 for inference: which weights are cast, which stay float32, and why.

``cast_for_inference(model, "bf16")`` casts the weights in place (the model then computes in bf16:
``MuseModel.encode_video`` casts its input frames to them), except:

- LayerNorms (``nn.LayerNorm`` and its subclasses: open_clip's, the pyramid's, the blocks'): their
  weights stay float32, and hooks cast their input to float32 and their output back to the model's
  dtype, so the statistics and the affine step are float32. Explicit casts, not PyTorch's mixed-dtype
  LayerNorm: an exported graph then holds standard Cast nodes (ONNX's LayerNormalization takes no
  mixed types), and the numbers are the same;
- the scan's own parameters (``A_log``, ``D``, ``dt_proj.bias`` of each ``ScanDirection``): the scan
  reads them in float32 and keeps its state in float32 (the C++ and Triton kernels, the reference);
  rounding them would change every step of the recurrence.

The embeddings are pooled and L2-normalised in float32 (``MuseModel.encode_video``), so the output is
float32 whatever the precision.

Why cast and not ``torch.autocast``: measured on CPU (docs/benchmarks.md, "Precision"), both stay
within cosine 0.9999 of fp32, and casting ran the ViT-B-32 video encoder 3.2x faster than fp32 where
autocast ran it no faster (autocast re-casts fp32 weights and activations at every op).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .bimamba import ScanDirection

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCAN_PARAMETERS_KEPT_FP32 = ("A_log", "D", "dt_proj.bias")  # read by the scan in float32


def precision_dtype(precision: str) -> torch.dtype:
    """ "fp32" | "bf16" | "fp16" -> the torch dtype; ValueError naming the choices otherwise."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return DTYPES[precision]


def cast_for_inference(model: nn.Module, precision: str) -> nn.Module:
    """Cast ``model``'s weights to ``precision`` in place, LayerNorms and scan parameters kept float32.

    Returns the model. "fp32" casts everything back to float32.
    """
    dtype = precision_dtype(precision)
    model.to(dtype)
    if dtype == torch.float32:
        return model
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.float()
            module.register_forward_pre_hook(_inputs_to_float32)
            module.register_forward_hook(functools.partial(_output_to, dtype))
        if isinstance(module, ScanDirection):
            for name in SCAN_PARAMETERS_KEPT_FP32:
                parameter = module.get_parameter(name)
                parameter.data = parameter.data.float()
    return model


def _inputs_to_float32(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)


def _output_to(dtype: torch.dtype, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(dtype)
