"""A MuseModel in bfloat16 or float16 for inference: which weights are cast, which stay float32, and why.

``cast_for_inference(model, "bf16")`` casts the weights in place (the model then computes in bf16:
``MuseModel.encode_video`` casts its input frames to them), except:

- LayerNorms (``nn.LayerNorm`` and its subclasses: open_clip's, the pyramid's, the blocks'): their
  weights stay float32, and the statistics and the affine step are computed in float32, the output
  rounded to the model's dtype. Hooks cast their input to float32 and their output back, so that an
  exported or traced graph holds standard Cast nodes (ONNX's LayerNormalization takes no mixed types).
  In eager inference on the CPU (``layer_norm_reads_reduced``) the input goes in as it is: PyTorch's
  LayerNorm then reads bf16 or fp16 with float32 weights itself, computing in float32 (its
  "mixed-type" kernel), without the two copies: 1.7-2.7x faster a LayerNorm on ViT-B-32's shapes
  (0.65 against 1.28 ms on the blocks' (1, 3060, 512)), 0-9 % of a video in bf16
  (docs/benchmarks.md). The two agree up to the last bit of the reduced output (the float32 sums run
  in another order; tests/test_precision.py);
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

from ..ops.dispatch import graph_being_recorded
from .bimamba import ScanDirection

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCAN_PARAMETERS_KEPT_FP32 = ("A_log", "D", "dt_proj.bias")  # read by the scan in float32
REDUCED_DTYPES = (torch.bfloat16, torch.float16)


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


def layer_norm_reads_reduced(x: torch.Tensor) -> bool:
    """Whether a kept-float32 LayerNorm takes ``x`` (bf16 or fp16) as it is, without the float32 cast:
    a CPU tensor, no gradient needed, and no tracer, compiler or exporter recording (their graphs keep
    the explicit casts, which every runtime knows)."""
    if x.device.type != "cpu" or x.dtype not in REDUCED_DTYPES:
        return False
    if torch.is_grad_enabled() and x.requires_grad:
        return False
    return not graph_being_recorded()


def _inputs_to_float32(module: nn.Module, args: tuple) -> tuple | None:
    if args and isinstance(args[0], torch.Tensor) and layer_norm_reads_reduced(args[0]):
        return None  # the arguments unchanged: F.layer_norm computes in float32 from them
    return tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)


def _output_to(dtype: torch.dtype, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(dtype)
