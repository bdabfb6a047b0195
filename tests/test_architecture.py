"""The house's shape: no import cycle among dann's modules, and a method added by one file + one yaml."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "dann"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """dann modules ``path`` imports anywhere in its source (in functions too: an import hidden in
    a function to dodge a cycle is still a cycle)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in modules else base)
    return {m for m in out if m in modules and m != me}


def import_graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_dann_has_no_import_cycle():
    graph = import_graph()
    assert "dann.run.train" in graph and graph["dann.run.train"], "the walker found no imports: it is broken"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


#: the floors of the house (../shared/DESIGN.md): an import goes to the same floor or down, never up
FLOORS = [
    (5, ("dann.run", "dann.bench", "dann.bench_contention", "dann.data.cli", "dann.commands")),  # launcher, CLIs
    (4, ("dann.report", "dann.config")),                                        # tables, figures, the config
    (3, ("dann.selection",)),                                                   # scores and rules
    (2, ("dann.methods", "dann.data")),                                         # methods, data
    (1, ("dann.models", "dann.records", "dann.errors", "dann.blas", "dann.install", "dann.start", "dann")),   # ground
]


def floor_of(module: str) -> int:
    for level, prefixes in FLOORS:  # the most specific prefix first: dann.data.cli before dann.data
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "dann") or module == "dann":
            return level
    raise AssertionError(f"{module} is on no floor: add it to FLOORS")


def test_floor_of():
    assert floor_of("dann.run.rescore") == 5 and floor_of("dann.data.cli") == 5 and floor_of("dann.data.real") == 2
    assert floor_of("dann.report.study") == 4 and floor_of("dann.selection.scores") == 3


def test_imports_go_down_the_floors_never_up():
    """run -> report/config -> selection -> methods/data -> ground: the scores know no launcher and no tables."""
    up = [f"{mod} (floor {floor_of(mod)}) imports {dep} (floor {floor_of(dep)})"
          for mod, deps in import_graph().items() for dep in deps if floor_of(dep) > floor_of(mod)]
    assert not up, "imports up the floors:\n  " + "\n  ".join(up)


def test_the_parts_never_import_the_entry_point():
    graph = import_graph()
    for mod, deps in graph.items():
        if mod not in ("dann.run.train", "dann.bench", "dann.commands"):  # dann.commands: the console scripts
            assert "dann.run.train" not in deps, f"{mod} imports dann.run.train (arrows point one way)"


MMD_PY = '''
"""MMD: ``L = CE(G_y(G_f(x_s)), y_s) + weight * MMD^2(G_f(x_s), G_f(x_t))``, one Gaussian kernel
(Gretton et al., JMLR 2012, eq. 3, the biased estimate)."""

import torch

from dann.methods.base import DAMethod


class MMD(DAMethod):
    def __init__(self, *args, weight: float = 1.0, bandwidth: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)

    def losses(self, batch):
        xs, xt = batch["src_x"], batch["tgt_x"]
        f = self.features(torch.cat([xs, xt]))
        fs, ft = f[: len(xs)], f[len(xs):]
        k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * self.hparams.bandwidth ** 2))  # noqa: E731
        mmd = k(fs, fs).mean() + k(ft, ft).mean() - 2 * k(fs, ft).mean()
        cls = torch.nn.functional.cross_entropy(self.classifier(fs), batch["src_y"])
        return {"cls": cls, "mmd": self.hparams.weight * mmd}
'''

MMD_YAML = '''
_target_: mymethods.mmd.MMD
name: mmd
weight: 1.0
bandwidth: 1.0
'''


def _env(tmp_path: Path) -> dict[str, str]:
    pkg = tmp_path / "plugins" / "mymethods"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mmd.py").write_text(textwrap.dedent(MMD_PY))
    conf = tmp_path / "myconf" / "method"
    conf.mkdir(parents=True)
    (conf / "mmd.yaml").write_text(MMD_YAML.lstrip())
    env = dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="0")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "plugins"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _dann_train(tmp_path: Path, env: dict[str, str], *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dann.run.train", f"hydra.searchpath=[file://{tmp_path / 'myconf'}]", "method=mmd",
         "pair=moons", "logger=csv", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", *overrides],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.slow
def test_a_method_is_one_file_and_one_yaml(tmp_path):
    """A method written outside the package (a module on the path + a yaml on Hydra's search path)
    trains, its loss term lands in metrics.csv and its row in dann-table, no file of ours edited."""
    env = _env(tmp_path)
    run = tmp_path / "runs" / "mmd_s0"
    p = _dann_train(tmp_path, env, "trainer.max_steps=20", "trainer.log_every_n_steps=5",
                    "trainer.val_check_interval=10", f"hydra.run.dir={run}")
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads((run / "results.json").read_text())
    assert rec["status"] == "finished" and rec["method"] == "mmd" and rec["steps"] == 20
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/mmd" in header and "train/cls" in header
    table = subprocess.run([sys.executable, "-m", "dann.report.cli", str(tmp_path / "runs")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert table.returncode == 0, table.stderr
    assert any(line.startswith("| mmd ") for line in table.stdout.splitlines()), table.stdout


@pytest.mark.slow
def test_a_misspelt_method_option_is_refused_before_data_loads(tmp_path):
    env = _env(tmp_path)
    p = _dann_train(tmp_path, env, "+method.wieght=2", "trainer.max_steps=5", f"hydra.run.dir={tmp_path / 'r'}")
    assert p.returncode != 0
    assert "method.wieght" in p.stderr and "bandwidth, weight" in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "r" / "metrics.csv").exists()
