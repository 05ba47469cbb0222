"""Bounds on config YAML: a small file may not expand into a huge config (issue 16 item 11).

YAML aliases let 352 bytes stand for a billion strings ("billion laughs"): PyYAML shares the
aliased objects, but OmegaConf copies every one into its own node, which took 50-100 s and
gigabytes for one recipe. Hydra reads every config file (recipes under ``--config-dir``
included) with ``OmegaConf.load``, which asks ``omegaconf._utils.get_yaml_loader`` for its
loader class on each call, and neither offers another hook. ``install_yaml_limits`` swaps
that factory for one whose loader refuses, before anything is built:

* a document larger than ``MAX_YAML_BYTES``;
* a document whose nodes, counted with every alias expanded, exceed ``MAX_YAML_NODES``
  (counted once per distinct node, so the check is linear in the file), that refers to
  itself through an alias, or that nests deeper than ``MAX_YAML_DEPTH``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NoReturn

import yaml

from collector.errors import UsageError

__all__ = [
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "YamlLimitError",
    "expanded_nodes",
    "install_yaml_limits",
]

#: The largest config file read (the shipped ones are under 2 kB).
MAX_YAML_BYTES = 1 << 20
#: The most nodes a config may expand to, aliases expanded.
MAX_YAML_NODES = 100_000
#: The deepest nesting a config may have (the shipped ones nest 4 levels).
MAX_YAML_DEPTH = 100


class YamlLimitError(UsageError):
    """A config file that is too large or expands (through aliases) beyond the bound."""


def _name(stream: Any) -> str:
    return str(getattr(stream, "name", None) or "<yaml text>")


def _size(stream: Any) -> int | None:
    if isinstance(stream, str | bytes):
        return len(stream)
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None


def expanded_nodes(node: yaml.Node, limit: int, max_depth: int = 100) -> int:
    """Nodes of ``node`` with every alias expanded (stops counting past ``limit``).

    Raises:
        ValueError: the node contains itself (a recursive alias) or nests deeper than
            ``max_depth``.
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(n: yaml.Node, depth: int) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise ValueError("refers to itself through an alias")
        if depth > max_depth:
            raise ValueError(f"nests deeper than {max_depth} levels")
        total = 1
        if isinstance(n, yaml.SequenceNode | yaml.MappingNode):
            open_.add(key)
            children = (
                n.value if isinstance(n, yaml.SequenceNode) else [c for kv in n.value for c in kv]
            )
            for child in children:
                total += size(child, depth + 1)
                if total > limit:
                    break
            open_.discard(key)
        sizes[key] = total
        return total

    return size(node, 0)


#: Set by ``install_yaml_limits(report=...)``: how a CLI reports a refusal.
_report: list[Callable[[YamlLimitError], NoReturn]] = []


def _refuse(err: YamlLimitError) -> NoReturn:
    if _report and os.environ.get("HYDRA_FULL_ERROR") != "1":
        _report[-1](err)
    raise err


def _bounded(factory: Any) -> Any:
    def get_yaml_loader() -> Any:
        base = factory()

        class BoundedLoader(base):  # type: ignore[misc,valid-type]
            def __init__(self, stream: Any) -> None:
                self._harvest_name = _name(stream)
                size = _size(stream)
                if size is not None and size > MAX_YAML_BYTES:
                    _refuse(
                        YamlLimitError(
                            f"config {self._harvest_name} is larger than {MAX_YAML_BYTES:,} "
                            f"bytes ({size:,}); make it smaller"
                        )
                    )
                super().__init__(stream)

            def compose_document(self) -> Any:
                try:
                    return super().compose_document()
                except RecursionError:  # PyYAML composes nested nodes recursively
                    _refuse(
                        YamlLimitError(
                            f"config {self._harvest_name} nests deeper than {MAX_YAML_DEPTH} "
                            "levels; flatten it"
                        )
                    )

            def construct_document(self, node: yaml.Node) -> Any:
                try:
                    nodes = expanded_nodes(node, MAX_YAML_NODES, MAX_YAML_DEPTH)
                except ValueError as e:
                    _refuse(YamlLimitError(f"config {self._harvest_name} {e}; flatten it"))
                if nodes > MAX_YAML_NODES:
                    _refuse(
                        YamlLimitError(
                            f"config {self._harvest_name} expands to more than "
                            f"{MAX_YAML_NODES:,} values through its YAML aliases (*name); write "
                            "the values out or use fewer aliases"
                        )
                    )
                return super().construct_document(node)

        return BoundedLoader

    get_yaml_loader.harvest_bounded = True  # type: ignore[attr-defined]
    return get_yaml_loader


def install_yaml_limits(report: Callable[[YamlLimitError], NoReturn] | None = None) -> None:
    """Make every ``OmegaConf.load`` (so Hydra's config loading) refuse oversized YAML.

    Idempotent. The CLIs call it before Hydra reads any config file.

    Args:
        report: called with the error instead of raising it (unless ``HYDRA_FULL_ERROR=1``):
            Hydra turns any exception from its config loading into a traceback, so a CLI
            passes a function that prints one line and exits.
    """
    from omegaconf import _utils

    if report is not None:
        _report[:] = [report]
    if not getattr(_utils.get_yaml_loader, "harvest_bounded", False):
        _utils.get_yaml_loader = _bounded(_utils.get_yaml_loader)
