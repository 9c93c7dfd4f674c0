"""The names users choose from (backends, precisions, frame sampling): one place, imported by the
CLI's option parsing without numpy or torch."""

BACKENDS = ("torch", "onnx", "torchscript", "pt2")
PRECISIONS = ("fp32", "bf16", "fp16")
PRECISION_CHOICES = ("auto", *PRECISIONS)
SAMPLING_CHOICES = ("exact", "keyframes")  # video.frames.SAMPLINGS
