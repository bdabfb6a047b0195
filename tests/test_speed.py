"""speed.compile / speed.channels_last: same losses and the same SGD step as eager, same state_dict keys;
speed.keep_freed_memory: no page faults per step."""

import subprocess
import sys

import pytest
import torch

from dann.methods.dann import DANN
from dann.models import build_nets
from dann.run import speed  # noqa: F401
from dann.run.speed import apply_speed, check_compile_available, speed_settings, to_channels_last

SHAPE, K = (3, 32, 32), 10
TOL = dict(rtol=1e-4, atol=1e-6)


def tiny_batch(n=8):
    g = torch.Generator().manual_seed(0)
    return {"src_x": torch.randn(n, *SHAPE, generator=g), "src_y": torch.randint(0, K, (n,), generator=g),
            "tgt_x": torch.randn(n, *SHAPE, generator=g) + 1, "tgt_y": torch.randint(0, K, (n,), generator=g)}


def pair_of_models(monkeypatch):
    """Two DANN models with identical weights; lambda_p = 0.5 so the GRL's gradient reaches the features."""
    monkeypatch.setattr(DANN, "lambda_p", property(lambda self: 0.5))
    torch.manual_seed(0)
    a = DANN(build_nets("mnist", SHAPE, K), num_classes=K, max_steps=100)
    b = DANN(build_nets("mnist", SHAPE, K), num_classes=K, max_steps=100)
    b.load_state_dict(a.state_dict())
    return a, b


def step(m, batch):
    """Losses, then one SGD step with the optimizer training uses (foreach SGD, momentum)."""
    opt = m.configure_optimizers()["optimizer"]
    terms = m.losses(batch)
    opt.zero_grad(set_to_none=True)
    torch.stack(list(terms.values())).sum().backward()
    opt.step()
    return {k: v.detach() for k, v in terms.items()}


def assert_same(m_ref, m, batch):
    l_ref, l = step(m_ref, batch), step(m, batch)
    for k in l_ref:
        torch.testing.assert_close(l[k], l_ref[k], **TOL, msg=f"loss {k}")
    for (n, p_ref), (_, p) in zip(m_ref.named_parameters(), m.named_parameters()):
        torch.testing.assert_close(p, p_ref, **TOL, msg=f"parameter {n} after one SGD step")
    # and the losses at the updated weights (with grad on: no_grad would recompile every network)
    l2_ref, l2 = m_ref.losses(batch), m.losses(batch)
    for k in l2_ref:
        torch.testing.assert_close(l2[k], l2_ref[k], **TOL, msg=f"loss {k} after the step")


def test_compiled_step_matches_eager(monkeypatch):
    reason = check_compile_available()
    if reason is not None:
        pytest.skip(reason)
    eager, comp = pair_of_models(monkeypatch)
    keys = list(eager.state_dict())
    apply_speed(comp, compile="default")
    assert comp.features._compiled_call_impl is not None and comp.discriminator._compiled_call_impl is not None
    assert list(comp.state_dict()) == keys
    assert_same(eager, comp, tiny_batch())


def test_channels_last_step_matches_eager(monkeypatch):
    eager, cl = pair_of_models(monkeypatch)
    apply_speed(cl, channels_last=True)
    assert cl.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    cl.features[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    assert_same(eager, cl, tiny_batch())
    assert seen and all(x.is_contiguous(memory_format=torch.channels_last) for x in seen)  # inputs converted too


def test_state_dict_keys_unchanged_and_checkpoints_interchange(monkeypatch):
    # nn.Module.compile is lazy: nothing is compiled until a forward, so this runs without a compiler
    monkeypatch.setattr(speed, "check_compile_available", lambda: None)
    eager, fast = pair_of_models(monkeypatch)
    apply_speed(fast, compile="reduce-overhead", channels_last=True)
    assert speed_settings(fast) == {"compile": "reduce-overhead", "channels_last": True, "keep_freed_memory": False}
    assert list(fast.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod" in k for k in fast.state_dict())
    fast.load_state_dict(eager.state_dict())  # strict, both ways
    eager.load_state_dict(fast.state_dict())
    assert fast.features[0].weight.is_contiguous(memory_format=torch.channels_last)  # load keeps the format


@pytest.mark.parametrize("kw, msg", [
    ({"compile": "fast"}, "speed.compile='fast' is invalid; allowed: false, true"),
    ({"compile": 1}, "max-autotune"),
    ({"channels_last": "yes"}, "speed.channels_last='yes' is invalid; allowed: true, false"),
])
def test_bad_values_raise(monkeypatch, kw, msg):
    m, _ = pair_of_models(monkeypatch)
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        apply_speed(m, **kw)
    assert speed_settings(m) is None


def test_off_is_a_no_op_and_helper(monkeypatch):
    m, _ = pair_of_models(monkeypatch)
    assert apply_speed(m, compile=False, channels_last=False) is m
    assert m.features._compiled_call_impl is None and m.features[0].weight.is_contiguous()
    b = to_channels_last({**tiny_batch(), "pair": (torch.zeros(2, 3, 4, 4), 1)})
    assert b["src_x"].is_contiguous(memory_format=torch.channels_last) and b["src_y"].dim() == 1
    assert b["pair"][0].is_contiguous(memory_format=torch.channels_last) and b["pair"][1] == 1


_FAULTS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from dann.run.speed import keep_freed_memory
    assert keep_freed_memory() is None
def step():  # a step's activations, alive together then freed: eight 12.8 MB blocks (conv1 of the
    # MNIST net, 128 images) and one 64 MB block (conv1 of the GTSRB net)
    blocks = [torch.empty(128 * 32 * 28 * 28).fill_(1.0) for _ in range(8)]
    blocks.append(torch.empty(128 * 96 * 36 * 36).fill_(1.0))
    del blocks
for _ in range(3):  # warm-up: the first steps map their pages either way
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="keep_freed_memory is glibc (Linux) only")
def test_keep_freed_memory_stops_the_page_faults_of_each_step():
    """Without it glibc serves the 64 MB block (over its 32 MB mmap ceiling) with fresh pages
    every step, 16,000 faults, and often trims the freed 100 MB heap top too (depends on the heap
    layout); with it the memory is reused, no faults (a fresh process each: the setting is
    process-wide)."""
    faults = {}
    for mode in ("default", "keep"):
        p = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        faults[mode] = int(p.stdout.split()[-1])
    assert faults["default"] > 20 * 15_000, faults
    assert faults["keep"] < 20 * 100, faults


def test_keep_memory_is_on_by_default_recorded_and_warns_where_unavailable(monkeypatch, tmp_path):
    from conftest import make_cfg

    from dann.run.speed import speed_options

    assert speed_options(make_cfg(tmp_path)) == {"compile": False, "channels_last": False, "keep_memory": True}
    assert speed_options(make_cfg(tmp_path, "speed.keep_freed_memory=false"))["keep_memory"] is False
    # the real mallopt runs in the subprocess test above; here, a platform where it cannot apply
    monkeypatch.setattr(speed, "keep_freed_memory", lambda: "keep_freed_memory needs Linux with glibc (this is x)")
    m, _ = pair_of_models(monkeypatch)
    with pytest.warns(UserWarning, match="speed.keep_freed_memory: keep_freed_memory needs Linux.*going on without it"):
        apply_speed(m, keep_memory=True)
    assert speed_settings(m)["keep_freed_memory"] is False


def test_one_blas_thread_holds_blas_to_one_thread_and_restores():
    """The small logistic regressions run with one BLAS thread (16 threads on a busy or
    over-reported machine made a lone GPU run 4x slower), and the caller's setting comes back."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    seen = []
    from dann.blas import one_blas_thread

    f = one_blas_thread(lambda x: seen.append(blas_threads()) or x + 1)
    with threadpool_limits(limits=3, user_api="blas"):
        assert f(1) == 2
        after = blas_threads()
    assert seen == [{1}], seen
    assert after == {3}


def test_the_logistic_regression_fits_are_held_to_one_blas_thread():
    from dann.report.features import proxy_a_distance
    from dann.methods.sa import fit_linear
    from dann.selection import density_ratio, reverse_validation

    for fn in (density_ratio, reverse_validation, fit_linear, proxy_a_distance):
        assert getattr(fn, "__wrapped__", None) is not None, f"{fn.__name__} is not wrapped by one_blas_thread"
