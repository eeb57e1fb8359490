"""Rank-layout helpers: rendezvous address and a port that survives requeues."""

from __future__ import annotations

import torch

from hpcgen.engine.distributed import _master_addr, _stable_port, mean_over_ranks


def test_port_is_stable_per_job_and_differs_between_array_tasks():
    assert _stable_port("1234_0") == _stable_port("1234_0")
    ports = {_stable_port(f"1234_{i}") for i in range(50)}
    assert len(ports) > 45 and all(1024 < p < 32768 for p in ports)
    # never in the kernel's ephemeral range, where any outgoing connection may hold the port
    low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert not any(low <= p <= high for p in ports), (low, high)


def test_single_node_jobs_rendezvous_on_loopback():
    assert _master_addr(["localnode", "localnode"]) == "127.0.0.1"
    assert _master_addr(["gpu-a01", "gpu-a02"]) == "gpu-a01"


def test_mean_over_one_rank_is_the_value():
    assert mean_over_ranks({"loss": 0.5}) == {"loss": 0.5}
    assert torch.distributed.is_available()
