"""``dann-bench``: DANN training speed, side by side, on the same data and machine.

For each pair's network it measures, each in a fresh process (clean peak memory):

1. ``framework``: ``train(cfg)`` as a user runs it (Lightning, the tensor data path, logging
   every 50 steps, checkpoints, validation off during the timed window), and after it the time
   of one evaluation as a run makes it every ``trainer.val_check_interval`` steps (``eval_s``:
   test accuracies and the label-free selection scores);
2. ``dataloader``: a plain PyTorch loop with torchvision-style per-sample transforms and
   ``torch.utils.data.DataLoader`` (the way most published DANN code trains), ``.item()``
   every step for its log;
3. ``floor``: the same network and loss in a minimal loop over batches drawn from tensors
   already normalised in memory: the floor for this hardware.

and the time to load each domain from its cache. ``--peer`` adds pytorch-adapt's DANN when
that package is installed. Says on stderr which loop runs; prints a table (ms/step, images/s,
peak memory, and the system CPU time and minor page faults per step, which show memory handed
back to the OS and faulted in again every step), and writes JSON with ``--out``; the ratios are
the headline, since absolute times on shared machines vary: ``--repeat 3`` interleaves rounds of
all loops and takes medians. It warns when the machine is busy at the start (load average above
the number of cores): the loops then compete with other programs and their ratios mean little.

    dann-bench --pairs mnist_mnistm --steps 300 --out bench.json

``--compile MODE`` and ``--channels-last`` apply the ``speed:`` options (:mod:`dann.run.speed`) to
the networks of ``framework`` and ``floor`` (the DataLoader loop stays the plain published-code
baseline); compilation happens during the warm-up steps, which are not timed:

    dann-bench --pairs mnist_mnistm --synthetic --compile default --out bench_compile.json

``dann-bench --contention`` times the training loop idle and beside other PyTorch work
(:mod:`dann.bench_contention`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

PAIRS = ("mnist_mnistm", "synnumbers_svhn", "synsigns_gtsrb")
SYNTH_N = 20_000


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _peak_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _pair_cfg(pair: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from dann.config import CONF_DIR

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"pair={pair}", "method=dann", *overrides])


def _data(pair: str, synthetic: bool):
    """(source, target) domain names, registering random stand-ins when asked or when the
    pair's real data are not prepared (the speed of these nets does not depend on pixels)."""
    from dann.data.domains import Domain, Split, register

    cfg = _pair_cfg(pair, [])
    src, tgt = cfg.pair.source, cfg.pair.target
    if not synthetic:
        try:
            from dann.data import load_split

            for d in (src, tgt):
                load_split(d, "train")
            return src, tgt, False
        except Exception as e:  # noqa: BLE001 - fall back to stand-ins, and say so
            print(f"[bench] {pair}: real data unavailable ({type(e).__name__}); using random images", file=sys.stderr)
    c, s = cfg.pair.channels, cfg.pair.image_size
    k = 43 if "gtsrb" in pair else 10
    for name, seed in ((f"bench_{pair}_src", 0), (f"bench_{pair}_tgt", 1)):
        def build(root, split, seed=seed):
            g = torch.Generator().manual_seed(seed + (0 if split == "train" else 10))
            n = SYNTH_N if split == "train" else 2000
            return Split(torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g),
                         torch.randint(0, k, (n,), generator=g))
        register(Domain(name, k, build, cache=False))
    return f"bench_{pair}_src", f"bench_{pair}_tgt", True


class _Window:
    """Wall time, system CPU time and minor page faults of this process over the timed steps,
    with a device sync at both ends (system time and faults show a step's hidden cost: memory
    handed back to the OS and faulted in again, see :func:`dann.run.speed.keep_freed_memory`)."""

    def start(self) -> None:
        _sync()
        self.t0, self.r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)

    def stop(self) -> None:
        _sync()
        self.t1, self.r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)

    def result(self, steps: int, synth: bool, images_per_step: int = 128, **extra: Any) -> dict[str, Any]:
        sec = (self.t1 - self.t0) / steps
        return {"ms_per_step": 1000 * sec, "images_per_s": images_per_step / sec, "peak_mb": _peak_mb(),
                "sys_ms_per_step": 1000 * (self.r1.ru_stime - self.r0.ru_stime) / steps,
                "faults_per_step": (self.r1.ru_minflt - self.r0.ru_minflt) / steps, "synthetic_data": synth, **extra}


class _StepTimer(_Window):
    """The timed window of a Lightning run: from step ``warmup`` to the end of training."""

    def __init__(self, warmup: int, eval_samples: int = 2000):
        import pytorch_lightning as pl

        timer = self

        class CB(pl.Callback):
            def setup(self, trainer, pl_module, stage):
                # what train() applied of the speed options, for the record
                from dann.run.speed import speed_settings

                if stage == "fit":
                    timer.speed = speed_settings(pl_module)

            def on_train_batch_start(self, trainer, *a):
                if trainer.global_step == timer.warmup:
                    timer.start()

            def on_train_end(self, trainer, pl_module):
                timer.stop()
                # one evaluation as a run makes it at every trainer.val_check_interval: test
                # accuracies + the label-free selection scores (a run of N steps makes N / 1,000)
                from dann.selection import evaluate

                t = time.perf_counter()
                evaluate(pl_module, trainer.datamodule, samples=timer.eval_samples)
                _sync()
                timer.eval_s = time.perf_counter() - t

        self.warmup, self.speed, self.eval_s, self.eval_samples, self.callback = warmup, None, None, eval_samples, CB()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_framework(pair: str, steps: int, warmup: int, synthetic: bool, extra: list[str]) -> dict[str, Any]:
    import tempfile

    from dann.run.train import train

    src, tgt, synth = _data(pair, synthetic)
    with tempfile.TemporaryDirectory() as out:
        cfg = _pair_cfg(pair, [f"output_dir={out}", f"pair.source={src}", f"pair.target={tgt}", "logger=csv",
                               f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                               "trainer.enable_progress_bar=false", "+trainer.limit_val_batches=0", f"checkpoint.every_n_steps={steps}",
                               "checkpoint.keep=false", *extra])
        timer = _StepTimer(warmup, int(cfg.probe.get("samples", 2000)))
        train(cfg, callbacks=[timer.callback])
    res = timer.result(steps - warmup, synth, cfg.data.batch_size, eval_s=timer.eval_s, method=cfg.method.name)
    if timer.speed is not None:
        res["speed"] = timer.speed
    return res


def _speed_overrides(mode: str | None, channels_last: bool) -> list[str]:
    return ([f"speed.compile={mode}"] if mode else []) + (["speed.channels_last=true"] if channels_last else [])


def _tensors(pair: str, synthetic: bool):
    from dann.data import DomainPairDataModule

    src, tgt, synth = _data(pair, synthetic)
    cfg = _pair_cfg(pair, [])
    dm = DomainPairDataModule(src, tgt, batch_size=64, channels=cfg.pair.channels, image_size=cfg.pair.image_size,
                              device="cpu")
    dm.setup("fit")
    return cfg, dm, synth


def _nets(cfg, dm, dev):
    from dann.models import build_nets

    n = build_nets(cfg.model.arch, dm.input_shape, dm.num_classes, dropout=cfg.model.get("dropout", 0.5))
    mods = torch.nn.ModuleList([n.features, n.classifier, n.discriminator]).to(dev)
    opt = torch.optim.SGD(mods.parameters(), lr=0.01, momentum=0.9)
    return n, opt


def _dann_step(n, opt, xs, ys, xt, lam: float) -> torch.Tensor:
    from dann.methods.grl import grad_reverse

    f = n.features(torch.cat([xs, xt]))
    cls = F.cross_entropy(n.classifier(f[:len(xs)]), ys)
    d = n.discriminator(grad_reverse(f, lam)).squeeze(1)
    dom = F.binary_cross_entropy_with_logits(d, torch.cat([d.new_zeros(len(xs)), d.new_ones(len(xt))]))
    loss = cls + dom
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def _in_memory(pair: str, synthetic: bool, dev: torch.device):
    """The pair's training tensors, normalised once, on ``dev``."""
    cfg, dm, synth = _tensors(pair, synthetic)
    return cfg, dm, synth, dm.src_train.inputs(slice(None)).to(dev), dm.src_train.y.to(dev), \
        dm.tgt_train.inputs(slice(None)).to(dev)


def _time_random_batches(step, n_src: int, n_tgt: int, steps: int, warmup: int, dev: torch.device) -> _Window:
    """The timed window of ``step(src_idx, tgt_idx)`` on random batches of 64 + 64, after ``warmup`` steps."""
    win = _Window()
    for k in range(steps):
        if k == warmup:
            win.start()
        step(torch.randint(0, n_src, (64,), device=dev), torch.randint(0, n_tgt, (64,), device=dev))
    win.stop()
    return win


def run_floor(pair: str, steps: int, warmup: int, synthetic: bool, extra: list[str] = ()) -> dict[str, Any]:
    dev = _device()
    cfg, dm, synth, xs, ys, xt = _in_memory(pair, synthetic, dev)
    n, opt = _nets(cfg, dm, dev)
    from dann.run.speed import apply_speed, speed_options, speed_settings

    # the framework's speed: options (its defaults, or the ones asked for), so the floor stays a floor
    apply_speed(n, **speed_options(_pair_cfg(pair, list(extra))))
    if speed_settings(n)["channels_last"]:  # the batches too, once, as a data path would yield them
        xs, xt = xs.contiguous(memory_format=torch.channels_last), xt.contiguous(memory_format=torch.channels_last)
    win = _time_random_batches(lambda i, j: _dann_step(n, opt, xs[i], ys[i], xt[j], 1.0), len(xs), len(xt),
                               steps, warmup, dev)
    return win.result(steps - warmup, synth, speed=speed_settings(n))


class _PerSample(torch.utils.data.Dataset):
    """What torchvision datasets do: one PIL image per item, then ToTensor and Normalize."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: list[float]):
        from torchvision import transforms

        self.x, self.y = x, y
        self.tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, [1.0] * len(mean))])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.x[i].permute(1, 2, 0).numpy())
        return self.tf(img), int(self.y[i])


def run_dataloader(pair: str, steps: int, warmup: int, synthetic: bool, workers: int) -> dict[str, Any]:
    dev = _device()
    cfg, dm, synth = _tensors(pair, synthetic)
    mean = dm.src_train.mean.flatten().tolist()
    mk = lambda s: torch.utils.data.DataLoader(  # noqa: E731
        _PerSample(s.x, s.y, mean), batch_size=64, shuffle=True, drop_last=True, num_workers=workers,
        pin_memory=dev.type == "cuda", persistent_workers=workers > 0)
    src, tgt = mk(dm.src_train), mk(dm.tgt_train)
    n, opt = _nets(cfg, dm, dev)
    it_s, it_t = iter(src), iter(tgt)
    log, win = [], _Window()
    for k in range(steps):
        if k == warmup:
            win.start()
        try:
            xs, ys = next(it_s)
        except StopIteration:
            it_s = iter(src)
            xs, ys = next(it_s)
        try:
            xt, _ = next(it_t)
        except StopIteration:
            it_t = iter(tgt)
            xt, _ = next(it_t)
        loss = _dann_step(n, opt, xs.to(dev, non_blocking=True), ys.to(dev, non_blocking=True),
                          xt.to(dev, non_blocking=True), 1.0)
        log.append(loss.item())  # what a typical loop does to print its loss
    win.stop()
    return win.result(steps - warmup, synth, num_workers=workers)


def run_load(pair: str) -> dict[str, Any]:
    from dann.data import load_split

    cfg = _pair_cfg(pair, [])
    out = {}
    for d in (cfg.pair.source, cfg.pair.target):
        try:
            load_split(d, "train")  # build the cache if needed (not timed)
            t = time.perf_counter()
            load_split(d, "train")
            load_split(d, "test")
            out[d] = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001
            out[d] = f"unavailable: {type(e).__name__}"
    return out


def run_peer(pair: str, steps: int, warmup: int, synthetic: bool) -> dict[str, Any]:
    try:
        import pytorch_adapt  # noqa: F401
    except ImportError:
        return {"skipped": "pytorch-adapt is not installed (pip install pytorch-adapt)"}
    from pytorch_adapt.hooks import DANNHook

    dev = _device()
    cfg, dm, synth, xs, ys, xt = _in_memory(pair, synthetic, dev)
    n, _ = _nets(cfg, dm, dev)
    G, C, D = n.features, n.classifier, torch.nn.Sequential(n.discriminator, torch.nn.Flatten(0))
    hook = DANNHook([torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (G, C, D)])
    zeros, ones = torch.zeros(64, device=dev), torch.ones(64, device=dev)

    def step(i, j):
        hook({"G": G, "C": C, "D": D, "src_imgs": xs[i], "src_labels": ys[i], "target_imgs": xt[j],
              "src_domain": zeros, "target_domain": ones})

    return _time_random_batches(step, len(xs), len(xt), steps, warmup, dev).result(steps - warmup, synth)


def _ratio(rounds: list[dict[str, Any]], num: str, den: str) -> float | None:
    rs = [r[num]["ms_per_step"] / r[den]["ms_per_step"] for r in rounds
          if "ms_per_step" in r.get(num, {}) and "ms_per_step" in r.get(den, {})]
    return statistics.median(rs) if rs else None


def _combine(rounds: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """One result per loop from interleaved rounds: the median round of each loop (all rounds'
    ms/step kept), and each ratio as the median of the per-round ratios (the loops of one round
    ran minutes apart at most, so a slow spell of the machine cancels out)."""
    r: dict[str, Any] = {}
    for m in modes:
        ok = sorted((x[m] for x in rounds if "ms_per_step" in x[m]), key=lambda v: v["ms_per_step"])
        r[m] = dict(ok[(len(ok) - 1) // 2], ms_per_step_rounds=[x[m].get("ms_per_step") for x in rounds]) if ok \
            else rounds[-1][m]
    r["framework_over_floor"] = _ratio(rounds, "framework", "floor")
    r["dataloader_over_framework"] = _ratio(rounds, "dataloader", "framework")
    return r


def _worker(argv: list[str]) -> None:
    mode, pair, steps, warmup, synthetic, workers = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4] == "1", int(argv[5])
    extra = argv[6:]
    fn = {"framework": lambda: run_framework(pair, steps, warmup, synthetic, extra),
          "floor": lambda: run_floor(pair, steps, warmup, synthetic, extra),
          "dataloader": lambda: run_dataloader(pair, steps, warmup, synthetic, workers),
          "load": lambda: run_load(pair),
          "peer": lambda: run_peer(pair, steps, warmup, synthetic)}[mode]
    print("BENCH_JSON " + json.dumps(fn()), flush=True)


def load_warning(load: float, cores: int) -> str | None:
    """The warning for a machine busy with other work (1-minute load average above its cores)."""
    if load <= cores:
        return None
    return (f"dann-bench: warning: the machine is busy (load average {load:.1f} on {cores} cores): the loops "
            f"compete with other programs, so their times and ratios are not meaningful. Rerun when it is idle.")


def _machine_load() -> tuple[float, int] | None:
    try:
        return os.getloadavg()[0], os.cpu_count() or 1
    except (OSError, AttributeError):  # no load average on this platform
        return None


def check_runs(pairs: list[str], overrides: list[list[str]]) -> str | None:
    """What is wrong with a pair or an override, as one line, before any loop is spawned (each loop
    would otherwise fail in its own process, its traceback pasted into the table); or None.
    Each pair is composed with each loop's overrides and validated as dann-train would."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dann.config import CONF_DIR, validate
    from dann.errors import ConfigError
    from dann.run.guard import check_network

    known = sorted(p.stem for p in Path(CONF_DIR, "pair").glob("*.yaml"))
    for pair in pairs:
        if pair not in known:
            return f"--pairs: unknown pair {pair!r}; known: {', '.join(known)}"
        for extra in overrides:
            try:
                cfg = _pair_cfg(pair, ["output_dir=.", *extra])  # the loops set their own folder
                validate(cfg)
                check_network(cfg)
            except (HydraException, OmegaConfBaseException, ConfigError) as e:
                first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
                return f"{pair} with {' '.join(extra) or 'no override'}: {first}"
    return None


def _spawn(mode: str, pair: str, a, extra: list[str], label: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dann.bench", "--_worker", mode, pair, str(a.steps), str(a.warmup),
           "1" if a.synthetic else "0", str(a.workers), *extra]
    mode = label or mode
    print(f"[bench] {pair}: {mode} ...", file=sys.stderr, flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, WANDB_MODE="disabled"))
    for line in p.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            r = json.loads(line[len("BENCH_JSON "):])
            print(f"[bench] {pair}: {mode} " + (f"{r['ms_per_step']:.1f} ms/step" if "ms_per_step" in r else "done"),
                  file=sys.stderr, flush=True)
            return r
    # the table gets the error's last line, not a traceback; the run ends with a non-zero status
    last = next((ln.strip() for ln in reversed((p.stderr or p.stdout).splitlines()) if ln.strip()), "no output")
    print(f"[bench] {pair}: {mode} failed (exit code {p.returncode}): {last}", file=sys.stderr, flush=True)
    return {"error": last}


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_worker":
        _worker(argv[1:])
        return 0
    if argv and argv[0] == "--contention":  # its own options: dann-bench --contention --help
        from dann.bench_contention import cli as contention

        return contention(argv[1:])
    ap = argparse.ArgumentParser(prog="dann-bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), help="one pair per network (default: one per paper net)")
    ap.add_argument("--steps", type=int, default=300, help="steps of each loop, the warm-up included")
    ap.add_argument("--warmup", type=int, default=50, help="first steps of each loop, not timed")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    ap.add_argument("--synthetic", action="store_true", help="random images of the pair's shape instead of real data")
    ap.add_argument("--peer", action="store_true", help="also pytorch-adapt's DANN, when installed")
    ap.add_argument("--compile", metavar="MODE", default=None,
                    help="torch.compile the networks of framework and floor (speed.compile): default, "
                         "reduce-overhead (CUDA graphs on GPU), max-autotune, max-autotune-no-cudagraphs")
    ap.add_argument("--channels-last", action="store_true",
                    help="NHWC weights and inputs for framework and floor (speed.channels_last)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of all loops, interleaved; each loop reports its median round and the "
                         "ratios are medians of the per-round ratios (use 3+ on a shared machine)")
    ap.add_argument("--methods", nargs="+", metavar="METHOD", default=None,
                    help="instead of DANN's three loops, the framework loop of each method (method=NAME, each in "
                         "its own process; 'all': every conf/method yaml) beside DANN's floor")
    ap.add_argument("--out", default=None, help="also write the results as JSON to this file")
    ap.add_argument("overrides", nargs="*", help="config overrides for the framework run (e.g. optim.fused=true)")
    a = ap.parse_args(argv)
    if a.repeat < 1:
        ap.error(f"--repeat {a.repeat}: give 1 or more rounds")
    if a.warmup < 0 or a.steps <= a.warmup:
        ap.error(f"--steps {a.steps} --warmup {a.warmup}: --steps counts the warm-up steps, so it must be "
                 f"larger than --warmup (>= 0); e.g. --steps {max(a.warmup, 0) + 250} --warmup {max(a.warmup, 0)}")
    if a.compile is not None:
        from dann.run.speed import compile_mode

        try:
            a.compile = compile_mode(a.compile)
        except ValueError as e:
            ap.error(str(e).replace("speed.compile", "--compile"))
    speed = _speed_overrides(a.compile, a.channels_last)
    # loop label -> (worker mode, its config overrides)
    loops = {"framework": ("framework", [*a.overrides, *speed]), "dataloader": ("dataloader", []),
             "floor": ("floor", speed)} | ({"peer": ("peer", [])} if a.peer else {})
    if a.methods:
        from dann.config import method_names

        known = method_names()
        names = known if a.methods == ["all"] else a.methods
        for n in names:
            if n not in known:
                ap.error(f"--methods: unknown method {n!r}; known: {', '.join(known)}")
        loops = {f"method={n}": ("framework", [f"method={n}", *a.overrides, *speed]) for n in names} | \
            {"floor": ("floor", speed)}
    modes = list(loops)
    problem = check_runs(a.pairs, [loops[m][1] for m in modes if loops[m][0] == "framework"])
    if problem:
        print(f"dann-bench: error: {problem}", file=sys.stderr)
        return 2
    dev = _device()
    res: dict[str, Any] = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else f"cpu x{os.cpu_count()}",
                           "torch": torch.__version__, "steps": a.steps, "warmup": a.warmup, "pairs": {}}
    if speed:
        res["speed"] = {"compile": a.compile or False, "channels_last": a.channels_last}
    res["repeat"] = a.repeat
    load = _machine_load()
    busy = load_warning(*load) if load else None
    if load:
        res["load_average_at_start"], res["cores"] = round(load[0], 2), load[1]
    if busy:
        print(busy, file=sys.stderr, flush=True)
    rows = []
    for pair in a.pairs:
        rounds = []
        for k in range(a.repeat):  # interleaved rounds: a drift of the machine's speed hits every loop alike
            if a.repeat > 1:
                print(f"[bench] {pair}: round {k + 1}/{a.repeat}", file=sys.stderr, flush=True)
            rounds.append({m: _spawn(loops[m][0], pair, a, loops[m][1], label=m) for m in modes})
        r = _combine(rounds, modes)
        r["load_s"] = _spawn("load", pair, a, [])
        res["pairs"][pair] = r
        for m in modes:
            v = r[m]
            rows.append(f"| {pair} | {m} | " + (f"{v['ms_per_step']:.1f} | {v['images_per_s']:.0f} | {v['peak_mb']:.0f} | "
                                                 f"{v['sys_ms_per_step']:.1f} | {v['faults_per_step']:.0f} |"
                                                 if "ms_per_step" in v else f"{v.get('skipped') or v.get('error', '')[-120:]} | | | | |"))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    sp = f", speed: compile={a.compile or 'off'} channels_last={a.channels_last} (framework, floor)" if speed else ""
    rep = f", median of {a.repeat} interleaved rounds" if a.repeat > 1 else ""
    print(f"device: {res['device']}, torch {res['torch']}, {a.steps} steps ({a.warmup} warm-up), batch 64+64{sp}{rep}\n")
    print("| pair | loop | ms/step | images/s | peak MB | system ms/step | page faults/step |\n|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    for pair, r in res["pairs"].items():
        f = lambda x: f"{x:.2f}" if isinstance(x, float) else "n/a"  # noqa: E731
        print((f"{pair}: framework / floor = {f(r['framework_over_floor'])}, DataLoader loop / framework = "
               f"{f(r['dataloader_over_framework'])}; " if "framework" in r else f"{pair}: ") + "cache load (train+test): "
              + ", ".join(f"{d} {v:.2f} s" if isinstance(v, float) else f"{d} {v}" for d, v in r["load_s"].items()))
        for m in modes:
            if m.startswith("method=") and isinstance(x := _ratio([r], m, "floor"), float):
                print(f"{pair}: {m} / DANN's floor = {x:.2f}")
        ev = r.get("framework", {}).get("eval_s")
        if isinstance(ev, float):
            print(f"{pair}: one evaluation (test accuracies + selection scores, made every trainer.val_check_interval "
                  f"steps) = {ev:.2f} s")
    if busy:  # again under the table: the first one has scrolled away
        print(f"\n{busy}")
    if a.out:
        print(f"\nJSON: {a.out}")
    failed = [f"{pair} {m}" for pair, r in res["pairs"].items() for m in modes if "error" in r[m]]
    if failed:
        print(f"dann-bench: error: {len(failed)} loop(s) failed: {', '.join(failed)} (their errors are in the table)",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(cli())
