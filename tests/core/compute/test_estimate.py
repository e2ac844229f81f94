from lovecs_core.compute.estimate import (
    CALIBRATION,
    STARTING,
    about,
    adapt_seconds,
    classify_seconds,
    describe_estimate,
    stage_plan,
)


def test_estimates_grow_with_preset_and_size():
    small, big = 1_000_000, 16_000_000
    assert (
        adapt_seconds("fast", small)
        < adapt_seconds("standard", small)
        <= adapt_seconds("paper", small)
    )
    assert adapt_seconds("fast", big) > adapt_seconds("fast", small)
    assert adapt_seconds("fast", small, gsd_ratio=3.0) > adapt_seconds("fast", small)
    # start-up is paid once; the rest grows with the pixels
    startup = stage_plan("predict", None, small, cores=2)[STARTING]
    assert (classify_seconds(big, cores=2) - startup) > 10 * (
        classify_seconds(small, cores=2) - startup
    )


def test_the_plan_comes_from_the_calibration_table_and_the_device():
    table = dict(CALIBRATION, classify_s_per_mpix=2 * CALIBRATION["classify_s_per_mpix"])
    slow = stage_plan("predict", None, 4_000_000, cores=2, table=table)
    plain = stage_plan("predict", None, 4_000_000, cores=2)
    assert slow["mapping"] > plain["mapping"]
    assert stage_plan("predict", None, 4_000_000, cores=8)["mapping"] < plain["mapping"]
    adapt = stage_plan("adapt", "standard", 1_000_000, cores=2)
    iterations = 1500 * CALIBRATION["adapt_s_per_iteration"]["standard"]
    assert abs(adapt["training"] - iterations) < 1e-6


def test_describe_estimate_text_differs_with_the_scene():
    """The issue saw "about 3 min" for a 1.0 and a 3.8 MPix scene alike."""
    one = describe_estimate("fast", 1_000_000, gpu=False, cores=2)
    four = describe_estimate("fast", 3_800_000, gpu=False, cores=2)
    assert four.startswith("3.8 MPix on this CPU: adapting (fast) about") and one != four
    assert "GPU" in describe_estimate("paper", 3_800_000, gpu=True)
    assert describe_estimate("unknown", 10, gpu=False) == ""
    assert about(42) == "about 40 s" and about(400) == "about 7 min"
    assert about(7800) == "about 2 h 10 min"
