from lovecs_core.compute.estimate import adapt_seconds, classify_seconds, describe_estimate


def test_estimates_grow_with_preset_and_size():
    small, big = 1_000_000, 16_000_000
    assert (
        adapt_seconds("fast", small)
        < adapt_seconds("standard", small)
        < adapt_seconds("paper", small)
    )
    assert adapt_seconds("fast", big) > adapt_seconds("fast", small)
    assert adapt_seconds("fast", small, gsd_ratio=3.0) > adapt_seconds("fast", small)
    assert classify_seconds(big) == 16 * classify_seconds(small)


def test_describe_estimate_text():
    text = describe_estimate("fast", 3_800_000, gpu=False)
    assert text.startswith("3.8 MPix: adapting takes about") and "(fast)" in text
    assert "GPU" in describe_estimate("paper", 3_800_000, gpu=True)
    assert describe_estimate("unknown", 10, gpu=False) == ""
