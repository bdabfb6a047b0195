"""The command line's overrides checked before Hydra composes the run: a misspelt key is one line.

Hydra refuses an override of a key that does not exist with several lines of its own (``Could
not override 'optim.lrr'. To append to your config use +optim.lrr=...``); every other refusal of
``dann-train`` is one ``dann-train: error:`` line with exit status 2. :func:`unknown_keys` finds
such keys first, by composing the config with the command line's group choices only (the first
value of a swept group) and looking each plain ``key=value`` up in it.
"""

from __future__ import annotations

from typing import Sequence


def unknown_keys(argv: Sequence[str], config_dir: str, config_name: str = "train") -> list[str]:
    """The keys of ``key=value`` overrides in ``argv`` that the composed config lacks (``+key``,
    ``++key``, ``~key`` and ``hydra.*`` are left to Hydra, as is anything it cannot parse)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    args = [a for a in argv if not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException:
        return []  # a syntax error: Hydra's own message says where
    if GlobalHydra.instance().is_initialized():
        return []  # inside a running Hydra app (tests): nothing to pre-check
    try:
        with initialize_config_dir(config_dir, version_base="1.3"):
            groups = _group_names(config_dir)
            choices = [f"{o.key_or_group}={_first(o)}" for o in overrides
                       if o.key_or_group in groups and not o.is_delete() and not o.is_add()]
            cfg = compose(config_name, overrides=choices)
    except Exception:  # noqa: BLE001 (a bad group choice: Hydra's own message names the options)
        return []
    # unresolved: a value that interpolates what only a running Hydra app has (output_dir) is still a key
    tree = OmegaConf.to_container(cfg, resolve=False)
    bad = []
    for o in overrides:
        key = o.key_or_group
        if o.is_add() or o.is_delete() or o.is_force_add() or key.startswith("hydra") or key in groups or "/" in key:
            continue
        if not _has(tree, key):
            bad.append(key)
    return bad


def _has(tree, key: str) -> bool:
    """Whether the dotted ``key`` names an entry of the nested dicts (and lists) ``tree``."""
    for part in key.split("."):
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and part.isdigit() and int(part) < len(tree):
            tree = tree[int(part)]
        else:
            return False
    return True


def _first(o) -> str:
    """The (first) value of a group override, as the command line wrote it."""
    v = o.value()
    if o.is_sweep_override():
        v = next(iter(o.sweep_string_iterator()))
    return str(v)


def _group_names(config_dir: str) -> set[str]:
    from pathlib import Path

    return {p.name for p in Path(config_dir).iterdir() if p.is_dir()}


def refusal(keys: list[str]) -> str:
    """The one-line message for misspelt keys."""
    return (f"unknown key(s) {', '.join(keys)}: not in the config (misspelt? `dann-train --help` lists the groups, "
            f"`dann-train --cfg job` every key; a new key is added with +{keys[0]}=...)")
