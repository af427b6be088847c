"""``auto`` on the CPU: bf16 autocast where the CPU computes bf16 natively, channels_last always; what info, the dry run
and the long-run note say about it."""

from __future__ import annotations

import pytest
import torch

from conftest import run_cli, sets, tiny_overrides
from igkd.config import load_config
from igkd.runtime import device as runtime
from igkd.runtime.info import describe_info, environment_report
from igkd.runtime.progress import long_run_hint
from igkd.runtime.speed import settings_off, training_settings

CPU = torch.device("cpu")


@pytest.fixture(params=[True, False], ids=["native-bf16", "avx2-only"])
def bf16_cpu(request, monkeypatch) -> bool:
    """This CPU as one with native bf16 (AVX-512 BF16 or AMX) and as one without, whatever it really is."""
    monkeypatch.setattr(runtime, "_cpu_has_native_bf16", lambda: request.param)
    return request.param


def test_auto_is_bf16_only_where_the_cpu_computes_it_natively_and_channels_last_everywhere(bf16_cpu):
    assert runtime.autocast_dtype(CPU, "auto") == (torch.bfloat16 if bf16_cpu else None)
    assert runtime.autocast_dtype(CPU, "bf16") == torch.bfloat16 and runtime.autocast_dtype(CPU, "off") is None
    assert runtime.use_channels_last(CPU, "auto") and not runtime.use_channels_last(CPU, "off")
    cfg = load_config("digits")
    assert training_settings(cfg.student.train, CPU) == {"amp": "bf16" if bf16_cpu else "off", "channels_last": "on"}
    auto = runtime.auto_settings(CPU)
    assert auto["amp"] == ("bf16" if bf16_cpu else "off") and ("emulated" in auto["amp_why"]) != bf16_cpu


def test_settings_left_off_are_named_as_the_set_that_turns_them_on(bf16_cpu):
    slow = load_config("digits", ["student.train.amp=off", "teacher.train.channels_last=off", "attribution.channels_last=off"])
    off = settings_off(slow, CPU, ("teacher", "maps", "student"))
    expected = ["teacher.train.channels_last=auto", "attribution.channels_last=auto"]
    if bf16_cpu:
        expected = [
            "teacher.train.channels_last=auto",
            "student.train.amp=auto",
            "attribution.channels_last=auto",
            "attribution.precision=bfloat16 (moves the maps)",
        ]
    assert off == expected
    assert settings_off(load_config("digits"), CPU, ("teacher", "student")) == []  # the defaults leave nothing off
    imported = load_config("digits", ["teacher.checkpoint=t.pt", "teacher.train.amp=off"])
    assert settings_off(imported, CPU, ("teacher",)) == []  # an imported teacher is not trained
    hint = long_run_hint(7200, "cpu", off)
    assert hint is not None and hint.endswith("faster settings left off: " + ", ".join(f"--set {s}" for s in off))
    assert long_run_hint(7200, "cuda", off) is None and long_run_hint(60, "cpu", off) is None


def test_info_says_what_auto_chose_and_why(bf16_cpu):
    lines: list[str] = []
    describe_info(environment_report(), lines.append)
    (line,) = [text for text in lines if text.startswith("auto speed settings")]
    assert f"amp {'bf16' if bf16_cpu else 'off'} for training and evaluation (" in line
    assert "channels_last on" in line and "evaluation batch 64" in line


def test_an_unset_evaluation_batch_is_small_on_the_cpu_and_large_on_a_gpu_and_a_set_one_wins():
    assert runtime.eval_batch_size(CPU) == runtime.CPU_EVAL_BATCH == 64
    assert runtime.eval_batch_size(torch.device("cuda")) == runtime.GPU_EVAL_BATCH == 1024
    assert runtime.eval_batch_size(CPU, 5) == 5 and runtime.eval_batch_size(torch.device("cuda"), 5) == 5
    assert load_config("digits").student.train.eval_batch_size is None


def test_predict_logits_takes_the_devices_evaluation_batch_when_unset_and_gives_the_same_logits(monkeypatch):
    from igkd.training import loop

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    images = torch.randint(0, 256, (140, 3, 6, 6), dtype=torch.uint8)
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))
    default = loop.predict_logits(model, images, None, CPU, amp="off")
    assert sizes == [64, 64, 12]
    sizes.clear()
    torch.testing.assert_close(loop.predict_logits(model, images, 140, CPU, amp="off"), default, rtol=1e-6, atol=1e-6)
    assert sizes == [140]


def test_dry_run_shows_each_stages_settings_and_what_auto_means(tmp_path, capsys, monkeypatch):
    args = ["run", *sets(tiny_overrides(tmp_path) + ["student.train.amp=off"]), "--dry-run"]
    code, out, err = run_cli([*args, "--json"], capsys, monkeypatch)
    assert code == 0, err
    import json

    plan = json.loads(out)
    bf16 = "bf16" if runtime.native_bf16(CPU) else "off"
    assert [s["settings"] for s in plan["stages"]] == [
        {"amp": bf16, "channels_last": "on"},
        {"precision": "float32", "channels_last": "on"},
        {"amp": "off", "channels_last": "on"},
    ]
    assert plan["provenance"]["environment"]["cpu"] and "--dry-run" in plan["provenance"]["command"]
    assert plan["auto_settings"]["amp"] == bf16 and ("student.train.amp=auto" in plan["settings_off"]) == (bf16 == "bf16")
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 0 and f"auto on cpu: amp {bf16}" in " ".join(out.split()) and "evaluation batch 64" in " ".join(out.split())
