"""The ``curate`` command: thin argparse subcommands and a Hydra app for recipes.

Every subcommand calls one Python function that tests call too (``curation.ops``,
``curation.describe``, ``curation.catalog``, ``curation.report``, ``curation.recipes``,
``collector.storage.verify_dataset``, ``collector.scores.score_dataset``); this module only
parses, prints and maps ``HarvestError`` to one line and an exit code (2 for usage mistakes,
1 otherwise; ``--verbose`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from collector import storage
from collector.errors import HarvestError, HarvestWarning, UsageError
from collector.redact import install_log_redaction, redact_hydra_run, redact_text

__all__ = ["COMMANDS", "build_parser", "main"]

#: The subcommands; anything else that looks like ``KEY=VALUE`` goes to the recipe app.
COMMANDS = ("combine", "filter", "split", "list", "show", "verify", "delete", "report",
            "namespace", "recipe", "push", "pull", "export", "import-minari",
            "score")  # fmt: skip

_EPILOG = """\
recipes (a Hydra app: overrides and -m multirun work):
  curate recipe=NAME [KEY=VALUE ...] [--dry-run]     run conf/recipe/NAME.yaml
  curate recipe NAME [KEY=VALUE ...] [--dry-run]     the same
  curate -m recipe=NAME recipe.seed=0,1              one run per seed

expressions (filter --where, recipe filter steps) use the per-episode fields
  id, seed, has_seed, length, return, terminated, truncated, source, source_id
  e.g. "return >= 200 and length < 500", "terminated", "seed % 2 == 0"
"""


def _recipe_names() -> list[str]:
    folder = resources.files("conf") / "recipe"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _derived_id(dataset_id: str, part: str) -> str:
    """``ns/name-vN`` -> ``ns/name-PART-vN`` (the ids of ``split`` outputs)."""
    ns, name, version = storage.parse_dataset_id(dataset_id)
    return f"{ns + '/' if ns else ''}{name}-{part}-v{version}"


def _summary(ds: Any) -> str:
    return f"{ds.id}: {ds.total_episodes:,} episodes, {ds.total_steps:,} steps"


# -- subcommands ----------------------------------------------------------------------------------


def _combine(args: argparse.Namespace) -> int:
    from curation.ops import combine_datasets

    meta = {"description": args.description} if args.description else None
    ds = combine_datasets(
        args.ids, args.into, root=args.root, overwrite=args.overwrite, metadata=meta
    )
    print(_summary(ds))
    return 0


def _filter(args: argparse.Namespace) -> int:
    from curation.api import load_dataset

    view = load_dataset(args.id, root=args.root).filter_episodes(args.where)
    head = f"{args.id} where {args.where}"
    if args.into is not None and not view.total_episodes:  # as a recipe refuses an empty output
        raise UsageError(f"{head}: no episodes match; nothing saved (loosen the expression)")
    if args.dry_run or args.into is None:
        tail = f"dry run: would save {args.into}" if args.into else "not saved: pass --into NEW_ID"
        print(f"{head}: {view.total_episodes:,} episodes, {view.total_steps:,} steps ({tail})")
        return 0
    print(_summary(view.save(args.into, root=args.root, overwrite=args.overwrite)))
    return 0


def _split(args: argparse.Namespace) -> int:
    from curation.api import load_dataset
    from curation.ops import draw_seed, split_dataset

    sizes: list[int | float] = []
    for text in args.sizes.split(","):
        try:
            sizes.append(int(text) if text.strip().isdigit() else float(text))
        except ValueError:
            raise UsageError(f"--sizes {args.sizes!r}: {text!r} is not a number") from None
    names = args.names.split(",") if args.names else [f"part{k}" for k in range(len(sizes))]
    if len(names) != len(sizes) or len(set(names)) != len(names):
        raise UsageError(f"--names needs one distinct name per size ({names} for {sizes})")
    ids = [_derived_id(args.id, n) for n in names]  # checked before anything is written
    if not args.overwrite:
        for new_id in ids:
            if (storage.dataset_path(new_id, args.root) / storage.METADATA_FILE).exists():
                raise UsageError(f"dataset {new_id!r} already exists; pass --overwrite")
    seed = draw_seed() if args.seed is None else args.seed  # recorded in the lineage either way
    parts = split_dataset(load_dataset(args.id, root=args.root), sizes, seed=seed)
    for part, new_id in zip(parts, ids, strict=True):
        print(_summary(part.save(new_id, root=args.root, overwrite=args.overwrite)))
    if args.seed is None:
        print(f"seed {seed} (drawn; pass --seed {seed} to repeat this split)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from curation.catalog import list_local_datasets
    from curation.describe import dataset_rows, render_table

    if args.where == "local" and not args.remote:
        root = storage.datasets_root(args.root)
        rows = dataset_rows(list_local_datasets(root))
        title = f"Local harvest datasets ({root})"
    else:
        from curation.remotes import open_remote

        if args.where not in ("local", "remote") and "://" not in args.where:
            raise UsageError(f"curate list {args.where}: use local, remote or a remote URI")
        remote = open_remote(args.where if "://" in args.where else args.remote)
        rows = dataset_rows(remote.list())
        title = f"harvest datasets on {remote.uri}"
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows, title), end="")
    return 0


def _show(args: argparse.Namespace) -> int:
    from curation.api import load_dataset
    from curation.describe import describe_dataset

    ds = load_dataset(args.id, root=args.root)
    if args.json:
        print(json.dumps(ds.metadata, indent=2))
    else:
        print(describe_dataset(ds), end="")
    return 0


def _verify(args: argparse.Namespace) -> int:
    failed = 0
    for dataset_id in args.ids:
        report = storage.verify_dataset(dataset_id, args.root)
        if report.ok:
            print(f"{dataset_id}: ok ({report.episodes:,} episodes, {report.steps:,} steps, "
                  f"fingerprint {report.fingerprint and report.fingerprint[:16]})")  # fmt: skip
        else:
            failed += 1
            print(f"{dataset_id}: {len(report.problems)} problem(s)")
            for problem in report.problems:
                print(f"  {problem}")
    return 1 if failed else 0


def _delete(args: argparse.Namespace) -> int:
    from curation.api import load_dataset
    from curation.catalog import delete_dataset

    if args.remote:
        return _delete_remote(args)
    found = [load_dataset(i, root=args.root) for i in args.ids]  # all exist, or nothing goes
    for ds in found:
        print(f"  {_summary(ds)}")
    if not _confirm(f"Delete these {len(found)} local dataset(s)?", args.yes):
        print("nothing deleted")
        return 1
    for ds in found:
        delete_dataset(ds.id, root=args.root)
        print(f"deleted {ds.id}")
    return 0


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError("curate delete asks before deleting; pass --yes to skip the question")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _delete_remote(args: argparse.Namespace) -> int:
    from curation.remotes import open_remote

    remote = open_remote(args.remote)
    found = {i: remote.metadata(i) for i in args.ids}  # all exist, or nothing goes
    for dataset_id, meta in found.items():
        print(f"  {dataset_id}: {meta.get('total_episodes', 0):,} episodes, "
              f"{meta.get('total_steps', 0):,} steps")  # fmt: skip
    if not _confirm(f"Delete these {len(found)} dataset(s) from {remote.uri}?", args.yes):
        print("nothing deleted")
        return 1
    for dataset_id in found:
        remote.delete(dataset_id)
        print(f"deleted {dataset_id} from {remote.uri}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from curation.remotes import open_remote

    remote = open_remote(args.remote)
    for dataset_id in args.ids:
        print(remote.push(dataset_id, root=args.root, overwrite=args.overwrite).render())
    return 0


def _pull(args: argparse.Namespace) -> int:
    from curation.remotes import open_remote

    remote = open_remote(args.remote)
    for dataset_id in args.ids:
        print(remote.pull(dataset_id, root=args.root, overwrite=args.overwrite).render())
    return 0


def _export(args: argparse.Namespace) -> int:
    from curation.minari import to_minari

    path = to_minari(
        args.id,
        args.minari_root,
        args.data_format,
        new_dataset_id=args.into,
        overwrite=args.overwrite,
        root=args.root,
    )
    print(f"{args.id} exported in Minari's format to {path}")
    return 0


def _import_minari(args: argparse.Namespace) -> int:
    from curation.minari import from_minari

    ds = from_minari(
        args.source,
        args.into,
        minari_root=args.minari_root,
        root=args.root,
        overwrite=args.overwrite,
        progress=sys.stderr.isatty(),
    )
    print(
        f"imported {args.source} as {ds.id}: {ds.total_episodes} episodes, {ds.total_steps} steps"
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from curation.api import load_dataset
    from curation.report import plot_report

    ds = load_dataset(args.id, root=args.root)
    print(f"wrote {plot_report(ds, args.out, bins=args.bins)}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from collector.scores import score_dataset

    scores = score_dataset(
        args.id,
        episodes=args.episodes,
        num_envs=args.num_envs,
        root=args.root,
        trust_remote_code=args.trust_remote_code,
        ref_min_score=args.min,
        ref_max_score=args.max,
    )
    how = scores.how
    given = how.get("given", {}) if how.get("method") != "given" else scores.fields()
    lo = "given" if "ref_min_score" in given else "random policy"
    hi = "given" if "ref_max_score" in given else "its policy"
    tail = f", {how['episodes']} episodes each" if "episodes" in how else ""
    print(f"{args.id}: ref_min_score {scores.ref_min_score:g} ({lo}), ref_max_score "
          f"{scores.ref_max_score:g} ({hi}){tail}")  # fmt: skip
    return 0


def _namespace(args: argparse.Namespace) -> int:
    from curation import catalog
    from curation.describe import describe_namespace

    if args.action == "create":
        if not args.namespace:
            raise UsageError("curate namespace create needs a NAMESPACE")
        existed = args.namespace in catalog.list_namespaces(args.root)
        catalog.create_namespace(
            args.namespace, args.description, root=args.root, exist_ok=args.exist_ok
        )
        print(f"{'updated' if existed else 'created'} namespace {args.namespace}")
    elif args.action == "list":
        names = catalog.list_namespaces(args.root)
        print(json.dumps(names) if args.json else "\n".join(names) or "no namespaces")
    else:
        if not args.namespace:
            raise UsageError("curate namespace show needs a NAMESPACE")
        if args.json:
            meta = catalog.get_namespace_metadata(args.namespace, root=args.root)
            print(json.dumps(meta, indent=2))
        else:
            print(describe_namespace(args.namespace, root=args.root), end="")
    return 0


def _recipe(args: argparse.Namespace) -> int:
    extra = ["dry_run=true"] if args.dry_run else []
    if args.root:
        extra.append(f"datasets_root={args.root}")
    if args.config_dir:
        extra.append(f"--config-dir={args.config_dir}")
    return _run_hydra([f"recipe={args.name}", *args.overrides, *extra])


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``curate`` argument parser (subcommands; recipes go through Hydra)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", help="datasets root (default $HARVEST_DATASETS or "
                        "~/.harvest/datasets)")  # fmt: skip
    common.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    parser = argparse.ArgumentParser(
        prog="curate",
        description="Combine, filter, split, inspect and check harvest datasets.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        name: str,
        run: Callable[[argparse.Namespace], int],
        help: str,
        parents: Sequence[argparse.ArgumentParser] = (),
    ) -> Any:
        assert name in COMMANDS, name
        p = sub.add_parser(name, help=help, description=help, parents=[common, *parents])
        p.set_defaults(run=run)
        return p

    p = add("combine", _combine, "combine datasets into a new one (spaces and specs checked)")
    p.add_argument("ids", nargs="+", metavar="ID", help="datasets to combine, in order")
    p.add_argument("--into", required=True, metavar="NEW_ID", help="the new dataset's id")
    p.add_argument("--description", help="description of the new dataset")
    p.add_argument("--overwrite", action="store_true", help="replace NEW_ID if it exists")

    p = add("filter", _filter, "keep the episodes matching an expression (no step data read)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--where", required=True, metavar="EXPR", help='e.g. "return >= 200"')
    p.add_argument("--into", metavar="NEW_ID", help="save the result as this dataset")
    p.add_argument("--dry-run", action="store_true", help="count only; write nothing")
    p.add_argument("--overwrite", action="store_true", help="replace NEW_ID if it exists")

    p = add("split", _split, "split into random parts, saved as ID with -NAME before -vN")
    p.add_argument("id", metavar="ID")
    p.add_argument("--sizes", required=True, help="counts (700,300) or fractions (0.8,0.2)")
    p.add_argument("--names", help="one name per size (default part0,part1,...)")
    p.add_argument("--seed", type=int, help="seed of the permutation (default: random)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--remote", metavar="URI", help="file:///path, hf://org[/prefix] or "
                        "gcp://bucket[/prefix] (default $HARVEST_REMOTE)")  # fmt: skip

    p = add("list", _list, "list datasets as a table (name, episodes, steps, size, author)",
            [remote])  # fmt: skip
    p.add_argument("where", nargs="?", default="local", help="local (default), remote or a URI")
    p.add_argument("--json", action="store_true", help="print JSON rows instead")

    p = add("push", _push, "publish local datasets to a remote (resumable, checksummed)", [remote])
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--overwrite", action="store_true", help="replace other content on the remote")

    p = add("pull", _pull, "download datasets from a remote (every file checked)", [remote])
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--overwrite", action="store_true", help="replace a different local copy")

    p = add("show", _show, "spaces, env spec, statistics, provenance and lineage of a dataset")
    p.add_argument("id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print metadata.json instead")

    p = add("verify", _verify, "re-hash shards and digests against metadata.json (exit 1 if bad)")
    p.add_argument("ids", nargs="+", metavar="ID")

    p = add("delete", _delete, "delete local datasets, or with --remote remote ones (asks first)",
            [remote])  # fmt: skip
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")

    p = add("export", _export, "write a dataset in Minari's format (minari.load_dataset opens it)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--format", choices=("minari",), default="minari", help="minari (default)")
    p.add_argument("--minari-root", metavar="PATH", help="default $MINARI_DATASETS_PATH or "
                   "~/.minari/datasets")  # fmt: skip
    p.add_argument("--data-format", choices=("hdf5", "arrow", "parquet"), default="hdf5",
                   help="Minari's storage format (default hdf5)")  # fmt: skip
    p.add_argument("--into", metavar="NEW_ID", help="the id in Minari (default: ID)")
    p.add_argument("--overwrite", action="store_true", help="replace that Minari dataset")

    p = add("import-minari", _import_minari, "import a Minari dataset (hdf5, arrow or parquet)")
    p.add_argument("source", metavar="ID_OR_PATH", help="a Minari id, or a Minari dataset folder")
    p.add_argument("--minari-root", metavar="PATH", help="default $MINARI_DATASETS_PATH or "
                   "~/.minari/datasets")  # fmt: skip
    p.add_argument("--into", metavar="NEW_ID", help="the harvest id (default: the Minari id)")
    p.add_argument("--overwrite", action="store_true", help="replace that harvest dataset")

    p = add("report", _report, "histograms of episode return and length, per source (PNG)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.add_argument("--bins", type=int, default=30)

    p = add("score", _score, "store reference scores (ref_min_score/ref_max_score): seeded "
            "rollouts of a random policy and the dataset's own")  # fmt: skip
    p.add_argument("id", metavar="ID")
    p.add_argument("--episodes", type=int, default=10, metavar="N",
                   help="episodes per policy (default 10)")  # fmt: skip
    p.add_argument("--num-envs", type=int, default=1, metavar="N",
                   help="envs stepped together for a batched policy (default 1)")  # fmt: skip
    p.add_argument("--min", type=float, metavar="X", help="store X as ref_min_score (no rollout)")
    p.add_argument("--max", type=float, metavar="Y", help="store Y as ref_max_score (no rollout)")
    p.add_argument("--trust-remote-code", action="store_true", help="build a policy or env the "
                   "dataset names that runs other code (a checkpoint, your own class)")  # fmt: skip

    p = add("namespace", _namespace, "create, list or show namespaces (folders of ids)")
    p.add_argument("action", choices=("create", "list", "show"))
    p.add_argument("namespace", nargs="?", metavar="NAMESPACE")
    p.add_argument("--description", help="for create")
    p.add_argument("--exist-ok", action="store_true", help="for create: update an existing one")
    p.add_argument("--json", action="store_true", help="for list and show")

    names = ", ".join(_recipe_names())
    p = add("recipe", _recipe, f"run a recipe from conf/recipe/ ({names})")
    p.add_argument("name", metavar="NAME")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    p.add_argument("--config-dir", "-cd", metavar="DIR", help="also look for DIR/recipe/NAME.yaml")
    return parser


# -- recipes through Hydra ------------------------------------------------------------------------


def _recipe_app(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from curation.recipes import run_recipe

    redact_hydra_run()  # no secret stays in Hydra's run files (issue 16 item 10)
    hc = HydraConfig.get()
    name = hc.runtime.choices.get("recipe") or "recipe"
    try:
        if cfg.get("recipe") is None:
            raise UsageError(
                f"no recipe given; use curate recipe=NAME (shipped: {', '.join(_recipe_names())})"
            )
        try:
            recipe = OmegaConf.to_container(cfg.recipe, resolve=True)
        except OmegaConfBaseException as e:
            msg = str(e).splitlines()[0]
            raise UsageError(f"recipe {name}: {msg}; fix the recipe or the override") from e
        result = run_recipe(
            recipe,
            name=name,
            dry_run=bool(cfg.dry_run),
            overwrite=bool(cfg.overwrite),
            root=cfg.datasets_root,
            provenance={"recipe": recipe, "overrides": list(hc.overrides.task)},
            remote=cfg.get("remote"),
        )
    except (HarvestError, OSError) as e:
        error = storage.user_error(e)
        if error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _exit_with(error)
    print(result.render())


#: Hydra's flags that take their value as the next argument (``--config-dir DIR``).
_HYDRA_VALUE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn",
                      "--cfg", "-c", "--package", "-p", "--experimental-rerun",
                      "--root")  # fmt: skip


def _words(argv: Sequence[str]) -> list[str]:
    """The arguments that are neither flags nor a flag's value."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in _HYDRA_VALUE_FLAGS:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
    return out


def _check_recipe_files(argv: Sequence[str]) -> None:
    """Refuse a named recipe file with a YAML syntax error before Hydra loads it."""
    from curation.recipes import check_recipe_syntax

    config_dir = None
    for i, a in enumerate(argv):
        if a in ("--config-dir", "-cd") and i + 1 < len(argv):
            config_dir = argv[i + 1]
        elif a.startswith("--config-dir="):
            config_dir = a.split("=", 1)[1]
    for word in _words(argv):
        if not word.startswith("recipe="):
            continue
        for name in word.split("=", 1)[1].split(","):
            name = name.strip()
            folders = [*([Path(config_dir)] if config_dir else []), resources.files("conf")]
            for folder in folders:
                path = folder / "recipe" / f"{name}.yaml"
                if name and path.is_file():
                    check_recipe_syntax(Path(str(path)), name)
                    break


def _print_error(err: HarvestError) -> int:
    """Print ``err`` as the one ``curate: error:`` line (secrets masked); its exit code."""
    print(f"curate: error: {redact_text(str(err))}", file=sys.stderr)
    return err.exit_code


def _exit_with(err: HarvestError) -> NoReturn:
    sys.exit(_print_error(err))  # SystemExit passes through Hydra's error report


def _run_hydra(argv: Sequence[str]) -> int:
    import hydra

    from collector.yaml_limits import install_yaml_limits

    install_yaml_limits(_exit_with)  # a recipe may not expand into a huge config

    try:
        _check_recipe_files(argv)
    except UsageError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        return _print_error(e)

    app = hydra.main(version_base="1.3", config_path="pkg://conf", config_name="curate")(
        _recipe_app
    )
    saved = sys.argv
    sys.argv = ["curate", *("dry_run=true" if a == "--dry-run" else a for a in argv)]
    try:
        app()
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    finally:
        sys.argv = saved
    return 0


def _warn_in_one_line() -> None:
    """Print each ``HarvestWarning`` as one ``curate: warning: ...`` line.

    A skipped listing entry, say, instead of Python's two-line form; other warnings keep
    theirs. Call inside ``warnings.catch_warnings()``, which restores both settings.
    """
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *rest: Any, **kw: Any) -> None:
        if issubclass(category, HarvestWarning):
            print(f"curate: warning: {redact_text(str(message))}", file=sys.stderr)
        else:
            shown(message, category, *rest, **kw)

    warnings.simplefilter("always", HarvestWarning)
    warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns (and, from the console script, exits with) the exit code."""
    install_log_redaction()  # no secret in a log line, Hydra's included (issue 16 item 10)
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    first = next(iter(_words(args_in)), None)
    if first is not None and first not in COMMANDS and ("=" in first or "-m" in args_in):
        return _exit(_run_hydra(args_in), argv)  # curate recipe=NAME ... / curate -m ...
    args = parser.parse_args(args_in)
    if args.command is None:
        parser.print_help()
        return _exit(0, argv)
    try:
        with warnings.catch_warnings():
            _warn_in_one_line()
            code = args.run(args)
    except (HarvestError, OSError) as e:  # OSError: a full or read-only disk, met below
        error = storage.user_error(e)  # the durable I/O layer
        if error is None or args.verbose:
            raise
        code = _print_error(error)
    except KeyboardInterrupt:
        print("curate: interrupted", file=sys.stderr)
        code = 130
    return _exit(code, argv)


def _exit(code: int, argv: Sequence[str] | None) -> int:
    if argv is None:  # the console script
        sys.exit(code)
    return code
