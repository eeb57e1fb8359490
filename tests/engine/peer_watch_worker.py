"""One rank for tests/engine/test_peer_watch.py (python -m tests.engine.peer_watch_worker MODE S).

collectives: all-reduce in a loop for two minutes, as training does; a collective that a
peer's end breaks prints peer_watch's line naming it and exits with its code, as train() and
launch/train.py do. finish-early: rank 1 ends cleanly at once, rank 0 goes on for four peer
timeouts, then ends. S: the peer timeout in seconds.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.distributed as dist

from hpcgen.engine.distributed import detect_layout, init_distributed
from hpcgen.engine.peer_watch import EXIT_CODE, lost_peer


def main(mode: str, timeout_s: float) -> None:
    layout = detect_layout()
    init_distributed(layout, timeout_s)
    dist.barrier()
    print("ready", flush=True)
    if mode == "collectives":
        end = time.monotonic() + 120
        try:
            while time.monotonic() < end:
                dist.all_reduce(torch.ones(4))
                time.sleep(0.02)
        except Exception as err:
            lost = lost_peer(err)
            if lost is None:
                raise
            print(f"hpcgen: error: {lost}", file=sys.stderr, flush=True)
            sys.exit(EXIT_CODE)
    elif layout.rank == 0:
        time.sleep(4 * timeout_s)
    print("finished", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
