"""What a user sees while igkd works: bounded progress lines with ETAs, the projection, igkd info, TensorBoard."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console

from conftest import TINY_STUDENT, run_cli, sets, tiny_overrides
from igkd.config import TrainConfig
from igkd.losses import CrossEntropyTerm, LossInputs, WeightedLoss
from igkd.models.registry import build_model
from igkd.runtime.progress import StageProgress
from igkd.training.inputs import batch_maker
from igkd.training.loop import FitPlan, fit


def test_progress_of_a_run_outside_a_terminal_is_a_few_lines_with_etas(tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(["teacher", *sets(tiny_overrides(tmp_path) + ["teacher.train.epochs=4"])], capsys, monkeypatch)
    assert code == 0, err
    lines = out.splitlines()
    steps = [line for line in lines if line.startswith("teacher: step ")]
    assert 5 <= len(steps) <= 11  # about one line per tenth of the stage's 76 steps, not one per step
    assert steps[-1].startswith("teacher: step 76/76 (100%)") and all("stage ETA" in line and "img/s" in line for line in steps)
    assert any("epoch ETA" in line for line in steps)
    assert sum(line.startswith("teacher: projected ") and "for the whole run" in line for line in lines) == 1
    assert any(line.startswith("plan: teacher run") for line in lines)


def _fit_with(progress: StageProgress, tmp_path) -> None:
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(64) % 10
    model = build_model(TINY_STUDENT, 10)
    loss = lambda net, batch: WeightedLoss([(CrossEntropyTerm(), 1.0)])(LossInputs(net(batch.inputs), batch.labels))  # noqa: E731
    fit(
        FitPlan(
            model,
            torch.arange(64),
            batch_maker(images, labels, 0, False),
            loss,
            images[:8],
            labels[:8],
            TrainConfig(epochs=3, batch_size=8, optimizer="adam", lr=1e-3, schedule="none"),
            torch.device("cpu"),
            0,
            tmp_path,
            lambda *_: None,
            step_progress=progress,
        )
    )


class SlowClock:
    """A clock that moves ``step`` seconds each time it is read: every training step looks slow."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_run_projected_past_an_hour_on_a_cpu_says_so_with_the_way_out(tmp_path):
    out = io.StringIO()
    _fit_with(StageProgress(Console(file=out, width=300), "student", 8, "cpu", later_s=600, clock=SlowClock(600.0)), tmp_path)
    text = out.getvalue()
    projection = [line for line in text.splitlines() if line.startswith("student: projected ")]
    assert len(projection) == 1 and " h for this stage" in projection[0]
    assert "note: projected" in text and "use a GPU, fewer epochs" in text
    quick = io.StringIO()
    _fit_with(StageProgress(Console(file=quick, width=300), "student", 8, "cpu", clock=SlowClock(0.01)), tmp_path / "quick")
    assert "student: projected " in quick.getvalue() and "note:" not in quick.getvalue()
    on_gpu = io.StringIO()
    _fit_with(StageProgress(Console(file=on_gpu, width=300), "student", 8, "cuda", clock=SlowClock(60.0)), tmp_path / "gpu")
    assert "note:" not in on_gpu.getvalue()  # a long GPU run needs no hint


def test_igkd_info_prints_what_matters_for_a_run(capsys, monkeypatch, tmp_path):
    (tmp_path / "cifar10-jpeg-train.tar.gz").write_bytes(b"")
    monkeypatch.setenv("IGKD_DATA_DIR", str(tmp_path))
    code, out, _ = run_cli(["info", "--json"], capsys, monkeypatch)
    report = json.loads(out)
    assert code == 0 and report["torch"] == torch.__version__ and report["device"] == "cpu"
    assert {"model", "threads", "avx512", "bf16", "amx"} <= set(report["cpu"]) and report["cpu"]["threads"] == torch.get_num_threads()
    assert report["cuda"]["available"] is False and report["cuda"]["devices"] == []
    assert report["extras"] == {"deploy": True, "tensorboard": True, "test": True, "timm": True, "captum": True}
    assert report["data"]["value"] == str(tmp_path) and report["data"]["found"] == ["cifar10-jpeg-train.tar.gz"]
    code, out, _ = run_cli(["info"], capsys, monkeypatch)
    text = " ".join(out.split())
    for needle in (
        f"torch {torch.__version__}",
        "device: cpu",
        "AVX-512",
        "BF16",
        "no GPU visible",
        "deploy installed",
        f"$IGKD_DATA_DIR={tmp_path}: cifar10-jpeg-train.tar.gz",
    ):
        assert needle in text


def test_tensorboard_option_writes_event_files_tensorboard_reads(tmp_path, capsys, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = tiny_overrides(tmp_path) + ["report.tensorboard=true", "report.examples=0", "student.train.epochs=2"]
    code, _, err = run_cli(["distill", *sets(overrides)], capsys, monkeypatch)
    assert code == 0, err
    (student_log,) = (tmp_path / "runs" / "tiny" / "students").glob("*/tensorboard")
    events = EventAccumulator(str(student_log), size_guidance={"images": 0}).Reload()
    assert [e.step for e in events.Scalars("val_accuracy")] == [1, 2]
    metrics = [json.loads(line) for line in (student_log.parent / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("train_loss")] == pytest.approx([row["train_loss"] for row in metrics])
    assert {"ig/images", "ig/maps", "ig/overlays"} <= set(events.Tags()["images"])
    teacher = EventAccumulator(str(tmp_path / "runs" / "tiny" / "teacher" / "tensorboard")).Reload()
    assert [e.step for e in teacher.Scalars("val_accuracy")] == [1]


def test_tensorboard_without_its_extra_is_one_error_line_before_anything(tmp_path, capsys, monkeypatch):
    import igkd.runtime.extras as extras

    real = extras._import
    monkeypatch.setattr(extras, "_import", lambda module: None if module == "tensorboard" else real(module))
    code, _, err = run_cli(["run", *sets(tiny_overrides(tmp_path) + ["report.tensorboard=true"])], capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "pip install 'igkd[tensorboard]'" in lines[0]
    assert not (tmp_path / "runs").exists()


class ManualClock:
    """A clock that reads what the test set."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rates_and_etas_soon_stop_counting_a_pause():
    clock = ManualClock()
    progress = StageProgress(Console(quiet=True), "student", 128, clock=clock, project=False).start(2000)

    def steps(first: int, last: int) -> None:
        for done in range(first, last + 1):
            clock.now += 0.5
            progress.advance(done)

    steps(1, 100)
    assert progress.seconds_per_step() == pytest.approx(0.5)
    clock.now += 1000.0  # stopped (SIGSTOP) while another job ran, then continued
    steps(101, 110)
    assert progress.seconds_per_step() > 0.5  # the pause is in the window: the rate reads low at first
    steps(111, 1000)
    assert progress.seconds_per_step() == pytest.approx(0.5) and progress.eta_s() == pytest.approx(0.5 * 1000)


def test_a_stopped_job_reads_its_running_speed_as_soon_as_it_continues(monkeypatch):
    """The default clock is running time: a stop of 10 minutes (SIGSTOP) is not in the rate at all, where wall time
    read 0 img/s and an ETA of days for the first 5 minutes after the job continued."""
    from igkd.runtime import clock as running_clock

    wall = ManualClock()
    cpu = ManualClock()
    watch = running_clock.StopWatch(wall, cpu)
    monkeypatch.setattr(running_clock, "_watch", watch)
    progress = StageProgress(Console(quiet=True), "student", 128, project=False).start(2000)
    for done in range(1, 101):
        wall.now += 0.5
        cpu.now += 1.0  # two threads busy
        progress.advance(done)
    wall.now += 600.0  # stopped: no CPU time
    watch.check()  # the watcher thread's first tick as the job continues
    wall.now += 0.5
    cpu.now += 1.0
    progress.advance(101)
    assert progress.seconds_per_step() == pytest.approx(0.5) and progress.eta_s() == pytest.approx(0.5 * 1899)
