"""``igkd info``: what matters for a run on this machine, in one place."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import igkd
from igkd.runtime.device import auto_settings, cpu_description, describe_auto_settings, resolve_device
from igkd.runtime.extras import EXTRAS, installed

DATA_ENV = "IGKD_DATA_DIR"
KNOWN_DATA = (
    "cifar10-jpeg",
    "cifar10-jpeg-train.tar.gz",
    "cifar10-jpeg-test.tar.gz",
    "tiny-imagenet-cifar10",
    "tiny-imagenet-cifar10.tar.gz",
)


def _cuda_devices() -> list[dict[str, Any]]:
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append(
            {
                "index": index,
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "bf16": torch.cuda.is_bf16_supported() if index == 0 else None,
            }
        )
    return devices


def _data_dir() -> dict[str, Any]:
    value = os.environ.get(DATA_ENV)
    if not value:
        return {"variable": DATA_ENV, "value": None, "found": [], "note": f"unset: the cifar10_jpeg config needs {DATA_ENV}"}
    root = Path(value).expanduser()
    if not root.is_dir():
        return {"variable": DATA_ENV, "value": value, "found": [], "note": f"'{root}' is not a folder"}
    found = [name for name in KNOWN_DATA if (root / name).exists()]
    others = sorted(p.name for p in root.iterdir() if p.name not in KNOWN_DATA and not p.name.startswith("."))
    return {"variable": DATA_ENV, "value": value, "found": found, "other_entries": others[:20]}


def environment_report() -> dict[str, Any]:
    """Versions, the device igkd would use, CPU capabilities, CUDA devices, installed extras and the data folder."""
    import torchvision

    cpu = cpu_description()
    flags = cpu["cpu_flags"].split()
    return {
        "igkd": igkd.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(resolve_device("auto")),
        "auto_settings": auto_settings(resolve_device("auto")),
        "cpu": {
            "model": cpu["cpu"],
            "threads": torch.get_num_threads(),
            "cores": os.cpu_count(),
            "avx2": "avx2" in flags,
            "avx512": "avx512f" in flags,
            "bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
            "amx": "amx_tile" in flags,
            "flags": cpu["cpu_flags"],
        },
        "cuda": {"available": torch.cuda.is_available(), "version": torch.version.cuda, "devices": _cuda_devices()},
        "extras": {name: installed(name) for name in EXTRAS},
        "data": _data_dir(),
    }


def describe_info(report: dict[str, Any], show: Callable[[str], None]) -> None:
    """The report as readable lines."""
    cpu, cuda = report["cpu"], report["cuda"]
    show(f"igkd {report['igkd']}, torch {report['torch']}, torchvision {report['torchvision']}")
    show(f"device: {report['device']} (what device=auto picks)")
    yes = lambda flag: "yes" if flag else "no"  # noqa: E731
    show(
        f"cpu: {cpu['model']}, {cpu['cores']} cores, torch uses {cpu['threads']} threads; AVX2 {yes(cpu['avx2'])}, "
        f"AVX-512 {yes(cpu['avx512'])}, BF16 {yes(cpu['bf16'])}, AMX {yes(cpu['amx'])}"
    )
    auto = report["auto_settings"]
    show(
        f"auto speed settings on {report['device']}: {describe_auto_settings(auto)}; "
        "IG maps in float32 unless attribution.precision=bfloat16 (faster, moves the maps)"
    )
    if cuda["devices"]:
        for gpu in cuda["devices"]:
            show(f"cuda:{gpu['index']}: {gpu['name']}, {gpu['memory_gib']} GiB (CUDA {cuda['version']})")
    else:
        show(f"cuda: no GPU visible (torch built for CUDA {cuda['version'] or 'none'})")
    show(
        "extras: "
        + ", ".join(f"{name} {'installed' if ok else 'missing'}" for name, ok in report["extras"].items())
        + " (pip install 'igkd[NAME]')"
    )
    data = report["data"]
    found = ", ".join(data["found"]) or "none of the shared data sets"
    show(f"data: ${data['variable']}={data['value'] or '(unset)'}: {data.get('note') or found}")
