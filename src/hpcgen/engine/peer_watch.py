"""A rank that stops answering ends the job in bounded time, with its rank and node named.

A collective waits on a hung peer (SIGSTOP, a wedged host, a cut link) for torch's timeout,
30 minutes for gloo and NCCL, holding every node; srun ends a job at once only when a task
*exits*. So each rank beats a counter in the rendezvous store every few seconds from a thread
(torch releases the GIL in compute and collectives, so a busy rank still beats), rank 0 watches
every other rank's counter and the others watch rank 0's. A counter that has not moved for
`timeout_s` (read by this process's clock: hosts' clocks need not agree) is reported and the
watcher exits; srun (SLURM_KILL_BAD_EXIT=1) then ends the job, and the next run of the same
command resumes from the last committed checkpoint. O(world size) store reads per beat.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from datetime import timedelta

import torch.distributed as dist

TIMEOUT_ENV = "HPCGEN_PEER_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0
EXIT_CODE = 75  # what a watcher exits with when a peer stopped answering


def peer_timeout_s() -> float:
    """Seconds without a heartbeat before a peer counts as gone ($HPCGEN_PEER_TIMEOUT_S)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: give the seconds a silent peer is waited for "
                         f"(a positive number; default {DEFAULT_TIMEOUT_S:.0f})")  # fmt: skip
    return value


def node_name() -> str:
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


class PeerWatch:
    """Heartbeats of this rank and watching of its peers, on a client of the rendezvous store."""

    def __init__(self, rank: int, world_size: int, addr: str, port: int, timeout_s: float):
        self.rank, self.addr, self.timeout_s = rank, addr, timeout_s
        self.interval_s = min(max(timeout_s / 10, 0.2), 5.0)
        client = dist.TCPStore(addr, port, is_master=False, timeout=timedelta(seconds=timeout_s))
        self.store = dist.PrefixStore("hpcgen/peers/", client)
        self.store.set(f"host/{rank}", node_name())
        self.watched = list(range(1, world_size)) if rank == 0 else [0]
        self._stop = threading.Event()
        self._answered = time.monotonic()  # when rank 0's store last answered this rank
        threads = [self._beat] + ([self._store_deadline] if rank != 0 else [])
        for target in threads:
            threading.Thread(target=target, name="hpcgen-peer-watch", daemon=True).start()

    def _beat(self) -> None:
        last = {p: -1 for p in self.watched}
        moved = {p: time.monotonic() for p in self.watched}
        while not self._stop.wait(self.interval_s):
            try:
                self.store.add(f"beat/{self.rank}", 1)
                for peer in self.watched:
                    count, now = self.store.add(f"beat/{peer}", 0), time.monotonic()
                    if count != last[peer]:
                        last[peer], moved[peer] = count, now
                    elif now - moved[peer] > self.timeout_s and not self._finished(peer):
                        self._give_up(peer, f"sent no heartbeat for {now - moved[peer]:.0f} s")
                self._answered = time.monotonic()
            except dist.DistNetworkError:
                self._stop.set()  # rank 0, and the store with it, is gone: it ended, or srun
                return  # reports its death; either way nothing is left to watch

    def _store_deadline(self) -> None:
        """A store request to a stopped rank 0 blocks for ever: time the beats from outside."""
        while not self._stop.wait(self.interval_s):
            silent = time.monotonic() - self._answered
            if silent > self.timeout_s:
                self._give_up(0, f"its rendezvous store has not answered for {silent:.0f} s")

    def _finished(self, peer: int) -> bool:
        return self.store.check([f"done/{peer}"])

    def _give_up(self, peer: int, why: str) -> None:
        # rank 0's node hosts the store (the rendezvous address); the others wrote theirs there
        host = self.addr if peer == 0 else self.store.get(f"host/{peer}").decode()
        print(
            f"[hpcgen] error: rank {peer} on node {host} stopped answering: {why} (limit "
            f"{self.timeout_s:.0f} s, {TIMEOUT_ENV}). It is stopped, hung or cut off; rank "
            f"{self.rank} on {node_name()} ends the job now. Run the same command again to "
            "resume from the last committed checkpoint",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_CODE)  # the main thread may sit in a collective that never returns

    def close(self) -> None:
        """A clean end: peers must not take this rank's silence for a hang."""
        try:  # while the watch still runs: a hung store here still ends this rank in time
            self.store.set(f"done/{self.rank}", "1")
        except dist.DistError:
            pass  # rank 0 ended first and took the store along: nobody is left to tell
        self._stop.set()
