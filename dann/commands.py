"""The console scripts that load data: each checks that torch and torchvision are one build
(:func:`dann.install.require_torch_pair`) before it imports its command, whose import of
torchvision would otherwise fail with a traceback that names neither (``dann-table`` reads
records only and imports no torchvision: it is ``dann.report.cli:cli`` itself)."""

from __future__ import annotations

from dann.install import require_torch_pair


def train() -> int | None:
    require_torch_pair("dann-train")
    from dann.run.train import cli

    return cli()  # the console script exits with it


def data() -> int | None:
    require_torch_pair("dann-data")
    from dann.data.cli import cli

    return cli()  # the console script exits with it


def select() -> int | None:
    require_torch_pair("dann-select")
    from dann.run.rescore import cli

    return cli()  # the console script exits with it


def bench() -> int | None:
    require_torch_pair("dann-bench")
    from dann.bench import cli

    return cli()  # the console script exits with it
