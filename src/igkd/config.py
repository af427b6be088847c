"""The run configuration: validated YAML plus ``key.path=value`` overrides."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from igkd.artifacts.layout import CACHE_DIR
from igkd.attribution.params import IGParams, on_off_setting
from igkd.configs import DEFAULT_CONFIG, builtin_config_names, builtin_config_path
from igkd.data.sources import DataConfig
from igkd.errors import IgkdError
from igkd.evaluation.corruptions import CORRUPTIONS, SEVERITIES, check_corruptions
from igkd.losses import term_class
from igkd.methods import canonical_method, find_method
from igkd.models.registry import arch_text, parse_arch
from igkd.models.rename import parse_rename_rules
from igkd.normalization import NormSetting, parse_normalization
from igkd.overlay import Blend, MapSource


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


AmpSetting = Literal["auto", "bf16", "off"]
AMP_CHOICES = "auto = where the device computes bf16 natively (a GPU with bf16, a CPU with AVX-512 BF16 or AMX), else float32"


def _amp_setting(value: Any) -> Any:
    """YAML reads ``off``/``no``/``false`` as False: that is 'off'. True (``on``) is refused: bf16 or auto?"""
    if value is True:
        raise ValueError(
            "amp takes auto, bf16 or off; 'on' is ambiguous: write bf16 (always) or auto (bf16 where the device computes it natively)"
        )
    return "off" if value is False else value


class TrainConfig(_Strict):
    """Optimiser, schedule and speed settings of one training run."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    micro_batches: int = Field(1, ge=1, description="chunks per process and step, gradients accumulated (BatchNorm per chunk)")
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, description="the learning rate at base_batch_size (at batch_size when lr_scaling is none)")
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="scale lr by batch_size / base_batch_size (linear: Goyal et al. 2017, for SGD) or its square root (Adam)"
    )
    base_batch_size: int | None = Field(None, ge=1, description="the batch size at which lr holds; required when lr_scaling is set")
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(4e-5, ge=0)
    schedule: Literal["none", "cosine"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    amp: AmpSetting = Field("auto", description=f"bf16 autocast: {AMP_CHOICES}")
    channels_last: Literal["auto", "on", "off"] = Field("auto", description="channels_last memory format: auto = on CUDA and the CPU")
    compile: bool = False
    eval_batch_size: int | None = Field(
        None, ge=1, description="images per evaluation batch; unset: 64 on a CPU (cache-friendly), 1024 on a GPU; changes no result"
    )

    _amp_from_yaml_boolean = field_validator("amp", mode="before")(_amp_setting)

    _channels_last_from_yaml_boolean = field_validator("channels_last", mode="before")(on_off_setting)

    @model_validator(mode="after")
    def _scaling_needs_a_base(self) -> TrainConfig:
        if self.lr_scaling != "none" and self.base_batch_size is None:
            raise ValueError(f"lr_scaling '{self.lr_scaling}' needs base_batch_size (the batch size at which lr holds)")
        return self

    @property
    def scaled_lr(self) -> float:
        """The learning rate the optimiser starts from: ``lr`` scaled from ``base_batch_size`` to ``batch_size``."""
        if self.lr_scaling == "none" or self.base_batch_size is None:
            return self.lr
        ratio = self.batch_size / self.base_batch_size
        return self.lr * (ratio if self.lr_scaling == "linear" else ratio**0.5)


class TeacherConfig(_Strict):
    """The teacher: trained here, or imported from a checkpoint."""

    arch: str = Field("mobilenetv2_cifar", description="an architecture name (igkd.models.registry) or a {name, options...} mapping")
    seed: int = Field(0, ge=0)
    checkpoint: Path | None = None
    rename: list[str] = Field([], description="OLD=NEW key-prefix rewrites for a foreign checkpoint, applied in order")
    normalize: NormSetting = Field("dataset", description="dataset, cifar10, pretrained, none, m1,m2,m3/s1,s2,s3 or {mean, std}")
    train: TrainConfig = TrainConfig()

    _parse_normalize = field_validator("normalize", mode="before")(parse_normalization)
    _arch_from_mapping = field_validator("arch", mode="before")(arch_text)

    @field_validator("rename")
    @classmethod
    def _rules(cls, value: list[str]) -> list[str]:
        try:
            parse_rename_rules(value)
        except IgkdError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _check_arch(self) -> TeacherConfig:
        parse_arch(self.arch)
        return self


class KDConfig(_Strict):
    """Hinton knowledge distillation from teacher logits."""

    alpha: float = Field(0.01, ge=0, le=1)
    temperature: float = Field(2.5, gt=0)
    teacher_logits: Literal["online", "cached"] = "online"


class ATConfig(_Strict):
    """Attention transfer between (teacher layer, student layer) pairs, by module path (``[layer3, features.9]``);
    an integer I is block ``features.I`` of the built-in MobileNetV2. Empty: its student's middle block."""

    gamma: float = Field(0.8, ge=0)
    pairs: list[tuple[int | str, int | str]] = []


class ExplainConfig(_Strict):
    """Explanation matching (the ``gradcam`` term, e²KD): its weight in a method, and the (teacher layer, student layer)
    whose Grad-CAMs are compared, by module path (default: each model's last feature map)."""

    weight: float = Field(1.0, ge=0)
    layers: tuple[str, str] | None = None


class CATConfig(_Strict):
    """Class activation transfer (the ``cat`` term, CAT-KD): its weight in a method, the side of the pooled maps, and
    the (teacher layer, student layer) whose class activation maps are compared (default: the last feature maps)."""

    weight: float = Field(1.0, ge=0)
    resolution: int = Field(2, ge=1)
    layers: tuple[str, str] | None = None


class OverlayConfig(_Strict):
    """IG overlay: probability, blend rule, random power range and which maps (controls)."""

    prob: float = Field(0.1, ge=0, le=1)
    blend: Blend = "paper"
    power_min: float = Field(1.0, gt=0)
    power_max: float = Field(2.0, gt=0)
    maps: MapSource = "aligned"

    @model_validator(mode="after")
    def _power_order(self) -> OverlayConfig:
        if self.power_max < self.power_min:
            raise ValueError("power_max must be >= power_min")
        return self


class StudentConfig(_Strict):
    """The student architecture, distillation method and its training."""

    arch: str = Field("mobilenetv2_cifar:k=5", description="an architecture name (igkd.models.registry) or a {name, options...} mapping")
    normalize: Literal["teacher"] | NormSetting = Field(
        "teacher", description="teacher (the teacher's mean/std) or any teacher.normalize value"
    )
    method: str = Field(
        "KD_IG", description="a preset (igkd methods: Student, KD, IG, AT, KD_IG, ...), or the name of the mix in student.terms"
    )
    terms: dict[str, float] | None = Field(
        None,
        description="your own mix of registered loss terms by name and weight (e.g. {ce: 0.9, kd: 0.1}), summed in name "
        "order, instead of a preset; name it with student.method",
    )
    overlay: bool | None = Field(None, description="with student.terms: overlay the teacher's maps on the input (default off)")
    train_fraction: float = Field(1.0, gt=0.0, le=1.0)
    kd: KDConfig = KDConfig()
    at: ATConfig = ATConfig()
    explain: ExplainConfig = ExplainConfig()
    cat: CATConfig = CATConfig()
    ig: OverlayConfig = OverlayConfig()
    train: TrainConfig = TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="none", batch_size=64, epochs=100)

    _arch_from_mapping = field_validator("arch", mode="before")(arch_text)

    @field_validator("normalize", mode="before")
    @classmethod
    def _parse_normalize(cls, value: Any) -> Any:
        return value if value == "teacher" else parse_normalization(value)

    @field_validator("terms")
    @classmethod
    def _registered_terms(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("a mix needs at least one loss term (e.g. {ce: 1.0})")
        try:
            for name in value:
                term_class(name)
        except IgkdError as exc:
            raise ValueError(str(exc)) from None
        return dict(sorted(value.items()))

    @model_validator(mode="after")
    def _check(self) -> StudentConfig:
        parse_arch(self.arch)
        if self.terms is None:
            if self.overlay is not None:
                raise ValueError(
                    f"overlay belongs to a mix of your own (student.terms); the method {self.method} sets its own "
                    "(the presets with IG overlay the maps)"
                )
            self.method = canonical_method(self.method)
        elif find_method(self.method) is not None:
            raise ValueError(f"student.terms declares a mix of your own: name it with student.method=NAME, not the preset '{self.method}'")
        elif not re.fullmatch(r"[A-Za-z0-9_.+-]+", self.method):
            raise ValueError(f"method '{self.method}' names a folder: use letters, digits and _ . + - only")
        return self


class AttributionConfig(IGParams):
    """IG parameters plus how the maps are stored."""

    dtype: Literal["float16", "uint8"] = "float16"


class ReportConfig(_Strict):
    """What the report shows: example images, latency repeats, IG-agreement sample size, the data's name, and what the
    data can and cannot show (``note``, under the data line)."""

    examples: int = Field(6, ge=0, le=32)
    latency_repeats: int = Field(30, ge=3)
    agreement_images: int = Field(256, ge=0)
    data_label: str | None = None
    note: str | None = Field(None, description="what results on these data can and cannot show; the reports print it under the data line")
    tensorboard: bool = Field(False, description="also write per-epoch metrics and a few IG overlays as TensorBoard event files")


class RobustnessConfig(_Strict):
    """Evaluation under common corruptions (:mod:`igkd.evaluation.corruptions`): which ones, at which severities, with which seed."""

    enabled: bool = Field(False, description="evaluate teacher and students on the corrupted test split after training")
    corruptions: list[str] = Field(default_factory=lambda: list(CORRUPTIONS))
    severities: list[int] = Field(default_factory=lambda: list(SEVERITIES))
    seed: int = Field(0, ge=0, description="seeds the noise, so every model sees the same corrupted images")
    fold_batchnorm: bool = Field(
        True,
        description="evaluate an inference copy of each model, BatchNorm folded into its convolutions (1.4-2x as fast on a "
        "CPU; its predictions differ from the model's only by float rounding)",
    )

    @model_validator(mode="after")
    def _known(self) -> RobustnessConfig:
        try:
            check_corruptions(self.corruptions, self.severities)
        except IgkdError as exc:
            raise ValueError(str(exc)) from None
        return self


class EvaluationConfig(_Strict):
    """How every evaluation computes: test accuracy, corruptions, transfer and ``igkd evaluate``. Results record the
    precision they were computed in; bf16 moves a few predictions (17 of the CIFAR-10 teacher's 10,000 test images)."""

    amp: AmpSetting = Field("auto", description=f"bf16 autocast: {AMP_CHOICES}; off = float32, the reference")

    _amp_from_yaml_boolean = field_validator("amp", mode="before")(_amp_setting)


class RunConfig(_Strict):
    """Everything one run of the pipeline needs."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9._-]+$")
    imports: list[str] = Field(
        [], description="Python modules imported before the config is checked: your own loss terms or model families"
    )
    out_dir: Path = Path("runs")
    cache_dir: Path | None = None
    seed: int = Field(0, ge=0)
    device: str = "auto"
    deterministic: bool = False
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    attribution: AttributionConfig = AttributionConfig()
    student: StudentConfig = StudentConfig()
    report: ReportConfig = ReportConfig()
    robustness: RobustnessConfig = RobustnessConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @property
    def run_dir(self) -> Path:
        return self.out_dir / self.name

    @property
    def cache_path(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.run_dir / CACHE_DIR


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise IgkdError(f"override '{dotted}': '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b=value`` and parse the value as YAML (numbers, booleans, lists)."""
    if "=" not in text or text.startswith("="):
        raise IgkdError(f"override '{text}' is not of the form key.path=value (e.g. student.train.epochs=5)")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return key.strip(), raw


MAX_EXTENDS = 8


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _config_path(source: str, relative_to: Path | None = None) -> Path:
    path = Path(source)
    if not path.suffix:
        return builtin_config_path(source)
    if relative_to is not None and not path.is_absolute():
        path = relative_to.parent / path
    if not path.is_file():
        raise IgkdError(
            f"config file '{path}' not found; pass an existing YAML file or a built-in name ({', '.join(builtin_config_names())})"
        )
    return path


def _read_tree(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The config mapping in ``path``, on top of the config its ``extends:`` names (a built-in name or a path)."""
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise IgkdError(f"config file '{path}' is not valid YAML ({str(exc).splitlines()[0]}); fix its syntax") from None
    if not isinstance(tree, dict):
        raise IgkdError(f"config file '{path}' must hold a mapping of sections (data, teacher, student, ...)")
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    if not isinstance(parent, str):
        raise IgkdError(f"config file '{path}': extends must name one config (a built-in name or a YAML path), got {parent!r}")
    base = _config_path(parent, path)
    if base.resolve() in chain or len(chain) >= MAX_EXTENDS:
        raise IgkdError(f"config file '{path}' extends '{parent}', which leads back to itself; remove the cycle")
    return _merge(_read_tree(base, (*chain, path.resolve())), tree)


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (file path or built-in name; ``extends: OTHER`` builds on another), apply overrides, validate."""
    path = _config_path(str(source) if source is not None else DEFAULT_CONFIG)
    tree = _read_tree(path)
    for item in overrides or []:
        _set_dotted(tree, *parse_override(item))
    return validate_config(tree, str(path))


def import_modules(names: Any, origin: str) -> None:
    """Import the config's ``imports`` (modules that register loss terms or model families), so that it can name them."""
    for name in names if isinstance(names, list) else []:
        try:
            importlib.import_module(str(name))
        except ImportError as exc:
            raise IgkdError(
                f"imports in {origin}: cannot import '{name}' ({exc}); put its folder on PYTHONPATH or install its package"
            ) from None


def validate_config(tree: dict[str, Any], origin: str = "config") -> RunConfig:
    """Import the config's ``imports``, then validate it; the first problem becomes a one-line :class:`IgkdError`."""
    import_modules(tree.get("imports"), origin)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        section = isinstance(err.get("input"), dict)  # a check across a section's keys
        given = f" (got {err['input']!r})" if "input" in err and not section else ""
        setting = f"{where}.<key>" if section else where
        raise IgkdError(
            f"invalid config value '{where}' in {origin}{given}: {err['msg']}; fix it in the file or with --set {setting}=..."
        ) from None
