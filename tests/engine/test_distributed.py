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


def test_a_taken_rendezvous_port_is_named_before_the_other_ranks_hang_on_it():
    import socket

    import pytest

    from hpcgen.engine.distributed import RankLayout, check_port_free

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        layout = RankLayout(0, 0, 2, "127.0.0.1", port, "submitit")
        with pytest.raises(RuntimeError, match=f"rendezvous port {port} .* already in use"):
            check_port_free(layout)
        check_port_free(RankLayout(1, 1, 2, "127.0.0.1", port, "submitit"))  # not rank 0's job
        check_port_free(RankLayout(0, 0, 2, "127.0.0.1", port, "torchrun"))  # the agent's port
    check_port_free(layout)  # free again


def test_a_one_task_job_takes_any_free_port():
    import socket

    from hpcgen.engine.distributed import _rendezvous_port, _stable_port

    assert _rendezvous_port("77_3", 2) == _stable_port("77_3")
    port = _rendezvous_port("77_3", 1)  # free now: nothing can hold it against a lone rank
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_job_on_one_host_leaves_the_collective_interface_alone(monkeypatch):
    import os

    from hpcgen.engine.distributed import RankLayout, choose_socket_interface, interface_towards

    assert interface_towards("127.0.0.1") is None
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    choose_socket_interface(RankLayout(1, 0, 2, "127.0.0.1", 29500, "slurm"), cuda=False)
    assert "GLOO_SOCKET_IFNAME" not in os.environ


def test_a_collective_interface_set_in_the_environment_wins(monkeypatch, capsys):
    import os

    from hpcgen.engine.distributed import RankLayout, choose_socket_interface

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "ib0")  # e.g. from the launcher's setup lines
    choose_socket_interface(RankLayout(1, 0, 2, "node-a", 29500, "slurm"), cuda=False)
    assert os.environ["GLOO_SOCKET_IFNAME"] == "ib0"
    assert "GLOO_SOCKET_IFNAME=ib0 (set in the environment)" in capsys.readouterr().out
