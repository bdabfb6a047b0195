"""The documentation: the site builds strictly and its pages render in a real browser; the commands
the pages print work as printed.

* The site (``mkdocs build --strict``) is built once here, or taken from ``$DANN_DOCS_SITE`` (what
  ``.ci/run`` built); a broken link or a docstring reference that does not resolve fails a build.
* The browser is the system's Chromium driven by selenium (Debian's ``chromium`` and
  ``chromium-driver``). Without mkdocs, selenium or a browser these tests are skipped with the
  reason, unless ``DANN_REQUIRE_BROWSER=1`` (``.ci/run`` sets it) makes that a failure.
* The W&B page's and the extending guide's commands are run verbatim in bash on real runs (the
  guide's 2,000-step run shortened to 20 steps: the only change).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REQUIRE = os.environ.get("DANN_REQUIRE_BROWSER") == "1"
PAGES = ["index", "tutorial", "results", *(f"how-to/{p.stem}" for p in sorted((DOCS / "how-to").glob("*.md"))),
         *(f"reference/{p.stem}" for p in sorted((DOCS / "reference").glob("*.md"))), "reference/config-groups",
         *(f"reference/api/{p}" for p in ("run", "methods", "selection", "data", "models", "report", "core"))]


def unavailable(why: str):
    if REQUIRE:
        pytest.fail(f"{why} (DANN_REQUIRE_BROWSER=1: the docs and browser checks must run)")
    pytest.skip(why)


def need_docs_extra() -> None:
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError as e:
        unavailable(f"the docs extra is not installed ({e.name}): pip install -e '.[docs]'")


def env_with_bin(**extra: str) -> dict[str, str]:
    """This interpreter's environment with its scripts (dann-train, wandb, mkdocs) first on PATH."""
    env = dict(os.environ, **extra)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def mkdocs_build(config: Path, site: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, cwd=cwd, timeout=600,
                          env=env_with_bin(NO_MKDOCS_2_WARNING="1"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if os.environ.get("DANN_DOCS_SITE"):
        built = Path(os.environ["DANN_DOCS_SITE"]).resolve()
        assert (built / "index.html").exists(), f"DANN_DOCS_SITE={built} holds no built site"
        return built
    need_docs_extra()
    out = tmp_path_factory.mktemp("site")
    p = mkdocs_build(ROOT / "mkdocs.yml", out)
    assert p.returncode == 0, p.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed: pip install -e '.[docs]'")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        unavailable("no headless browser: apt-get install chromium chromium-driver (Debian)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    # as root, in a container, on a machine with no network: no sandbox, no GPU, no background calls
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--window-size=1280,1600"):
        opts.add_argument(flag)
    b = webdriver.Chrome(service=Service(driver), options=opts)
    yield b
    b.quit()


def test_every_page_of_the_nav_is_built(site):
    missing = [p for p in PAGES if not (site / f"{p}.html").exists()]
    assert not missing, missing
    assert (site / "experiments" / "paper_table" / "table.png").exists()  # the figures of record, served


def test_the_config_reference_names_every_option_of_every_group(site):
    """The page is generated from conf/ at build time: every yaml of every documented group is on it."""
    html = (site / "reference" / "config-groups.html").read_text()
    for group in ("pair", "method", "model", "trainer", "logger", "experiment", "hparams_search", "domains",
                  "hydra/launcher"):
        for yaml in (ROOT / "conf" / group).glob("*.yaml"):
            assert f"{group}={yaml.stem}" in html, f"{group}={yaml.stem} is not on the config reference"


def test_the_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [u for u in links if not u.startswith(("http://", "https://"))]
    assert any(u.startswith("docs/") for u in local)
    assert [u for u in local if not (ROOT / u).exists()] == []


def test_the_tutorial_renders_its_code_blocks_and_images_in_a_browser(site, browser):
    browser.get((site / "tutorial.html").as_uri())
    assert browser.find_element("css selector", "h1").text.startswith("Tutorial")
    blocks = [e.text for e in browser.find_elements("css selector", "article pre code")]
    assert len(blocks) >= 7, blocks
    assert any("dann-train -m pair=mnist_mnistm method=source_only,dann trainer.max_steps=2000" in b for b in blocks)
    assert any("dann-table multirun/<date>/<time> --curves curves.png" in b for b in blocks)
    images = browser.execute_script(
        "return [...document.querySelectorAll('article img')].map(i => [i.getAttribute('src'), i.complete, "
        "i.naturalWidth, i.getBoundingClientRect().width])")
    assert len(images) >= 5, images
    assert [i for i in images if not (i[1] and i[2] > 100 and i[3] > 100)] == [], images  # loaded and shown


def test_every_page_renders_with_its_images_in_a_browser(site, browser):
    broken = {}
    for page in PAGES:
        browser.get((site / f"{page}.html").as_uri())
        h1 = browser.find_elements("css selector", "article h1")
        bad = browser.execute_script("return [...document.querySelectorAll('article img')]"
                                     ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'))")
        if not h1 or bad:
            broken[page] = (bool(h1), bad)
    assert broken == {}
    browser.get((site / "reference" / "api" / "methods.html").as_uri())
    assert browser.find_element("id", "dann.methods.base.DAMethod.losses")  # the API from the docstrings
    assert "L = CE(G_y(G_f(x_s)), y_s) + BCE(G_d(R_lambda(G_f(x))), d)" in browser.find_element("tag name", "article").text


# -- a strict build fails on what it must fail on ---------------------------------------------
MINI_MODULE = '''"""A module whose docstring cites {ref}."""


def there() -> None:
    """Something to cite: :func:`there`."""
'''


def mini_config(folder: Path) -> None:
    """mkdocs.yml as ours, on a package ``dann`` under ``folder`` and one page (none of our hooks: they
    make pages of the real package)."""
    need_docs_extra()
    config = (ROOT / "mkdocs.yml").read_text()
    config = config.replace("docs/griffe_roles.py", str(DOCS / "griffe_roles.py")).replace(
        "paths: [.]", f"paths: [{folder}]").replace("hooks:\n  - docs/hooks.py\n", "")
    assert "hooks:" not in config and str(folder) in config
    (folder / "mkdocs.yml").write_text(config[:config.index("\nnav:")] + "\nnav:\n  - index.md\n")


@pytest.mark.parametrize("what", ["docstring", "link"])
def test_a_broken_reference_fails_the_strict_build(tmp_path, what):
    """Our mkdocs.yml (its plugins, strictness and griffe extension) on a one-page project: a docstring
    citing a name that does not exist, or a link to a missing page, fails ``--strict``."""
    mini_config(tmp_path)
    pkg = tmp_path / "dann"  # the extension reads the package called dann
    pkg.mkdir()
    ref = ":func:`dann.nowhere`" if what == "docstring" else ":func:`there`"
    (pkg / "__init__.py").write_text(MINI_MODULE.format(ref=ref))
    (tmp_path / "docs").mkdir()
    link = "[a page](missing.md)" if what == "link" else "[itself](index.md)"
    (tmp_path / "docs" / "index.md").write_text(f"# Mini\n\n{link}\n\n::: dann\n")
    p = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site", cwd=tmp_path)
    assert p.returncode != 0, p.stderr[-3000:]
    assert ("dann.nowhere" if what == "docstring" else "missing.md") in p.stderr, p.stderr[-3000:]


def test_the_mini_project_builds_when_nothing_is_broken(tmp_path):
    """The control of the test above: the same project with a good reference and link builds."""
    mini_config(tmp_path)
    (tmp_path / "dann").mkdir()
    (tmp_path / "dann" / "__init__.py").write_text(MINI_MODULE.format(ref=":func:`there`"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Mini\n\n[itself](index.md)\n\n::: dann\n")
    p = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'href="#dann.there"' in (tmp_path / "site" / "index.html").read_text()  # the role became a link


# -- the pages' commands, verbatim ------------------------------------------------------------
def code_blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", page.read_text(), flags=re.S)


def bash(cmd: str, cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    """``cmd`` in a plain bash: no profile, no rc file, no globstar."""
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", cmd], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


@pytest.mark.slow
def test_the_wandb_page_commands_work_verbatim_in_bash_on_a_real_sweep(tmp_path):
    env = env_with_bin(WANDB_MODE="offline", PYTHONPATH=str(ROOT), HOME=str(tmp_path), WANDB_SILENT="true")
    env.pop("WANDB_API_KEY", None)  # no account: nothing can be uploaded from here
    p = subprocess.run([sys.executable, "-m", "dann.run.train", "-m", "pair=moons", "method=source_only,dann",
                        "trainer.max_steps=30", "trainer.enable_progress_bar=false", "hydra.sweep.dir=multirun/sw"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    runs = sorted(tmp_path.glob("multirun/sw/*/wandb/offline-run-*"))
    assert len(runs) == 2
    files = [str(next(r.glob("run-*.wandb")).relative_to(tmp_path)) for r in runs]

    # what the README used to print finds nothing in bash: ** is * without globstar
    assert bash("ls -d multirun/**/wandb/offline-run-*", tmp_path, env).returncode != 0
    (block,) = [b for b in code_blocks(DOCS / "how-to" / "wandb.md", "bash") if "wandb sync" in b]
    dry, sync = [ln.split("  #")[0].strip() for ln in block.strip().splitlines()]
    assert "--dry-run" in dry and "--dry-run" not in sync
    p = bash(dry, tmp_path, env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Would sync 2 run(s)" in p.stderr + p.stdout and all(f in p.stderr + p.stdout for f in files), p.stderr
    p = bash(sync, tmp_path, env, timeout=120)  # found every run, then stopped for want of an account
    out = p.stdout + p.stderr
    assert "Syncing 2 run(s)" in out and all(f in out for f in files) and "No API key configured" in out, out

    # the sweep's table from its offline W&B runs: one column, as from the records (the W&B config is
    # the run's config alone, without Lightning's copy of the method's arguments, which split it)
    (block,) = [b for b in code_blocks(DOCS / "how-to" / "wandb.md", "bash") if "--wandb-dir" in b]
    line = block.strip().splitlines()[0].split("  #")[0].strip().replace("multirun/<date>/<time>", "multirun/sw")
    p = bash(line, tmp_path, env, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith("| ")]
    assert rows[0] == "| method | moons |" and len(rows) == 3, p.stdout
    assert rows[1].startswith("| source_only | .") and rows[2].startswith("| dann | .") and \
        all(r.endswith(" (1) |") for r in rows[1:]), p.stdout

    (block,) = [b for b in code_blocks(DOCS / "how-to" / "wandb.md", "bash") if "leet inspect" in b]
    lines = block.strip().splitlines()
    assert lines[0].startswith("RUN=multirun/<date>/<time>/")
    inspect = next(ln for ln in lines if "leet inspect" in ln).split("  #")[0].strip()
    p = bash(f"RUN=multirun/sw/1_dann_moons_s0\n{inspect}", tmp_path, env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert re.search(r"state\s+finished", p.stdout) and "test/tgt_acc" in p.stdout and "dann-moons-0" in p.stdout


@pytest.mark.slow
def test_the_extending_guide_runs_verbatim_from_a_folder_outside_the_repository(tmp_path):
    """The guide's files, written where their first line says, and its command that runs the method
    and the domains from that folder (20 steps instead of 2,000), then its dann-data line."""
    from test_data_custom import npz

    page = DOCS / "how-to" / "extending.md"
    written = []
    for lang in ("python", "yaml"):
        for block in code_blocks(page, lang):
            first = block.splitlines()[0]
            if first.startswith("# ") and "/" in first.split()[1] and not first.startswith("# in "):
                path = tmp_path / first.split()[1]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(block)
                written.append(first.split()[1])
    assert sorted(written) == ["myconf/domains/mine.yaml", "myconf/method/mmd.yaml", "mymethods/mmd.py"]
    data = tmp_path / "data"
    data.mkdir()  # the user's arrays (random pixels: what is tested is how they get in); the source keeps
    # 200 training images beside the 1,000 held out for validation (data.src_val)
    for name, n, seed in (("my_src_train", 1200, 0), ("my_src_test", 64, 1), ("my_tgt_train", 256, 2)):
        npz(data / f"{name}.npz", n=n, shape=(32, 32, 3), k=10, seed=seed)

    (block,) = [b for b in code_blocks(page, "bash") if "+domains=mine" in b]
    train, show = [ln.split("  #")[0].strip() for ln in block.strip().splitlines()]
    assert train.count("trainer.max_steps=2000") == 1
    env = env_with_bin(WANDB_MODE="offline", DANN_DATA_DIR=str(tmp_path / "root"), WANDB_SILENT="true")
    env.pop("PYTHONPATH", None)  # the command sets its own
    p = bash(train.replace("trainer.max_steps=2000", "trainer.max_steps=20"), tmp_path, env)
    assert p.returncode == 0, p.stderr[-4000:]
    (record,) = tmp_path.glob("outputs/*/*/results.json")
    import json

    rec = json.loads(record.read_text())
    assert (rec["status"], rec["method"], rec["source"], rec["target"], rec["steps"]) == \
        ("finished", "mmd", "my_src", "my_tgt", 20)
    header = (record.parent / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/mmd", "train/cls", "train/feat_norm"} <= set(header)  # the term, and what logs() watches
    p = bash(show, tmp_path, env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "root" / "grids" / "my_tgt.png").exists(), p.stdout

