"""Data parallelism with torch.distributed, set up from torchrun's environment; one process, one device.

Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op for a single process.
"""

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from math_llm.errors import ConfigError, PeerLost
from math_llm.runtime import select_device

# A rank that waits longer than this on a collective gives up with an error instead of hanging (a peer that died
# is usually noticed at once; this bounds a hung one). Generous: rank 0 alone may be starting W&B or writing a
# checkpoint, and with --compile each rank compiles its own batch shapes, while the others wait.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


def is_peer_failure(error):
    """Whether `error` is a collective that failed because another process is gone: torch's distributed errors, or
    the RuntimeErrors in which gloo reports a closed connection."""
    return dist.is_initialized() and (isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError)
        and any(sign in str(error) for sign in ("Connection reset by peer", "Connection closed by peer"))))


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1


def setup_distributed(device_name):
    """(Ranks, device). Under torchrun: joins the process group (nccl on CUDA, gloo on CPU) and takes the GPU of
    its local rank. Otherwise a single process on `select_device(device_name)`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Ranks(), select_device(device_name)
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), world_size)
    device = select_device(device_name)
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {ranks.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                              f"start at most that many processes per node")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # DDP imports torch._dynamo at its first use. Imported while a process group exists, dynamo's tables keep a
        # reference to the group, so its gloo threads outlive destroy_process_group and can abort the process as it
        # exits ("terminate called without an active exception"). Imported first, it holds nothing.
        import torch._dynamo  # noqa: F401
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=restart_store(ranks),
                                rank=ranks.rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT,
                                device_id=device if device.type == "cuda" else None)
    return ranks, device


def restart_store(ranks):
    """The rendezvous store of torchrun's environment (its agent's, or one rank 0 hosts, as env:// does), with keys
    prefixed by the restart count: a group restarted by --max-restarts otherwise could read the addresses that the
    workers before the restart left in the same store, and fail to connect (seen with gloo)."""
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), ranks.world_size,
                          is_master=ranks.is_main and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True",
                          timeout=COLLECTIVE_TIMEOUT)
    return dist.PrefixStore(f"restart-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def teardown(clean=True):
    """Leaves the process group. After a clean finish every rank first waits for the others, so that none closes
    its connections while another still uses them (a late rank could otherwise abort in gloo's teardown)."""
    if dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor):
    """Sums `tensor` over all ranks in place (a no-op for one process); returns it."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def all_gather_objects(obj):
    """[obj of rank 0, obj of rank 1, ...]; [obj] for one process."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def is_main_process():
    """Whether this is rank 0 of a torchrun job, or the only process: the one that writes files, logs and shows
    progress bars. From torchrun's environment, so it holds before the process group is set up too."""
    return int(os.environ.get("RANK", "0")) == 0


def rank_shard(dataset):
    """This rank's share of a split under torchrun, every world_size-th problem (the whole split otherwise)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return dataset
    return dataset.subset(range(dist.get_rank(), len(dataset), dist.get_world_size()))


def run_process(function, *args):
    """Runs function(*args) as one process of a (torchrun) job and leaves the process group after it. A collective
    that failed because another process is gone becomes one PeerLost line naming the way to resume."""
    try:
        result = function(*args)
    except Exception as error:
        peer_lost = is_peer_failure(error)
        teardown(clean=False)
        if not peer_lost:
            raise
        first_line = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise PeerLost(f"rank {os.environ.get('RANK')}: another process of this job is gone ({first_line}); "
                       f"stopping. Run the same torchrun command to resume from the last checkpoint, or give "
                       f"torchrun --max-restarts N to do that automatically") from None
    teardown()
    return result
