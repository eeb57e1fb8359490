#!/usr/bin/env python
"""One self-contained HTML page for a sweep: python launch/report.py <sweep or run dir> [--out F]"""

import argparse
import sys
from pathlib import Path

from hpcgen.report import write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path, help="a sweep directory or a run directory")
    parser.add_argument("--out", type=Path, help="where to write (default <path>/report.html)")
    args = parser.parse_args()
    try:
        if not args.path.is_dir():
            raise FileNotFoundError(
                f"{args.path} is not a directory: give a sweep or run directory"
            )
        out = write_report(args.path, args.out)
    except FileNotFoundError as err:
        print(f"hpcgen: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): open it in a browser")
    return 0


if __name__ == "__main__":
    sys.exit(main())
