"""Stage identities pinned: the digits main job's (those of `results/digits-demo`) and the CIFAR-10 CPU campaign's run
folders. A change of code that moves them would re-run finished work; a change that must move them updates these on
purpose, and says so in the changelog."""

from __future__ import annotations

from dataclasses import asdict

import yaml

import igkd.artifacts.identity as identity
from igkd.artifacts.identity import stage_identities
from igkd.config import builtin_config_path, load_config
from igkd.data.prepare import prepare_data
from igkd.experiments.plan import PlanOptions, plan_jobs

K5 = "mobilenetv2_cifar:k=5"  # the paper's student, 4.12x fewer parameters
# The shared teacher's SHA-256 (shared/models/README.md) and the content digest of CIFAR-10 (JPEG q75) as igkd reads it
CAMPAIGN_TEACHER = "5d25ac6b6c689f27dd135facfc25e3d5a621c8d85a8567d327f735d4802b2b77"
CIFAR10_JPEG = "02bbb7317e2bda88169254db183c922a97938dc1103196bd5bf6df58cef64ec6"
CAMPAIGN_RUNS = [  # results/cifar10-jpeg-cpu/campaign.sh's calls, in its order
    "Student-mobilenetv2_cifar_k5-seed0-ea95356b",
    "KD-mobilenetv2_cifar_k5-seed0-3ebcfccd",
    "Student-mobilenetv2_cifar_width0.5-seed0-48fe3b8c",
    "IG-mobilenetv2_cifar_k5-seed0-51d07a90",
    "KD_IG-mobilenetv2_cifar_k5-seed0-5fb1707b",
    "KD_IG-shuffled-mobilenetv2_cifar_k5-seed0-9f53271a",
    "KD_IG-mobilenetv2_cifar_width0.5-seed0-64286657",
    "Student-mobilenetv2_cifar_k5-seed1-3230f596",
    "KD-mobilenetv2_cifar_k5-seed1-b5c85bd7",
    "Student-mobilenetv2_cifar_width0.5-seed1-b09d2bcc",
    "IG-mobilenetv2_cifar_k5-seed1-46ba2e8c",
    "KD_IG-mobilenetv2_cifar_k5-seed1-690d052c",
    "KD_IG-shuffled-mobilenetv2_cifar_k5-seed1-b4301974",
    "KD_IG-mobilenetv2_cifar_width0.5-seed1-95973f67",
    "Student-mobilenetv2_cifar_k5-seed2-1243192d",
    "KD-mobilenetv2_cifar_k5-seed2-4072e563",
    "Student-mobilenetv2_cifar_width0.5-seed2-defa4895",
    "IG-mobilenetv2_cifar_k5-seed2-38f79c26",
    "KD_IG-mobilenetv2_cifar_k5-seed2-eaaeb476",
    "KD_IG-shuffled-mobilenetv2_cifar_k5-seed2-bbc9ab81",
    "KD_IG-mobilenetv2_cifar_width0.5-seed2-e9e27109",
]
CAMPAIGN_EXTRA_RUNS = [  # then, seed by seed, the noise control and the extra arms (these as planned at e6c41d4)
    "KD_IG-noise-mobilenetv2_cifar_k5-seed0-fdcced63",
    "AT-mobilenetv2_cifar_k5-seed0-93f75dc2",
    "KD_AT-mobilenetv2_cifar_k5-seed0-63c82ea8",
    "KD_IG_AT-mobilenetv2_cifar_k5-seed0-47619ebc",
    "KD_EXPL-mobilenetv2_cifar_k5-seed0-02f4a311",
    "KD_IG-noise-mobilenetv2_cifar_k5-seed1-cc26e4e1",
    "AT-mobilenetv2_cifar_k5-seed1-36582d44",
    "KD_AT-mobilenetv2_cifar_k5-seed1-3d527dbc",
    "KD_IG_AT-mobilenetv2_cifar_k5-seed1-bef806e4",
    "KD_EXPL-mobilenetv2_cifar_k5-seed1-fc799868",
    "KD_IG-noise-mobilenetv2_cifar_k5-seed2-93f53993",
    "AT-mobilenetv2_cifar_k5-seed2-6ea4389c",
    "KD_AT-mobilenetv2_cifar_k5-seed2-666cd016",
    "KD_IG_AT-mobilenetv2_cifar_k5-seed2-a299dc9c",
    "KD_EXPL-mobilenetv2_cifar_k5-seed2-fa71e911",
]

CAMPAIGN_SWEEP_RUNS = [  # last, the compression sweep's students other than k=5 (its k=5 runs are the ablation's seed 0)
    "Student-mobilenetv2_cifar_k3-seed0-6a121b42",
    "KD-mobilenetv2_cifar_k3-seed0-17d4b401",
    "IG-mobilenetv2_cifar_k3-seed0-e1ab20b5",
    "KD_IG-mobilenetv2_cifar_k3-seed0-4284ad29",
    "Student-mobilenetv2_cifar_k7-seed0-e6f10b98",
    "KD-mobilenetv2_cifar_k7-seed0-61fbbbca",
    "IG-mobilenetv2_cifar_k7-seed0-82830f54",
    "KD_IG-mobilenetv2_cifar_k7-seed0-d809f1ec",
    "Student-mobilenetv2_cifar_k9-seed0-556a0427",
    "KD-mobilenetv2_cifar_k9-seed0-325bec8d",
    "IG-mobilenetv2_cifar_k9-seed0-4291f2d9",
    "KD_IG-mobilenetv2_cifar_k9-seed0-4b2019b7",
    "Student-mobilenetv2_cifar_k11-seed0-eff0cf8a",
    "KD-mobilenetv2_cifar_k11-seed0-9e222e26",
    "IG-mobilenetv2_cifar_k11-seed0-6b0474e6",
    "KD_IG-mobilenetv2_cifar_k11-seed0-0a39c296",
    "Student-mobilenetv2_cifar_k13-seed0-f985b568",
    "KD-mobilenetv2_cifar_k13-seed0-c3dda5e4",
    "IG-mobilenetv2_cifar_k13-seed0-2f5a14b8",
    "KD_IG-mobilenetv2_cifar_k13-seed0-ebb78e3a",
    "Student-mobilenetv2_cifar_k15-seed0-5864188c",
    "KD-mobilenetv2_cifar_k15-seed0-9afcd237",
    "IG-mobilenetv2_cifar_k15-seed0-b5f88eb1",
    "KD_IG-mobilenetv2_cifar_k15-seed0-2c816c90",
    "Student-mobilenetv2_cifar_k17-seed0-05af003a",
    "KD-mobilenetv2_cifar_k17-seed0-308e2ca4",
    "IG-mobilenetv2_cifar_k17-seed0-ff577661",
    "KD_IG-mobilenetv2_cifar_k17-seed0-9806b171",
]


def test_the_digits_main_job_keeps_its_identities():
    cfg = load_config("digits")
    ids = stage_identities(cfg, prepare_data(cfg, write_cache=False).content_digest)
    assert asdict(ids) == {
        "data": "b4c6700d9261c9b7dff0970f8e36ab33c28de3b1d277cbe0141afb5449a50d76",
        "teacher": "cc92df84b762f043c864f801f2bedeeaf12d3ede9a7a90892d0bc43dd48e1e42",
        "maps": "54ddab672cfe4404a28043edfdb62be1435203fcb14da1034633a81197541f63",
        "student": "fee4fd80350ac1057c8a9a08b40562590d020ce6b2108876e3dd6d6649455e50",
    }


def test_the_cifar10_cpu_campaign_keeps_its_run_folders(monkeypatch):
    monkeypatch.setattr(identity, "checkpoint_digest", lambda path: CAMPAIGN_TEACHER)  # the file's bytes, without the file
    k5 = load_config("cifar10_jpeg_cpu", ["teacher.checkpoint=teacher.pt"])
    width = load_config("cifar10_jpeg_cpu", ["teacher.checkpoint=teacher.pt", "student.arch=mobilenetv2_cifar:width=0.5"])
    assert stage_identities(k5, CIFAR10_JPEG).maps == "83036bbd951a03f5d644c27937b784517122f2ca24b02d963b8db61db30b08bf"
    calls = [(k5, ("Student", "KD"), ()), (width, ("Student",), ()), (k5, ("IG", "KD_IG"), ("shuffled",)), (width, ("KD_IG",), ())]
    runs = [
        job.run_id
        for seed in (0, 1, 2)
        for cfg, methods, controls in calls
        for job in plan_jobs("ablation", cfg, PlanOptions(seeds=(seed,), methods=methods, controls=controls), CIFAR10_JPEG)
    ]
    assert runs == CAMPAIGN_RUNS
    extra = [(("KD_IG-noise",), None), (("AT", "KD_AT", "KD_IG_AT", "KD_EXPL"), ())]
    runs = [
        job.run_id
        for seed in (0, 1, 2)
        for methods, controls in extra
        for job in plan_jobs("ablation", k5, PlanOptions(seeds=(seed,), methods=methods, controls=controls), CIFAR10_JPEG)
    ]
    assert runs == CAMPAIGN_EXTRA_RUNS
    sweep = plan_jobs("sweep", k5, PlanOptions(seeds=(0,), blocks=(3, 5, 7, 9, 11, 13, 15, 17), widths=()), CIFAR10_JPEG)
    assert [job.run_id for job in sweep if job.arch != K5] == CAMPAIGN_SWEEP_RUNS
    assert [job.run_id for job in sweep if job.arch == K5] == [CAMPAIGN_RUNS[i] for i in (0, 1, 3, 4)]  # reused, not trained again


def test_the_campaign_config_names_its_speed_settings():
    """A default that changes must not move the campaign: its file names amp, channels_last and IG's precision and layout."""
    tree = yaml.safe_load(builtin_config_path("cifar10_jpeg_cpu").read_text())
    assert {"amp": "bf16", "channels_last": True} == {k: tree["student"]["train"][k] for k in ("amp", "channels_last")}
    assert {"precision": "bfloat16", "channels_last": True} == {k: tree["attribution"][k] for k in ("precision", "channels_last")}
    # every model under all 9 corruptions x 5 severities, as the issue asks, evaluated unfolded as its first models were
    assert tree["robustness"] == {"enabled": True, "fold_batchnorm": False}
