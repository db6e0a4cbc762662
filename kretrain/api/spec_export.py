"""The export section of the RetrainJob spec: serving artifacts exported and parity-checked in the trainer pod."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kretrain.api.base import ApiModel

ExportFormat = Literal["onnx", "engine"]


def _default_formats() -> list[ExportFormat]:
    return ["onnx"]


class ExportSpec(ApiModel):
    """Serving artifacts exported in the trainer pod after the checks, each proven equal to the PyTorch model."""

    formats: list[ExportFormat] = Field(default_factory=_default_formats, max_length=2)
    """Ultralytics export formats: `onnx` (checked with onnxruntime on CPU) and `engine` (TensorRT; the pod
    needs a GPU). Empty: nothing is exported and the exportParity check passes with nothing to compare."""
    imgsz: int | None = Field(default=None, ge=32, le=4096, multiple_of=32)
    """Input size of the exported model (unset: strategy.imgsz)."""
    half: bool = False
    """Export FP16 weights (ONNX on CPU is converted with onnxruntime's float16 tool, inputs stay FP32)."""
    dynamic: bool = False
    """Dynamic batch and image size axes."""
    opset: int | None = Field(default=None, ge=9, le=30)
    """ONNX opset (unset: the newest the installed torch and onnx support); checked against the installed onnx."""
    max_output_diff: float | None = Field(default=None, gt=0, le=1)
    """Largest tolerated max|exported - PyTorch| / max(max|PyTorch|, 1) on the test images (unset: 1e-3,
    or 2e-2 with `half`)."""
    max_metric_drop: float = Field(default=0.01, ge=0, le=1)
    """Largest tolerated drop (absolute) of the pooled promotion metric of the exported model versus PyTorch."""

    @field_validator("formats")
    @classmethod
    def _unique_formats(cls, formats: list[str]) -> list[str]:
        if len(set(formats)) != len(formats):
            raise ValueError(f"formats must not repeat a format: {formats}")
        return formats

    @property
    def output_tolerance(self) -> float:
        """The effective output tolerance of the exportParity check."""
        if self.max_output_diff is not None:
            return self.max_output_diff
        return 2e-2 if self.half else 1e-3
