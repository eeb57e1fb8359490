#!/usr/bin/env python
"""Where a run or sweep stands: python launch/status.py <run or sweep dir> [--watch] [--json]"""

import argparse
import json
import sys
import time
from pathlib import Path

from rich.live import Live

from hpcgen.console import print_status, status_table, wide_console
from hpcgen.status import sweep_status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path, help="a run directory or a sweep directory")
    parser.add_argument("--json", action="store_true", help="print the data as JSON")
    parser.add_argument("--watch", action="store_true", help="refresh every few seconds (TTY)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    args = parser.parse_args()
    if not args.path.is_dir():
        print(
            f"hpcgen: error: {args.path} is not a directory: give a run or sweep directory "
            "(outputs/DATE/TIME or multirun/DATE/TIME)",
            file=sys.stderr,
        )
        return 2
    if args.json:
        print(json.dumps(sweep_status(args.path), indent=1))
        return 0
    console = wide_console()
    title = f"hpcgen {args.path}"
    if args.watch and console.is_terminal:
        with Live(status_table(sweep_status(args.path), title), console=console) as live:
            while True:
                time.sleep(args.interval)
                live.update(status_table(sweep_status(args.path), title))
    print_status(sweep_status(args.path), title, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
