"""Entry point of the ``popnas`` command: ``search``, ``train-cell`` and ``validate``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from popnas import __version__
from popnas.spec import ManifestError, NASSearch, load_manifest

logger = logging.getLogger("popnas")

EXIT_INVALID = 2
EXIT_STORAGE = 3

LOG_FILE_ONLY = {"log_file_only": True}
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="popnas", description="Pareto-optimal progressive neural architecture search."
    )
    parser.add_argument("--version", action="version", version=f"popnas {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log DEBUG messages to the console and to OUT/popnas.log"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="run (or continue) a search on this machine")
    search.add_argument("-f", "--file", required=True, type=Path, help="NASSearch manifest (YAML)")
    search.add_argument(
        "--store",
        "--out",
        dest="store",
        help=(
            "where results go: a folder or s3://bucket/prefix (default: spec.storage.uri, else "
            "popnas-results/<metadata.name>); rerun to continue"
        ),
    )
    search.add_argument(
        "--workers", type=int, help="trainer processes (default: trainers.parallelism, else one per two cores)"
    )

    train = commands.add_parser("train-cell", help="train one cell with the manifest's recipe and print its result")
    train.add_argument("-f", "--file", required=True, type=Path, help="NASSearch manifest (YAML)")
    train.add_argument(
        "--cell",
        required=True,
        help="cell such as \"[(-2, '7 conv', -1, 'gru')]\" within the manifest's search space; '[]' is the empty cell",
    )
    train.add_argument(
        "--store", "--out", dest="store", help="also store the result (and model) in this folder or s3://bucket/prefix"
    )

    validate = commands.add_parser("validate", help="check a manifest and print it with defaults filled in")
    validate.add_argument("-f", "--file", required=True, type=Path, help="NASSearch manifest (YAML)")
    return parser


_handlers: list[logging.Handler] = []
"""Handlers this module added to the root logger, replaced when ``main`` runs again in one process."""


def _configure_logging(verbose: bool, log_file: Path | None = None) -> None:
    root = logging.getLogger()
    for handler in _handlers:
        root.removeHandler(handler)
        handler.close()
    _handlers.clear()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # Records that repeat a message the command prints itself go to the log file only.
    console.addFilter(lambda record: not getattr(record, "log_file_only", False))
    root.addHandler(console)
    _handlers.append(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        _handlers.append(handler)
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _interrupt(signal_number: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signal_number).name)


def _dataset_problem(search: NASSearch) -> str | None:
    """Load the dataset once (trainers reuse the cached copy) and return why it cannot be used, if so."""
    from popnas.storage import S3Settings, StorageError
    from popnas.train.datasets import load_dataset

    uri = search.spec.dataset.uri
    try:
        load_dataset(uri, task=search.spec.task, storage=S3Settings.from_spec(search.spec.storage))
    except (ValueError, OSError, StorageError) as error:
        return f"spec.dataset.uri {uri!r} cannot be loaded: {error}"
    return None


def _log_file(search: NASSearch) -> Path:
    """Return the log file: next to local results, or popnas-results/NAME on this machine for S3 results."""
    uri = search.spec.storage.uri or ""
    folder = Path(uri) if "://" not in uri and uri else Path("popnas-results") / search.metadata.name
    return folder / "popnas.log"


def _search(args: argparse.Namespace, search: NASSearch) -> int:
    from popnas.cli.progress import ProgressPrinter
    from popnas.cli.summary import print_summary
    from popnas.search.api import run_search, with_store
    from popnas.storage import StorageError

    if args.workers is not None and args.workers < 1:
        print(f"popnas: --workers must be at least 1, received {args.workers}", file=sys.stderr)
        return EXIT_INVALID
    problem = _dataset_problem(search)
    if problem is not None:
        print(f"popnas: {problem}", file=sys.stderr)
        return EXIT_INVALID
    search = with_store(search, args.store)
    store = search.spec.storage.uri
    log_file = _log_file(search)
    _configure_logging(args.verbose, log_file)
    printer = ProgressPrinter()
    # SIGTERM (kill, a container stop) takes the same path as Ctrl-C: trainers are stopped and
    # every finished result is already stored.
    signal.signal(signal.SIGTERM, _interrupt)
    started = f"search '{search.metadata.name}' (run {search.run_id}), results in {store}"
    logger.info("%s, manifest %s", started, args.file)
    print(f"popnas: {started}, log in {log_file}", file=sys.stderr)
    try:
        outcome = run_search(search, workers=args.workers, listener=printer)
    except KeyboardInterrupt:
        logger.info("search interrupted; finished candidates are stored in %s", store)
        print(
            f"\npopnas: interrupted; finished candidates are stored in {store}. "
            "Run the same command again to continue.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except StorageError as error:
        logger.error("search stopped: %s", error, extra=LOG_FILE_ONLY)
        print(f"\npopnas: {error}", file=sys.stderr)
        return EXIT_STORAGE
    summary = outcome.summary()
    logger.info(
        "search finished: trained %d, reused %d, failed %d, in %.0f s",
        summary["trained"],
        summary["reused"],
        summary["failed"],
        summary["wallTime"],
    )
    print_summary(summary, outcome.store.location(f"{outcome.prefix}/summary.json"))
    return 0


def _train_cell(args: argparse.Namespace, search: NASSearch) -> int:
    from popnas.results import ResultStatus
    from popnas.search.api import with_store
    from popnas.space import Cell, CellFormatError, SearchSpace
    from popnas.storage import S3Settings, StorageError, open_store
    from popnas.train.proxy import train_candidate

    _configure_logging(args.verbose)
    spec = search.spec
    try:
        cell = Cell.parse(args.cell)
        space = SearchSpace.create(
            spec.operators,
            max_blocks=spec.search_space.max_blocks,
            lookback=spec.search_space.lookback,
            dims=spec.task.dims,
        )
        space.check_cell(cell)
    except (CellFormatError, ValueError) as error:
        print(f"popnas: invalid --cell: {error}", file=sys.stderr)
        return EXIT_INVALID
    if args.store is not None:
        search = with_store(search, args.store)
    result = train_candidate(search, cell)
    if args.store is not None and result.status is not ResultStatus.FAILED:
        store = open_store(args.store, S3Settings.from_spec(search.spec.storage))
        try:
            written = store.put_result(result)
        except StorageError as error:
            print(json.dumps(result.to_json(), indent=2))
            print(f"popnas: {error}", file=sys.stderr)
            return EXIT_STORAGE
        if not written:
            stored = store.location(f"results/{result.key}.json")
            print(
                f"popnas: a result for this candidate is already stored at {stored}; "
                "it was kept, and the result below was not stored",
                file=sys.stderr,
            )
    print(json.dumps(result.to_json(), indent=2))
    return 0 if result.succeeded else 1


def main(argv: Sequence[str] | None = None) -> int:
    # Set before TensorFlow loads: its C++ start-up notices are noise on a user's terminal.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    try:
        search = load_manifest(args.file)
    except ManifestError as error:
        print(f"popnas: {error}", file=sys.stderr)
        return EXIT_INVALID
    if args.command == "validate":
        problem = _dataset_problem(search)
        if problem is not None:
            print(f"popnas: {problem}", file=sys.stderr)
            return EXIT_INVALID
        print(json.dumps(search.model_dump(mode="json", by_alias=True), indent=2))
        return 0
    if args.command == "train-cell":
        return _train_cell(args, search)
    return _search(args, search)


if __name__ == "__main__":
    sys.exit(main())
