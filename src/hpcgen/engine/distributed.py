"""Rank layout from the scheduler, torch.distributed + DeepSpeed initialisation, rank-0 helpers."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import warnings
import zlib
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hpcgen.engine.peer_watch import DEFAULT_TIMEOUT_S, PeerWatch


@dataclass(frozen=True)
class RankLayout:
    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int
    source: str  # submitit | torchrun | slurm | single | reused

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _stable_port(job_id: str) -> int:
    """A port derived from the job id: the same after a requeue, different per array task.

    Below Linux's ephemeral range (32768-60999), where the kernel hands out ports to outgoing
    connections: a port there can be taken by any client on the node when the rendezvous starts.
    """
    return 20000 + zlib.crc32(job_id.encode()) % 12000


def _rendezvous_port(job_id: str, num_tasks: int) -> int:
    """Ranks of one job agree on a port without talking; a job of one task needs no agreement."""
    return _stable_port(job_id) if num_tasks > 1 else free_port()


def check_port_free(layout: RankLayout) -> None:
    """Rank 0 hosts the rendezvous. If its port is taken, torch fails rank 0 with EADDRINUSE and
    the other ranks connect to whatever holds the port and wait there for ever: say it plainly."""
    if layout.rank != 0 or layout.world_size == 1 or layout.source not in ("submitit", "slurm"):
        return  # torchrun's agent already holds its MASTER_PORT: that one is not ours to test
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch's store binds
        try:
            s.bind(("", layout.master_port))
        except OSError as e:
            raise RuntimeError(
                f"the rendezvous port {layout.master_port} of this job (derived from its SLURM "
                f"job id, the same for every rank) is already in use on {socket.gethostname()} "
                f"({e.strerror}): another process is listening there. Resubmit the job (a new "
                "job id gives another port) or stop the process that holds it "
                f"(`ss -ltnp 'sport = :{layout.master_port}'` names it)"
            ) from None


def _master_addr(hostnames: list[str]) -> str:
    """Loopback when every task is on this node (node names need not resolve), else node 0."""
    return "127.0.0.1" if len(set(hostnames)) == 1 else hostnames[0]


def interface_towards(addr: str) -> tuple[str, str] | None:
    """(interface, its address) that this host reaches `addr` from; None when that is loopback.

    The kernel's own route choice (a UDP connect sends nothing), mapped to the interface that
    holds the source address: on a node with several networks (eth0, ib0, docker0, ...) the
    collectives then go where the rendezvous host is reachable, whatever the hostname resolves
    to (Debian maps it to 127.0.1.1, and gloo's default follows the hostname).
    """
    import fcntl
    import struct

    ip = socket.gethostbyname(addr)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((ip, 9))
        source = s.getsockname()[0]
        if source.startswith("127."):
            return None
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(s.fileno(), 0x8915, request)  # SIOCGIFADDR: its IPv4 address
            except OSError:
                continue  # no IPv4 address on this one
            if socket.inet_ntoa(reply[20:24]) == source:
                return name, source
    return None


def choose_socket_interface(layout: RankLayout, cuda: bool) -> None:
    """GLOO_SOCKET_IFNAME (NCCL_SOCKET_IFNAME on GPUs) for a job that spans hosts, unless set.

    Set them yourself in the slurm launcher's `setup` lines to pick another network, e.g.
    `export NCCL_SOCKET_IFNAME=ib0` (NCCL also takes prefixes and `^docker,lo` exclusions).
    """
    if layout.world_size == 1 or layout.master_addr.startswith("127."):
        return
    var = "NCCL_SOCKET_IFNAME" if cuda else "GLOO_SOCKET_IFNAME"
    chosen = "set in the environment"
    if not os.environ.get(var):
        found = interface_towards(layout.master_addr)
        if found is None:
            return
        os.environ[var], chosen = found[0], f"{found[1]}, the route to {layout.master_addr}"
    print(f"[hpcgen] rank {layout.rank} on {socket.gethostname()}: "
          f"{var}={os.environ[var]} ({chosen})", flush=True)  # fmt: skip


def free_port() -> int:
    """A TCP port free on the loopback now (for a rendezvous started right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_rank_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The environment of one rank of a multi-process job on this machine, as torchrun sets it."""
    layout = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world_size,
              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}  # fmt: skip
    return {**os.environ, **{k: str(v) for k, v in layout.items()}}


def detect_layout() -> RankLayout:
    """Ranks from submitit's JobEnvironment, torchrun's variables, srun's, or a single process."""
    if dist.is_initialized():  # an earlier job in this process (local launcher, tests)
        return RankLayout(
            dist.get_rank(),
            int(os.environ.get("LOCAL_RANK", 0)),
            dist.get_world_size(),
            os.environ.get("MASTER_ADDR", "127.0.0.1"),
            int(os.environ.get("MASTER_PORT", 0)),
            "reused",
        )
    if "SUBMITIT_EXECUTOR" in os.environ and "SLURM_JOB_ID" in os.environ:
        import submitit

        env = submitit.JobEnvironment()
        return RankLayout(
            env.global_rank,
            env.local_rank,
            env.num_tasks,
            _master_addr(list(env.hostnames)),
            _rendezvous_port(env.job_id, env.num_tasks),
            "submitit",
        )
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return RankLayout(
            int(os.environ["RANK"]),
            int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ["WORLD_SIZE"]),
            os.environ.get("MASTER_ADDR", "127.0.0.1"),
            int(os.environ.get("MASTER_PORT", 29500)),
            "torchrun",
        )
    if "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        from submitit.slurm.slurm import SlurmJobEnvironment

        env = SlurmJobEnvironment()  # parses SLURM_* (hostnames too) without submitit's runner
        return RankLayout(
            env.global_rank,
            env.local_rank,
            env.num_tasks,
            _master_addr(list(env.hostnames)),
            _rendezvous_port(env.job_id, env.num_tasks),
            "slurm",
        )
    return RankLayout(0, 0, 1, "127.0.0.1", free_port(), "single")


def init_distributed(layout: RankLayout, peer_timeout_s: float = DEFAULT_TIMEOUT_S) -> torch.device:
    """Initialise torch.distributed (NCCL on GPUs, gloo on CPU) and DeepSpeed's comm, once.

    A process that runs several jobs in a row (Hydra's local launcher) keeps its process group:
    DeepSpeed caches groups, so destroying and re-creating one breaks the next engine.
    """
    cuda = torch.cuda.is_available()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cuda else "cpu")
    if "SLURM_CPUS_PER_TASK" in os.environ:
        # stay inside the allocation: OpenMP threads beyond it spin against other jobs' threads
        # (measured: 2 one-CPU jobs on a 2-core node ran 50x slower with torch's default)
        torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
    # DeepSpeed's op probes compile test programs at import; their INFO lines are noise in logs
    logging.getLogger("compilers").setLevel(logging.WARNING)
    # DeepSpeed 0.19's ZeRO calls the collectives torch 2.14 renamed: two FutureWarnings a
    # step (122 lines in a 30-step GAN job's log), nothing a user can act on
    warnings.filterwarnings(
        "ignore",
        message=r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)` is "
        "deprecated",
        category=FutureWarning,
    )
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import deepspeed  # after DS_ACCELERATOR: it picks its accelerator at import

    if cuda:  # before NCCL starts, so it does not guess the device from the global rank
        torch.cuda.set_device(layout.local_rank)
    if not dist.is_initialized():
        # explicit init_method/rank/world size: no MASTER_* or RANK left in os.environ for
        # child processes to mistake for a torchrun layout; DeepSpeed reads LOCAL_RANK only
        os.environ.setdefault("LOCAL_RANK", str(layout.local_rank))
        check_port_free(layout)
        choose_socket_interface(layout, cuda)
        deepspeed.init_distributed(
            dist_backend="nccl" if cuda else "gloo",
            auto_mpi_discovery=False,
            verbose=False,
            init_method=f"tcp://{layout.master_addr}:{layout.master_port}",
            rank=layout.rank,
            world_size=layout.world_size,
        )
        atexit.register(dist.destroy_process_group)  # once per process, not per job
        if layout.world_size > 1:  # registered after: atexit runs it first
            watch = PeerWatch(layout.rank, layout.world_size, layout.master_addr,
                              layout.master_port, peer_timeout_s)  # fmt: skip
            atexit.register(watch.close)
    elif dist.get_world_size() != layout.world_size:
        raise RuntimeError(
            f"torch.distributed is already initialised with world size {dist.get_world_size()}, "
            f"but this job needs {layout.world_size}: run each job in its own process"
        )
    return torch.device("cuda", layout.local_rank) if cuda else torch.device("cpu")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def print0(*args: object) -> None:
    """Print from rank 0 only, flushed, so SLURM logs show lines as they happen."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(*args, flush=True)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average scalars over all ranks (a collective: every rank calls it with the same keys)."""
    if not dist.is_initialized() or dist.get_world_size() == 1 or not values:
        return values
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, t.tolist(), strict=True)}


def gather_from_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate an equally-shaped tensor from every rank, in rank order (a collective)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def average_over_ranks_(tensor: torch.Tensor) -> torch.Tensor:
    """In place: the mean of this tensor over all ranks (a collective)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor
