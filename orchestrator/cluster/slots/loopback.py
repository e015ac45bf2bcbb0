"""A torch process group that listens on 127.0.0.1 only, for the embedded local Ray.

Ray Train's torch backend starts torch.distributed's TCPStore on worker 0, and the store's
server binds every interface; gloo's sockets bind the interface the host name resolves to.
On the embedded Ray, which listens on loopback only, that left each Train worker holding a
wildcard port. Here rank 0 binds the store's socket to 127.0.0.1 itself and hands it over
(`master_listen_fd`), and gloo and NCCL are told to use the loopback interface. A slot of
one worker needs no process group at all, and gets none.
"""
from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

from ray.train.torch.config import TorchConfig, _TorchBackend

LOOPBACK = "127.0.0.1"


@dataclass
class LoopbackTorchConfig(TorchConfig):
    @property
    def backend_cls(self):
        return _LoopbackBackend


class _LoopbackBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig) -> None:
        import ray

        world = len(worker_group)
        if world == 1:
            return
        gpus = worker_group.get_resources_per_worker().get("GPU", 0)
        backend = backend_config.backend or ("nccl" if gpus > 0 else "gloo")
        port = worker_group.execute_single(0, free_loopback_port)
        ray.get([worker_group.execute_single_async(rank, join_loopback_group, backend=backend, world_rank=rank,
                                                   world=world, port=port, timeout_s=backend_config.timeout_s)
                 for rank in range(world)])


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def join_loopback_group(backend: str, world_rank: int, world: int, port: int, timeout_s: int) -> None:
    """On each worker: the store on 127.0.0.1:port (rank 0 serves it), then the process group."""
    import torch.distributed as dist

    rank = world_rank  # execute_single_async takes `rank` itself
    os.environ["GLOO_SOCKET_IFNAME"] = os.environ.get("MASKFOLD_LOOPBACK_IFNAME", "lo")
    os.environ["NCCL_SOCKET_IFNAME"] = os.environ["GLOO_SOCKET_IFNAME"]
    timeout = datetime.timedelta(seconds=timeout_s)
    listen_fd = None
    if rank == 0:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((LOOPBACK, port))
        server.listen(world * 4)
        listen_fd = server.detach()  # the store owns the socket from here on
    store = dist.TCPStore(LOOPBACK, port, world, rank == 0, timeout, master_listen_fd=listen_fd)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
