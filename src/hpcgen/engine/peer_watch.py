"""A rank that stops answering ends the job in bounded time, with its rank and node named.

A collective waits on a hung peer (SIGSTOP, a wedged host, a cut link) for torch's timeout,
30 minutes for gloo and NCCL, holding every node; srun ends a job at once only when a task
*exits*. So each rank beats a counter in the rendezvous store every few seconds from a thread
(torch releases the GIL in compute and collectives, so a busy rank still beats), rank 0 watches
every other rank's counter and the others watch rank 0's. A counter that has not moved for
`timeout_s` (trainer.peer_timeout_s, read by this process's clock: hosts' clocks need not
agree) is reported and the watcher exits; srun (SLURM_KILL_BAD_EXIT=1) then ends the job,
and the next run of the same command resumes from the last committed checkpoint. O(world
size) store reads per beat.

A rank that *dies* (SIGKILL, the OOM killer, an error of its own) breaks its peers' collectives
at once, with gloo's "Connection reset by peer", which names nobody. `lost_peer(err)` then asks
the store: a rank that failed posted its error there (`post_failure`), a rank on this host whose
pid is gone was killed, a rank whose counter stops moving for three beats is gone elsewhere, and
a store that does not answer any more took rank 0 with it.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from datetime import timedelta

import torch.distributed as dist

from hpcgen.engine.lease import process_start_time

DEFAULT_TIMEOUT_S = 300.0  # trainer.peer_timeout_s's default
EXIT_CODE = 75  # what a watcher exits with when a peer stopped answering
SETTLE_BEATS = 3  # a live peer's counter moves within this many beats, however busy the host
_BROKEN_LINK = re.compile(r"connection (reset|closed|refused)|broken pipe|by peer|socket", re.I)
_current: PeerWatch | None = None  # this process's watch (one process group per process)


class PeerLost(RuntimeError):
    """A peer ended, failed or went silent under a collective; the message names it.

    `peer_error`: the peer's own error line when it posted one (`post_failure`), else None."""

    def __init__(self, message: str, peer: int, where: str, peer_error: str | None = None):
        super().__init__(message)
        self.peer, self.where, self.peer_error = peer, where, peer_error


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
        self.store.set(f"proc/{rank}", f"{os.getpid()} {process_start_time(os.getpid())}")
        self.world_size, self._procs = world_size, {}  # peers' processes (rank 0's cached)
        self._failed0: str | None = None  # rank 0's posted error, read before its store goes
        self._posted = False
        self.closed = False  # ended cleanly, or reported a lost peer: nothing more to say
        self.watched = list(range(1, world_size)) if rank == 0 else [0]
        self._stop = threading.Event()
        self._answered = time.monotonic()  # when rank 0's store last answered this rank
        threads = [self._beat] + ([self._store_deadline] if rank != 0 else [])
        for target in threads:
            threading.Thread(target=target, name="hpcgen-peer-watch", daemon=True).start()
        global _current
        _current = self

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
                if self.rank != 0:  # known before a death of rank 0 takes the store along
                    self._proc(0)
                    if self._failed0 is None and self.store.check(["failed/0"]):
                        self._failed0 = self.store.get("failed/0").decode()
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
            f"{self.timeout_s:.0f} s, trainer.peer_timeout_s). It is stopped, hung or cut off; "
            f"rank {self.rank} on {node_name()} ends the job now. Run the same command again to "
            "resume from the last committed checkpoint",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_CODE)  # the main thread may sit in a collective that never returns

    def _proc(self, peer: int) -> tuple[str, int, str] | None:
        """(node, pid, start time) of a peer's process as it posted them (cached), or None
        before it posted them (a store get would wait for the key)."""
        if peer not in self._procs and self.store.check([f"proc/{peer}"]):
            pid, start = self.store.get(f"proc/{peer}").decode().split(" ", 1)
            self._procs[peer] = self.store.get(f"host/{peer}").decode(), int(pid), start
        return self._procs.get(peer)

    def _where(self, peer: int) -> str:
        try:
            host, pid, _ = self._proc(peer) or (self.addr, "unknown", "")
        except dist.DistError:  # rank 0 died before this rank cached it: the store went along
            host, pid = self.addr, "unknown"
        return f"rank {peer} on node {host} (pid {pid})"

    def _ended(self, peers: list[int]) -> tuple[int, str, str | None] | None:
        """(peer, what happened, its error) for the first peer that posted an error, was killed
        on this host or ended, else None. Raises DistError when the store (rank 0) is gone."""
        if 0 in peers and self._failed0 is not None:
            return 0, f"failed: {self._failed0}", self._failed0
        for peer in peers:
            if self.store.check([f"failed/{peer}"]):
                error = self.store.get(f"failed/{peer}").decode()
                return peer, f"failed: {error}", error
        for peer in peers:
            host, pid, start = self._proc(peer) or ("", 0, "")
            gone = host == node_name() and process_start_time(pid) != start
            if gone and not self._finished(peer):
                return peer, "was killed (its process is gone without a clean end)", None
        for peer in peers:
            if self._finished(peer):
                return peer, "ended while this rank waited for it (its log says why)", None
        return None

    def diagnose(self, err: BaseException) -> PeerLost | None:
        """The peer whose end broke a collective (which failed with `err`), or None."""
        broke = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        peers = [p for p in range(self.world_size) if p != self.rank]
        settle_s = max(SETTLE_BEATS * self.interval_s, 1.0)
        try:
            beats = {p: self.store.add(f"beat/{p}", 0) for p in peers}
            deadline = time.monotonic() + settle_s
            while (found := self._ended(peers)) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if found is None:
                silent = [p for p in peers if self.store.add(f"beat/{p}", 0) == beats[p]]
                if not silent:
                    return None  # everyone beats: a link broke, not a rank; say what gloo said
                found = silent[0], f"sent no heartbeat for {settle_s:.1f} s", None
        except dist.DistError:
            found = 0, "is gone, and the rendezvous store it hosts with it", None
        peer, what, error = found
        where = self._where(peer)
        self.closed = True  # this rank ends now: no second report from the watch threads
        self._stop.set()
        message = (
            f"{where} {what}; a collective with it broke ({broke}). Rank {self.rank} on "
            f"{node_name()} ends the job now. Run the same command again to resume from the "
            "last committed checkpoint"
        )
        return PeerLost(message, peer, where, error)

    def close(self) -> None:
        """A clean end: peers must not take this rank's silence for a hang. Rank 0 after a
        failure keeps its store up two more beats, so that its peers read its error first."""
        try:  # while the watch still runs: a hung store here still ends this rank in time
            self.store.set(f"done/{self.rank}", "1")
        except dist.DistError:
            pass  # rank 0 ended first and took the store along: nobody is left to tell
        if self.rank == 0 and self._posted:
            time.sleep(2 * self.interval_s)
        self.closed = True
        self._stop.set()


def lost_peer(err: BaseException) -> PeerLost | None:
    """After a collective failed with `err` in a multi-rank job: which peer's end broke it (a
    PeerLost naming its rank, node and pid), or None when `err` is no broken link or no peer is
    known lost. Takes up to SETTLE_BEATS heartbeats when the peer is on another host."""
    if isinstance(err, PeerLost):
        return err
    if _current is None or _current.closed:
        return None
    seen: set[int] = set()
    link = err
    while link is not None and id(link) not in seen:  # DeepSpeed may re-raise gloo's error
        if isinstance(link, dist.DistError) or _BROKEN_LINK.search(str(link)):
            return _current.diagnose(err)
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def post_failure(err: BaseException) -> None:
    """Tell the peers why this rank ends (one line in the store), so that the rank waiting on
    it in a collective names this error instead of a broken connection. Not for PeerLost."""
    if _current is None or isinstance(err, PeerLost):
        return
    line = " ".join(f"{type(err).__name__}: {err}".split())[:2000]
    try:
        _current.store.set(f"failed/{_current.rank}", line)
        _current._posted = True
    except dist.DistError:
        pass  # rank 0, and the store with it, is gone: nobody is left to tell
