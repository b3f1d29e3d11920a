"""Multi-process training helpers (``torchrun``): the rank, one flat collective, replica checks.

Every rank draws the same subnets from a shared seeded generator, data is sharded per rank, and
gradients are averaged with one coalesced all-reduce per step (`sync`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ofa_sdk.cache import atomic_write_bytes
from ofa_sdk.errors import OfaError

__all__ = ["Dist", "init_dist", "close_dist", "sync", "float_buffers", "state_hash",
           "check_replicas"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_dist(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


@torch.no_grad()
def sync(tensors: Sequence[torch.Tensor], world: int, *, op: str = "mean") -> None:
    """Average (or broadcast from rank 0) ``tensors`` over ranks with one flat collective.

    Why not DistributedDataParallel: each step accumulates gradients of several subnets, and
    different subnets leave different parameters unused; DDP would need ``no_sync`` plus
    ``find_unused_parameters=True`` (a graph walk every backward). All ranks draw the same subnets,
    so the set of parameters with a gradient is identical on every rank, and one all-reduce of the
    accumulated gradients per optimizer step is both simpler and cheaper.
    """
    if world <= 1 or not tensors:
        return
    import torch.distributed as dist

    flat = torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])
    if op == "mean":
        dist.all_reduce(flat)
        flat.div_(world)
    else:
        dist.broadcast(flat, 0)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def float_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b for b in model.buffers() if b.is_floating_point()]


def state_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's keys and raw bytes (replica/resume equality checks)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16)
                 .numpy().tobytes())
    return h.hexdigest()


def check_replicas(model: nn.Module, run: Path, dist_info: Dist) -> None:
    """Gather every rank's state hash; rank 0 writes ``replicas.json`` and fails on divergence."""
    import torch.distributed as dist

    digest = bytes.fromhex(state_hash(model.state_dict()))
    device = next(model.parameters()).device  # nccl only moves device tensors
    local = torch.tensor(list(digest), dtype=torch.uint8, device=device)
    gathered = [torch.empty_like(local) for _ in range(dist_info.world)]
    dist.all_gather(gathered, local)
    hashes = [bytes(g.cpu().tolist()).hex() for g in gathered]
    if dist_info.main:
        atomic_write_bytes(run / "replicas.json", json.dumps({"state_sha256": hashes}).encode())
    dist.barrier()
    if len(set(hashes)) != 1:
        raise OfaError(f"replicas diverged: state hashes {hashes}")


def close_dist(*, wait: bool) -> None:
    """Tear the process group down before the interpreter exits (``wait``: after every rank got
    here): a gloo group still alive at exit can abort a rank ("terminate called without an active
    exception", seen when a finished run resumes and every rank returns at once). After an error
    there is no barrier, so a failed rank cannot hang on the others."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()
