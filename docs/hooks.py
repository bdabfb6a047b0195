"""MkDocs hooks (mkdocs.yml ``hooks:``): pages made at build time from the repository, so they cannot go stale.

* ``reference/config-groups.md``: every config group and option, written from ``conf/**/*.yaml``
  (each file's leading comment and its content);
* ``reference/api/*.md``: one page per part of the package, a mkdocstrings entry (``::: module``)
  for every module found in it, so a new module is documented without editing a page;
* the methods table of ``README.md`` on the home page (one table, kept by the README's test);
* ``<!-- include: experiments/.../table.md -->`` in a page: that file's text (the tables of record);
* the figures of ``experiments/`` (``*.png``), served at ``experiments/...`` so that pages show the
  results of record from the files the studies wrote, not copies of them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
CONFIG_PAGE = "reference/config-groups.md"
log = logging.getLogger("mkdocs.hooks.dann")  # a warning here fails `mkdocs build --strict`

#: what each group sets and how it is chosen, in the order a newcomer meets them
GROUPS = [
    ("pair", "source and target domains, input channels and size, `fit`, and the pair's training length and schedule",
     "pair=mnist_mnistm pair.image_size=28"),
    ("method", "the method (its `_target_` class) and its options", "method=dann method.gamma=5"),
    ("model", "the paper's network for the pair (`arch`, `hidden`, `dropout`); chosen by the pair", "model=mnist"),
    ("trainer", "Lightning `Trainer` arguments: `max_steps`, `val_check_interval`, `devices`, ...",
     "trainer=ddp trainer.max_steps=2000"),
    ("logger", "CSV always; W&B (`default`), CSV only (`csv`), nothing (`none`)", "logger=csv"),
    ("experiment", "bundles of overrides", "-m experiment=paper_table"),
    ("hparams_search", "Optuna searches: `tune` for any method (random trials, judged by validators afterwards), "
     "`dann_optuna` on a label-free (or an explicitly oracle) objective", "-m hparams_search=tune method=cdan"),
    ("search/tune", "each method's search space for `hparams_search=tune`: ranges with their sources, trial 0 the "
     "authors' setting (chosen by the method, not on the command line)", "-m hparams_search=tune method=mcd"),
    ("domains", "your own domains, declared in yaml (the `+` adds a group train.yaml has no default for)",
     "+domains=example"),
    ("hydra/launcher", "where the jobs of a sweep run: locally (default), `gpus`, `slurm`", "hydra/launcher=slurm"),
]


def leading_comment(text: str) -> str:
    """The comment lines a yaml file starts with (without ``# @package`` lines), as prose."""
    out = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        if not body.startswith("@package"):
            out.append(body)
    return " ".join(out).strip()


def first_sentence(text: str) -> str:
    s = text.split(". ")[0].rstrip(".")
    return s + "." if s else ""


def config_groups_page(conf: Path = CONF) -> str:
    """The reference page of the config groups, written from the yaml files under ``conf``."""
    lines = ["# Config groups", "",
             "Generated from `conf/` when the site is built (`docs/hooks.py`): every option of every group, "
             "with the comment its file starts with. Choose an option with `group=option` on the command line "
             "(`dann-train pair=mnist_mnistm method=dann`), override any value inside with its dotted key "
             "(`method.gamma=5`, `trainer.max_steps=2000`). Each group is validated in one place "
             "(`dann/config.py`) before any data loads: an unknown key is an error that names it.", "",
             "| group | what it sets | options | e.g. |", "|---|---|---|---|"]
    on_disk = {str(p.parent.relative_to(conf)) for p in conf.rglob("*.yaml")} - {".", "hydra/help"}
    for group in sorted(on_disk - {g for g, _, _ in GROUPS}):
        log.warning(f"conf/{group}/ is a config group the reference does not describe: add it to GROUPS in docs/hooks.py")
    for group, what, example in GROUPS:
        names = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        lines.append(f"| [`{group}`](#{group.replace('/', '')}) | {what} | "
                     + ", ".join(f"`{n}`" for n in names) + f" | `{example}` |")
    lines += ["", "The top-level keys (`seed`, `selection`, `resume`, `deterministic`, `objective`, `data`, `optim`, "
              "`checkpoint`, `probe`, `speed`, `pool`, ...) are in [`train.yaml`](#trainyaml), the defaults of "
              "every run.", ""]
    train = (conf / "train.yaml").read_text()
    lines += ["## train.yaml", "", leading_comment(train), "", "```yaml", train.rstrip(), "```", ""]
    for group, what, _ in GROUPS:
        lines += [f"## {group}", "", what[0].upper() + what[1:] + ".", ""]
        for path in sorted((conf / group).glob("*.yaml")):
            text = path.read_text()
            lines += [f"### `{group}={path.stem}`", "", leading_comment(text) or "(no comment in the file)", "",
                      f"`conf/{group}/{path.name}`:", "", "```yaml", text.rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


#: API pages: file name -> (title, what it holds, the packages or modules on it)
API = {
    "run": ("The training run", "`train(cfg)`, the builder, callbacks, loggers, launchers and the console scripts.",
            ["dann.run", "dann.commands", "dann.bench", "dann.bench_contention"]),
    "methods": ("Methods", "`DAMethod` and one module per method; the gradient-reversal layer and the schedules.",
                ["dann.methods"]),
    "selection": ("Model selection", "Validators (one function each), rules, the probe, rescoring and the study.",
                  ["dann.selection"]),
    "data": ("Data", "Domains and their caches, real datasets, offline recipes, custom domains, the pair datamodule.",
             ["dann.data"]),
    "models": ("Models", "The paper's networks.", ["dann.models"]),
    "report": ("Reporting", "The paper's numbers, `dann-table`, figures, PAD and t-SNE, reading W&B runs.",
               ["dann.report"]),
}
# Every top-level module not on a page above stands on the floor: listed from the package itself,
# so a new one cannot be left out of the site (a docstring reference to it would break the build).
_ON_PAGES = {n for _, _, names in API.values() for n in names}
API["core"] = ("Records, config, errors", "The floor every part stands on.",
               sorted(f"dann.{p.stem}" for p in (ROOT / "dann").glob("*.py")
                      if p.stem != "__init__" and f"dann.{p.stem}" not in _ON_PAGES))


def modules_of(name: str) -> list[str]:
    """``name`` and, for a package, every module in it (sorted; ``__init__`` first)."""
    path = ROOT / Path(*name.split("."))
    if not path.is_dir():
        return [name]
    return [name] + [f"{name}.{p.stem}" for p in sorted(path.glob("*.py")) if p.stem != "__init__"]


def api_page(title: str, what: str, names: list[str]) -> str:
    lines = [f"# {title}", "", what + " Generated from the docstrings (`docs/hooks.py` lists the modules).", ""]
    for mod in (m for n in names for m in modules_of(n)):
        lines += [f"::: {mod}", ""]
    return "\n".join(lines)


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, CONFIG_PAGE, content=config_groups_page()))
    for page, (title, what, names) in API.items():
        files.append(File.generated(config, f"reference/api/{page}.md", content=api_page(title, what, names)))
    for png in sorted((ROOT / "experiments").rglob("*.png")):
        files.append(File(str(png.relative_to(ROOT)), src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


METHODS_MARK = "<!-- the methods table of README.md, inserted at build time (docs/hooks.py) -->"
METHODS_HEADER = "| method | what it trains on | config |"


def readme_methods_table(readme: Path = ROOT / "README.md") -> str:
    text = readme.read_text()
    start = text.index(METHODS_HEADER)
    return text[start:text.index("\n\n", start)]


INCLUDE = re.compile(r"<!-- include: (experiments/[\w./-]+\.md) -->")


def on_page_markdown(markdown: str, page, config, files) -> str:
    if METHODS_MARK in markdown:
        markdown = markdown.replace(METHODS_MARK, readme_methods_table())
    return INCLUDE.sub(lambda m: included_table(ROOT / m.group(1)), markdown)


def included_table(path: Path) -> str:
    """A ``dann-table`` output as a page shows it: the table as a table, the notes under it as they
    were printed (a note such as ``[paper x]: ...`` would read as a Markdown link definition)."""
    table, _, notes = path.read_text().partition("\n\n")
    return table + ("\n\n```text\n" + notes.strip() + "\n```\n" if notes.strip() else "\n")
