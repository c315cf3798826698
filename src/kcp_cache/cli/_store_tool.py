"""``kcp-cache store check|recover --root-directory DIR``: the SQLite store's repair tools.

``check`` reads the store without changing it and prints what it found (exit code 0 when
healthy, 1 when damaged). ``recover`` rewrites a damaged store from what is readable,
keeps the damaged files renamed beside it and prints exactly what was lost (exit code 0
once the store can be started again). Both refuse while a server runs on the directory.
See docs/storage.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kcp_cache.storage import SQLITE_FILE_NAME, StorageError, check_store, recover_store

__all__ = ["add_store_parser", "run_store"]


def add_store_parser(commands: Any) -> None:
    """Add the ``store`` command (with ``check`` and ``recover``) to ``commands``."""
    store = commands.add_parser(
        "store",
        help="check or recover the embedded SQLite store of a root directory",
        description="Check or recover the embedded SQLite store (<root-directory>/cache.db).",
    )
    actions = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    for name, text in (
        ("check", "verify the store without changing it (exit code 1 when damaged)"),
        (
            "recover",
            "rewrite a damaged store from what is readable; report exactly what was lost",
        ),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument(
            "--root-directory", required=True, type=Path, help="the server's root directory"
        )


def run_store(args: argparse.Namespace) -> int:
    """Run ``store check`` or ``store recover``; prints the report, returns the exit code."""
    root: Path = args.root_directory
    prog = f"kcp-cache store {args.store_command}"
    if not root.is_dir():
        print(f"{prog}: {root} is not a directory", file=sys.stderr)
        return 1
    path = root / SQLITE_FILE_NAME
    try:
        report = check_store(path) if args.store_command == "check" else recover_store(path)
    except (StorageError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0 if report.healthy or args.store_command == "recover" else 1
