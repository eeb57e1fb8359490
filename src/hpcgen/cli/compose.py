"""What the entry points do with a bad input (`fail`), and the composition helpers they use.

Composing lives in config/compose.py, where benchmarks/ (below cli/) import it from too; the
names are re-exported here for cli/ and its callers.
"""

from __future__ import annotations

import sys

from hpcgen.config.compose import (
    compose_jobs,
    expand_sweep,
    resolve_plain,
    to_prepare_config,
    to_train_config,
)

__all__ = [
    "compose_jobs",
    "expand_sweep",
    "fail",
    "resolve_plain",
    "to_prepare_config",
    "to_train_config",
]


def fail(err: Exception, status: int = 2) -> None:
    """One line on stderr, then exit: what hpcgen's entry points do with a bad input."""
    print(f"hpcgen: error: {err}", file=sys.stderr, flush=True)
    sys.exit(status)
