"""speed.compile / speed.channels_last: same losses and the same SGD step as eager, same state_dict keys."""

import pytest
import torch

from dann.methods import METHODS
from dann.models import build_nets
from dann import speed
from dann.speed import apply_speed, check_compile_available, speed_settings, to_channels_last

SHAPE, K = (3, 32, 32), 10
TOL = dict(rtol=1e-4, atol=1e-6)


def tiny_batch(n=8):
    g = torch.Generator().manual_seed(0)
    return {"src_x": torch.randn(n, *SHAPE, generator=g), "src_y": torch.randint(0, K, (n,), generator=g),
            "tgt_x": torch.randn(n, *SHAPE, generator=g) + 1, "tgt_y": torch.randint(0, K, (n,), generator=g)}


def pair_of_models(monkeypatch):
    """Two DANN models with identical weights; lambda_p = 0.5 so the GRL's gradient reaches the features."""
    monkeypatch.setattr(METHODS["dann"], "lambda_p", property(lambda self: 0.5))
    torch.manual_seed(0)
    a = METHODS["dann"](build_nets("mnist", SHAPE, K), num_classes=K, max_steps=100)
    b = METHODS["dann"](build_nets("mnist", SHAPE, K), num_classes=K, max_steps=100)
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
    assert speed_settings(fast) == {"compile": "reduce-overhead", "channels_last": True}
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
