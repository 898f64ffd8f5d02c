"""Running under `python -m paddle.distributed.launch --nproc_per_node N …` (QAT on several GPUs or CPU
processes): which rank this process is, and the few collectives fastdet needs, through Paddle's own
`paddle.distributed` (NCCL on GPUs, gloo on CPUs). Without the launcher: one rank of one, and every collective
is a no-op that imports nothing."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return (f"distributed run: {self.size} processes (paddle.distributed.launch), this is rank {self.rank}; "
                "images are split between the ranks, rank 0 evaluates, writes the output and the report")


def world() -> World:
    """The launcher's rank and world size (PADDLE_TRAINER_ID / PADDLE_TRAINERS_NUM), else a world of one."""
    try:
        size = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
        rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
    except ValueError:
        return World()
    return World(rank, size) if size > 1 else World()


_initialised = False


def init() -> None:
    """Paddle's parallel environment (once; dygraph mode, as Paddle requires)."""
    global _initialised
    if _initialised or world().size == 1:
        return
    import paddle
    import paddle.distributed as dist

    static = not paddle.in_dynamic_mode()
    if static:
        paddle.disable_static()
    try:
        dist.init_parallel_env()
    finally:
        if static:
            paddle.enable_static()
    _initialised = True


class _dygraph:
    """Collectives run in dygraph mode; ACT trains in static mode: switch for the duration."""

    def __enter__(self):
        import paddle

        self.static = not paddle.in_dynamic_mode()
        if self.static:
            paddle.disable_static()

    def __exit__(self, *exc):
        import paddle

        if self.static:
            paddle.enable_static()


def barrier() -> None:
    if world().size == 1:
        return
    import paddle.distributed as dist

    init()
    with _dygraph():
        dist.barrier()


def broadcast_float(value: float, src: int = 0) -> float:
    """`value` as rank `src` has it, on every rank (the others' values are ignored)."""
    if world().size == 1:
        return value
    import numpy as np
    import paddle
    import paddle.distributed as dist

    init()
    with _dygraph():
        t = paddle.to_tensor(np.array([value if world().rank == src else 0.0], np.float64))
        dist.all_reduce(t)
        return float(t.numpy()[0])


def average_in_scope(names: list[str], scope=None) -> int:
    """Replace each float variable of `names` in the (static) scope by its mean over the ranks; returns how many
    were averaged. After an SGD step (weight decay included: it is linear) this equals a step on the mean
    gradient, i.e. synchronous data parallelism."""
    if world().size == 1:
        return 0
    import numpy as np
    import paddle
    import paddle.distributed as dist

    init()
    scope = scope or paddle.static.global_scope()
    size, done = world().size, 0
    with _dygraph():
        for name in names:
            tensor = _tensor(scope, name)
            if tensor is None:
                continue
            arr = np.array(tensor)
            if arr.dtype not in (np.float32, np.float64) or arr.size == 0:
                continue
            t = paddle.to_tensor(arr)
            dist.all_reduce(t)
            tensor.set((t.numpy() / size).astype(arr.dtype), paddle.CPUPlace())
            done += 1
    return done


def _tensor(scope, name: str):
    """The initialised dense tensor `name` in `scope`, or None."""
    var = scope.find_var(name)
    if var is None:
        return None
    try:
        tensor = var.get_tensor()
    except Exception:  # not a dense tensor (a reader, a tensor array…)
        return None
    return tensor if tensor._is_initialized() else None


def digest_in_scope(names: list[str], scope=None) -> str:
    """sha256 over the float variables of `names` in the scope (to check the ranks hold the same weights)."""
    import numpy as np
    import paddle

    scope = scope or paddle.static.global_scope()
    h = hashlib.sha256()
    for name in sorted(names):
        tensor = _tensor(scope, name)
        if tensor is not None:
            arr = np.array(tensor)
            if arr.dtype in (np.float32, np.float64):
                h.update(name.encode())
                h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def gather_strings(value: str) -> list[str]:
    """`value` of every rank, in rank order."""
    if world().size == 1:
        return [value]
    import paddle.distributed as dist

    init()
    out: list = []
    with _dygraph():
        dist.all_gather_object(out, value)
    return [str(v) for v in out]
