"""Where a run's time goes: the phase clock, the time line and the process's age."""

import pytest


def test_phase_clock_and_the_time_line():
    from resnet_cifar.utils import timings
    now = [100.0]
    clock = timings.PhaseClock(clock=lambda: now[0])
    with clock.phase("data"):
        now[0] += 1.5
    clock.add("training", 30.0)
    with clock.phase("training"):
        now[0] += 2.0
    now[0] += 40.0  # 30 s of training were added without the clock moving: other = 43.5 - 33.5
    summary = clock.summary(before_run_s=4.25)
    assert (summary["data_s"], summary["training_s"], summary["report_s"]) == (1.5, 32.0, 0.0)
    assert (summary["other_s"], summary["run_s"], summary["before_run_s"]) == (10.0, 43.5, 4.25)
    assert timings.format_timings(summary) == (
        "time: 47.8 s (start-up 4.2 s, then data 1.5, setup 0.0, training 32.0, evaluation 0.0, checkpoints 0.0, "
        "curves 0.0, report 0.0, other 10.0)")
    assert timings.format_timings({**summary, "before_run_s": None}).startswith("time: 43.5 s (data 1.5, ")


def test_process_age_reads_proc_and_is_none_without_it(tmp_path):
    import os

    from resnet_cifar.utils import timings
    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "self").mkdir()
    fields = ["S"] + ["0"] * 18 + [str(50 * ticks)] + ["0"] * 30  # field 22 (starttime): 50 s after boot
    (tmp_path / "self" / "stat").write_text("123 (a name) with) spaces) " + " ".join(fields))
    (tmp_path / "uptime").write_text("80.00 10.00\n")
    assert timings.process_age_s(tmp_path) == pytest.approx(30.0)
    assert timings.process_age_s(tmp_path / "missing") is None
