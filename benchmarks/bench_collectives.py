"""NCCL between the GPUs of this machine: all-reduce and broadcast times at the sizes a training step moves.

    python benchmarks/bench_collectives.py --sizes-mb 5.1 47.3 --reps 30

One process per GPU; medians of --reps timed calls (CUDA events) after 5 warm-ups; prints a table and the
bus bandwidth (all-reduce: 2 (n - 1) / n x bytes / time; broadcast: bytes / time).
"""
import argparse
import os
import statistics

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, world, sizes, reps, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device("cuda", rank))
    rows = []
    for mb in sizes:
        n = int(mb * 2**20 / 4)
        x = torch.randn(n, device="cuda")
        for name, fn in (("all_reduce", lambda: dist.all_reduce(x)), ("broadcast", lambda: dist.broadcast(x, 0))):
            for _ in range(5): fn()
            torch.cuda.synchronize()
            ts = []
            for _ in range(reps):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record(); fn(); b.record(); b.synchronize()
                ts.append(a.elapsed_time(b))
            ms = statistics.median(ts)
            bus = (2 * (world - 1) / world if name == "all_reduce" else 1) * n * 4 / (ms / 1000) / 1e9
            rows.append((name, mb, ms, bus))
    if rank == 0:
        print(f"{world} x {torch.cuda.get_device_name()}, NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}\n")
        print("| collective | MB (float32) | ms (median) | bus GB/s |\n| --- | ---: | ---: | ---: |")
        for name, mb, ms, bus in rows: print(f"| {name} | {mb:g} | {ms:.3f} | {bus:.1f} |")
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[5.1, 47.3])
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--port", type=int, default=29533)
    a = p.parse_args()
    world = torch.cuda.device_count()
    if world < 2: raise SystemExit(f"needs 2 or more GPUs, found {world}")
    mp.spawn(worker, args=(world, a.sizes_mb, a.reps, a.port), nprocs=world)


if __name__ == "__main__":
    main()
