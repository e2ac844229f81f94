"""Time left during a run, from timings carried by synthetic progress events (no wall clock)."""

from __future__ import annotations

from lovecs_core.compute.estimate import passes, stage_plan
from lovecs_qgis.time_left import Smoothed, TimeLeft


def test_estimating_until_the_first_tiles_are_timed_then_extrapolated():
    left = TimeLeft({"starting": 10.0, "mapping": 100.0})
    left.update("mapping", 0.0, at=20.0)
    left.update("mapping", 0.01, at=22.0)
    assert left.seconds(22.0) is None  # one tile timed: still estimating
    for i in range(2, 5):
        left.update("mapping", i / 100, at=20.0 + 2 * i)
    # 2 s per 1 % of the tiles, 96 % to go: 192 s, whatever the plan said (100 s)
    assert abs(left.seconds(28.0) - 192.0) < 1e-6
    assert abs(left.seconds(30.0) - 190.0) < 1e-6  # counts down between events


def test_stages_not_reached_yet_scale_with_the_measured_pace():
    plan = {"starting": 10.0, "training": 100.0, "mapping": 50.0}
    left = TimeLeft(plan)
    for i in range(11):  # training runs at twice its planned seconds: 2 s per 1 %
        left.update("training", i / 100, at=2.0 * i)
    seconds = left.seconds(20.0)
    assert abs(seconds - (90 * 2.0 + 50.0 * 2)) < 1e-6  # mapping: planned x 2


def test_time_left_does_not_climb_when_slow_pseudo_labelling_begins():
    """Training at 1 s an iteration, then a pseudo-labelling pass of 120 s: what is shown keeps
    counting down or rises slowly; it never jumps up (the issue saw "about 2 h 12 min")."""
    plan = stage_plan("adapt", "fast", 3_800_000, cores=2)
    left = TimeLeft(plan, passes("adapt", "fast"))
    shown = Smoothed()
    figures: list[float] = []
    t = 0.0

    def tick(stage: str, fraction: float) -> None:
        left.update(stage, fraction, at=t)
        figure = shown.update(left.seconds(t), t)
        if figure is not None:
            figures.append(figure)

    for i in range(1, 61):  # round 1: 60 iterations of 120
        t += 1.0
        tick("training", i / 120)
    for n in range(1, 25):  # round 2's pseudo-labels: 24 tiles, 5 s each
        t += 5.0
        tick("pseudo-labels", n / 24)
    for i in range(61, 121):
        t += 1.0
        tick("training", i / 120)
    assert figures, "no estimate after 60 timed iterations"
    rises = [b - a for a, b in zip(figures, figures[1:])]
    assert max(rises) <= 0.02 * 5 * max(figures) + 1e-6  # at most 2 % a second
    assert max(figures) < 2 * figures[0]


def test_a_new_pass_of_a_repeated_stage_is_counted():
    left = TimeLeft({"pseudo-labels": 40.0, "training": 100.0}, {"pseudo-labels": 2})
    for i in range(5):
        left.update("pseudo-labels", i / 4, at=float(i))  # 4 s a pass (planned 20)
    left.update("training", 0.5, at=5.0)
    assert left.stages["pseudo-labels"].passes_done == 1
    # one pass left at 4 s, training (unmeasured) at its plan x 0.2 (4 s / 20 s), half done
    assert abs(left.seconds(5.0) - (4.0 + 0.5 * 100 * 0.2)) < 1e-6
