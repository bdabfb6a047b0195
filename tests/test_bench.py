"""dann-bench: the combining of interleaved rounds, and one real end-to-end run on random images."""

import json

import pytest

from dann import bench


def _r(fw, fl, dl):
    return {"framework": {"ms_per_step": fw}, "floor": {"ms_per_step": fl}, "dataloader": {"ms_per_step": dl}}


def test_rounds_combine_to_medians_and_paired_ratios():
    # the machine slows down by 2x in round 2: paired ratios stay 1.2 and 1.5, medians per loop move
    rounds = [_r(12.0, 10.0, 18.0), _r(24.0, 20.0, 36.0), _r(13.2, 11.0, 19.8)]
    r = bench._combine(rounds, ["framework", "floor", "dataloader"])
    assert r["framework"]["ms_per_step"] == 13.2 and r["framework"]["ms_per_step_rounds"] == [12.0, 24.0, 13.2]
    assert r["floor"]["ms_per_step"] == 11.0
    assert r["framework_over_floor"] == pytest.approx(1.2)
    assert r["dataloader_over_framework"] == pytest.approx(1.5)
    # a failed round is left out, not counted as zero
    rounds[1]["floor"] = {"error": "boom"}
    r = bench._combine(rounds, ["framework", "floor", "dataloader"])
    assert r["framework_over_floor"] == pytest.approx(1.2) and r["floor"]["ms_per_step_rounds"][1] is None


def test_bad_repeat_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench.cli(["--repeat", "0"])
    assert "--repeat 0" in capsys.readouterr().err


@pytest.mark.parametrize("steps, warmup", [(5, 50), (50, 50), (10, -1)])
def test_steps_not_beyond_the_warmup_are_refused(capsys, steps, warmup):
    """--steps counts the warm-up: a window that never opens used to end in an AttributeError."""
    with pytest.raises(SystemExit):
        bench.cli(["--steps", str(steps), "--warmup", str(warmup)])
    err = capsys.readouterr().err
    assert f"--steps {steps} --warmup {warmup}" in err and "counts the warm-up" in err


@pytest.mark.slow
def test_bench_end_to_end_on_random_images(tmp_path, monkeypatch):
    monkeypatch.setenv("DANN_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "b.json"
    assert bench.cli(["--pairs", "mnist_mnistm", "--synthetic", "--steps", "8", "--warmup", "3", "--workers", "0",
                      "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    r = res["pairs"]["mnist_mnistm"]
    for loop in ("framework", "dataloader", "floor"):
        assert r[loop]["ms_per_step"] > 0 and r[loop]["images_per_s"] > 0 and r[loop]["synthetic_data"], r[loop]
        assert r[loop]["sys_ms_per_step"] >= 0 and r[loop]["faults_per_step"] >= 0
    assert r["framework_over_floor"] == pytest.approx(r["framework"]["ms_per_step"] / r["floor"]["ms_per_step"])
    assert r["framework"]["eval_s"] > 0  # one evaluation as a run makes it (the stall a lone GPU run hit)
    assert res["device"].startswith(("cpu", "NVIDIA"))
    assert r["framework"]["speed"]["keep_freed_memory"] is True and r["floor"]["speed"]["keep_freed_memory"] is True


def test_unknown_method_is_refused_naming_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        bench.cli(["--methods", "dann", "dnn"])
    err = capsys.readouterr().err
    assert "--methods: unknown method 'dnn'" in err and "mcd" in err


@pytest.mark.slow
def test_bench_times_each_method(tmp_path, monkeypatch, capsys):
    """``--methods``: one framework loop per method (its own process), beside DANN's floor."""
    monkeypatch.setenv("DANN_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "b.json"
    assert bench.cli(["--pairs", "mnist_mnistm", "--synthetic", "--steps", "6", "--warmup", "2",
                      "--methods", "source_only", "mcd", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["pairs"]["mnist_mnistm"]
    assert set(r) >= {"method=source_only", "method=mcd", "floor"} and "framework" not in r
    for m in ("source_only", "mcd"):
        assert r[f"method={m}"]["ms_per_step"] > 0 and r[f"method={m}"]["method"] == m
    # MCD runs the feature extractor six times a batch: dearer than source-only's one pass
    assert r["method=mcd"]["ms_per_step"] > r["method=source_only"]["ms_per_step"]
    assert "| mnist_mnistm | method=mcd |" in capsys.readouterr().out
