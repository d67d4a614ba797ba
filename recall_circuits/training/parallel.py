"""The process group that ``torchrun`` sets up: fine-tuning runs DDP in it, the gradient trace shares its examples
across it. Nothing here launches processes; ``torchrun --nproc_per_node N script ...`` does."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def device_name(device: str | None) -> str:
    """What a run trains on, for records and tables: ``cpu``, or a CUDA device's name (``NVIDIA H200``), or the
    device string itself."""
    if not device or device == "cpu":
        return "cpu"
    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device


def collective_device() -> str:
    """Where a tensor for a collective of the initialised group lives: NCCL takes CUDA tensors only."""
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


@contextlib.contextmanager
def process_group(timeout: timedelta | None = None) -> Iterator[bool]:
    """Join the group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment; NCCL on GPUs, gloo on CPU) for
    the block and leave it after; a no-op in a single process or where a group already exists. Yields whether
    the process runs with others. ``timeout``: how long a collective may wait (torch's default without it)."""
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        if torch.cuda.is_available():   # one GPU a process: "cuda" then means this process's own
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=timeout)
        started = True
    try:
        yield world()[1] > 1
    finally:
        if started:
            dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End a script with ``code``. In a process that ``torchrun`` started, the streams are flushed and the process
    ends without the interpreter's teardown: there, gloo's background threads can abort it after a finished run
    ("terminate called without an active exception", SIGABRT), which torchrun reports as the run failing."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
