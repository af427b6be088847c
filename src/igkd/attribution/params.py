"""The settings of an attribution map: which source, IG's path and quadrature, the baseline, the target, the precision
and the batch sizes (:class:`IGParams`, the ``attribution`` section of a run's config)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Source = Literal["ig", "smoothgrad_ig", "smoothgrad", "input_x_gradient", "gradcam"]
Method = Literal["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
BaselineKind = Literal["zero", "black", "mean", "blur"]
TargetKind = Literal["label", "prediction"]


def on_off_setting(value: Any) -> Any:
    """YAML reads ``on``/``off`` as True/False: map them back to 'on'/'off' (the ``channels_last`` settings)."""
    return ("on" if value else "off") if isinstance(value, bool) else value


class IGParams(BaseModel):
    """How IG maps are computed (everything but batch sizes changes the maps)."""

    model_config = ConfigDict(extra="forbid")

    source: Source = Field(
        "ig",
        description="ig (igkd's Integrated Gradients, the paper's), or with Captum (pip install 'igkd[captum]'): "
        "smoothgrad_ig, smoothgrad, input_x_gradient, gradcam (at attribution.layer)",
    )
    layer: str | None = Field(None, description="gradcam: the teacher's layer by module path (e.g. features.16, layer4)")
    noise_samples: int = Field(16, ge=1, description="smoothgrad sources: noisy copies per image")
    noise_std: float = Field(0.15, gt=0, description="smoothgrad sources: the noise's standard deviation, in pixel units ([0, 1] images)")
    steps: int = Field(50, ge=1)
    method: Method = "gausslegendre"
    baseline: BaselineKind = "zero"
    target: TargetKind = "label"
    precision: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="bfloat16: autocast the model (1.5x faster on a CPU with native bf16, and on a GPU); not the default "
        "anywhere, since it moves the maps: on the trained CIFAR-10 (JPEG q75) teacher at 50 steps by up to 0.053 from "
        "float32's at 100 steps, against 0.052 for float32 at 50 (benchmarks/results/ig-completeness-cpu.md); by up to "
        "0.28 on an untrained one (benchmarks/results/throughput-cpu.md)",
    )
    batch_size: int = Field(256, ge=1, description="images per attribution batch")
    internal_batch_size: int | None = Field(
        None,
        ge=1,
        description="max model inputs (images*steps) per forward/backward; "
        "unset: 64 on a CPU, on a GPU 4096 halved until it fits in memory",
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto",
        description="the teacher and its path points in channels_last "
        "(auto: on CUDA and the CPU); faster convolutions, maps equal up to float rounding",
    )

    _channels_last_from_yaml_boolean = field_validator("channels_last", mode="before")(on_off_setting)

    @model_validator(mode="after")
    def _riemann_needs_two_steps(self) -> IGParams:
        if self.method.startswith("riemann") and self.steps < 2:
            raise ValueError(f"method '{self.method}' needs steps >= 2")
        if self.source == "gradcam" and not self.layer:
            raise ValueError("source gradcam needs layer, a module path of the teacher (e.g. features.16 or layer4)")
        if self.source != "ig" and self.precision != "float32":
            raise ValueError(f"source {self.source} runs in float32 (Captum); set precision float32")
        return self
