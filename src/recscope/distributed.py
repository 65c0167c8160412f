"""Training on several processes with PyTorch DistributedDataParallel, launched by torchrun.

    torchrun --nproc-per-node N -m recscope.train --data SPEC --out RUN [--config FILE] [--set k=v]
    recscope train --nproc N ...      # the same, torchrun started for you on this machine

torchrun starts N processes and gives each its place in the environment (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT); :func:`start` reads it and joins the
process group: gloo on CPU, NCCL on GPU (one GPU per process, ``cuda:LOCAL_RANK``). Without
those variables (plain ``recscope train``) nothing here starts and :data:`SINGLE` stands for
the one process, so the training loop has one code path.

The contract of a distributed run (``train.fit`` keeps it):

- every rank reads the data itself (``--data`` must name the same data on every machine; their
  fingerprints are compared) and builds the same batches from the seed;
- each rank takes its share of every global batch (``train.batch_size`` is the global batch:
  N processes see the batches one process would), and its loss is scaled so that DDP's
  average of the gradients is one process's gradient of the whole batch;
- rank 0 holds the run's lock and alone reads and writes the run directory (checkpoints,
  run.json, versions); what the others need from it (a resumed run's state, the valid
  metrics) reaches them by broadcast, so the run directory need only be on rank 0's machine;
- rank 0 evaluates on valid and broadcasts the metrics: every rank makes the same model
  selection and the same early-stopping decision;
- a run saved by N processes is an ordinary run: it resumes with any number of processes.

What crosses between processes is tensors and JSON, never pickles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from recscope.cpu import available_cpus
from recscope.errors import RecscopeError, RunError

T = TypeVar("T")


class PeerError(RunError):
    """Another rank stopped the run (it printed why); this rank stops too, quietly."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: ``rank`` of ``world`` processes, ``local_world`` of them on
    this machine, computing on ``device``. ``Distributed()`` is one process alone."""

    rank: int = 0
    world: int = 1
    local_world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that reads and writes the run directory and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def threads(self, configured: int = 0) -> int:
        """torch threads for this process: ``train.threads`` when set, else this machine's CPUs
        shared among its processes (N processes with all cores each would fight over them)."""
        return configured or max(1, available_cpus() // self.local_world)

    # ------------------------------------------------------------------ the model and the data
    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel (its backward all-reduces the gradients); itself alone."""
        if not self.active:
            return module
        devices = [self.device.index] if self.device.type == "cuda" else None
        # Buffers (the catalog's attribute indices and text vectors) are the same on every rank and
        # never trained: broadcasting them from rank 0 at every forward would only cost time.
        return nn.parallel.DistributedDataParallel(module, device_ids=devices, forward_sync_buffers=False)

    def shard(self, index: Tensor) -> Tensor:
        """This rank's contiguous share of a global batch ``index`` (B,) or (towers, B): about
        B / world rows (of every tower's). A batch is sorted by length, so contiguous shares keep
        similar lengths together (less padding)."""
        return index.tensor_split(self.world, dim=-1)[self.rank] if self.active else index

    # ------------------------------------------------------------------ agreeing
    def share(self, value: Any = None) -> Any:
        """Rank 0's JSON-able ``value`` on every rank (the others' ``value`` is ignored)."""
        if not self.active:
            return value
        payload = json.dumps(value, default=float).encode() if self.is_main else b""
        size = torch.tensor([len(payload)], dtype=torch.long, device=self.device)
        dist.broadcast(size, 0)
        buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.is_main:
            buffer.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        dist.broadcast(buffer, 0)
        return value if self.is_main else json.loads(bytes(buffer.cpu().numpy()))

    def on_main(self, work: Callable[[], T]) -> T:
        """Run ``work`` on rank 0 only (it reads or writes the run); its JSON-able result reaches every
        rank. If it fails, rank 0 raises its error and the others a :class:`PeerError`: no rank is
        left waiting for one that stopped."""
        if not self.active:
            return work()
        if self.is_main:
            try:
                result = work()
            except BaseException as e:
                self.share({"error": str(e) if isinstance(e, RecscopeError) else f"{type(e).__name__}: {e}"})
                raise
            self.share({"value": result})
            return result
        outcome = self.share()
        if "error" in outcome:
            raise PeerError(f"rank 0 stopped the run: {outcome['error']}")
        return outcome["value"]

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 does the block first, then the others (e.g. filling a cache the others then read)."""
        if self.active and not self.is_main:
            dist.barrier()
        yield
        if self.active and self.is_main:
            dist.barrier()

    def check_same(self, value: str, what: str) -> None:
        """Every rank must have the same ``value`` (e.g. the data's fingerprint); a RunError on all
        ranks names those that differ from rank 0."""
        if not self.active:
            return
        reference = self.share(value)
        differs = torch.zeros(self.world, dtype=torch.long, device=self.device)
        differs[self.rank] = int(value != reference)
        dist.all_reduce(differs)
        ranks = [str(r) for r in differs.nonzero().flatten().tolist()]
        if ranks:
            raise RunError(
                f"rank(s) {', '.join(ranks)} read other {what} than rank 0",
                fix="every machine must read the same --data (same files, --catalog and data.* settings)",
            )

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if not self.active:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total.item()) / self.world

    def broadcast_training_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Rank 0's weights and optimizer state on every rank (a resumed run's: rank 0 read them)."""
        if not self.active:
            return
        for tensor in model.state_dict().values():  # views of the parameters and buffers: filled in place
            dist.broadcast(tensor, 0)
        state = optimizer.state_dict() if self.is_main else None
        layout = self.share(None if state is None else _layout(state))
        tensors = {}
        for index, entries in layout["state"].items():
            tensors[int(index)] = {}
            for name, (shape, dtype) in entries.items():
                if self.is_main:
                    value = state["state"][int(index)][name]
                else:
                    value = torch.empty(shape, dtype=getattr(torch, dtype.removeprefix("torch.")), device=self.device)
                dist.broadcast(value, 0)  # the optimizer's state lives on its parameters' device
                tensors[int(index)][name] = value
        if not self.is_main:
            optimizer.load_state_dict({"state": tensors, "param_groups": layout["groups"]})


SINGLE = Distributed()


def _layout(state: dict) -> dict:
    """An optimizer state dict without its tensors: param groups, and each state tensor's shape and dtype."""
    shapes = {i: {k: [list(v.shape), str(v.dtype)] for k, v in s.items()} for i, s in state["state"].items()}
    return {"groups": state["param_groups"], "state": shapes}


def env_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


@contextmanager
def start() -> Iterator[Distributed]:
    """Join the process group torchrun's environment describes (gloo on CPU, NCCL when CUDA is
    here), and leave it at the end; :data:`SINGLE` when this is one process. A process group
    the caller started already is used as it is and left to the caller."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        yield SINGLE
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ended = False
    try:
        yield Distributed(
            rank=dist.get_rank(),
            world=dist.get_world_size(),
            local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(dist.get_world_size()))),
            device=device,
        )
        ended = True
    finally:
        if owned:
            if ended:
                # Every rank leaves together: a rank that tore its connections down while a peer
                # still used them aborted at exit now and then ("terminate called without an
                # active exception"), failing a run that was saved. After an error the peers
                # may never arrive, so no wait then.
                dist.barrier()
            dist.destroy_process_group()


class BatchLoss(nn.Module):
    """The model with the training loss as its forward, so DistributedDataParallel can wrap it:
    DDP synchronises the gradients of what its own forward computed. ``loss(model, index, *args)``
    is the summed loss of the training windows at ``index`` (``TrainingData.loss``)."""

    def __init__(self, model: nn.Module, loss: Callable[..., Tensor]):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, index: Tensor, *args: Any) -> Tensor:
        if index.shape[-1] == 0:
            # A global batch smaller than the world leaves a rank nothing; it still takes part
            # in the gradient all-reduce, with zero gradients (every parameter gets one).
            return sum(p.sum() for p in self.model.parameters()) * 0.0
        return self.loss(self.model, index, *args)


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run ``python -m recscope.train ARGS`` in ``nproc`` processes on this machine through torchrun
    (``--standalone``: a free port, no other machine); returns torchrun's exit status."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "recscope.train",
        *args,
    ]
    return subprocess.run(command, check=False).returncode
