"""Render speed: the torch backend on CPU, and render() against the raw gsplat call on a GPU.

    python benchmarks/bench_render.py                       # torch backend, 128x128, 30k Gaussians, fwd+bwd
    python benchmarks/bench_render.py --gsplat              # also: render(backend='gsplat') / gsplat.rasterization
    python benchmarks/bench_render.py --sizes 128 256 --counts 30000 100000

Scenes are random Gaussians in a body-sized box 2.5 m in front of the camera (scales 5-20 mm,
opacities 0.3-1, SH degree 3). Peak memory on the CPU is the process's peak resident set growth
during the timed runs, measured in a fresh subprocess per configuration.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys

import torch

from avatar_nb.speed import time_ms


def scene(n, device, seed=0, sh_degree=3):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * torch.tensor([0.6, 1.7, 0.3]) - torch.tensor([0.3, 0.85, 0.15])
    means[:, 2] += 2.5
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = torch.rand(n, 3, generator=g) * 0.015 + 0.005
    opac = torch.rand(n, generator=g) * 0.7 + 0.3
    sh = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.2
    return [t.to(device) for t in (means, quats, scales, opac, sh)]


def camera(size, device):
    f = size / (2 * 0.36397)  # 40 degree field of view
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]], device=device)[None]
    return torch.eye(4, device=device)[None], K


def one_cpu(size, n, reps):
    "Run in a fresh process: time and peak memory of torch-backend forward and forward+backward."
    from avatar_nb.render import render
    dev = torch.device("cpu")
    means, quats, scales, opac, sh = scene(n, dev)
    vm, K = camera(size, dev)
    params = [t.clone().requires_grad_() for t in (means, quats, scales, opac, sh)]
    def fwd():
        with torch.no_grad():
            render(means, quats, scales, opac, sh, vm, K, size, size, backend="torch")
    def fwd_bwd():
        out = render(*params, vm, K, size, size, backend="torch")
        (out.rgb.sum() + out.alpha.sum()).backward()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t_f = time_ms(fwd, dev, reps)[0] / 1000
    t_fb = time_ms(fwd_bwd, dev, reps)[0] / 1000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base  # KiB on Linux
    print(json.dumps({"fwd_ms": t_f * 1000, "fwd_bwd_ms": t_fb * 1000, "peak_mb": peak / 1024}))


def gsplat_rows(sizes, counts, reps):
    import gsplat
    from avatar_nb.render import render
    dev = torch.device("cuda")
    rows = []
    for size in sizes:
        for n in counts:
            means, quats, scales, opac, sh = scene(n, dev)
            vm, K = camera(size, dev)
            raw = lambda: gsplat.rasterization(means, quats, scales, opac, sh, vm, K, size, size, sh_degree=3,
                                               render_mode="RGB+ED", tile_size=8, packed=False)  # render()'s settings
            ours = lambda: render(means, quats, scales, opac, sh, vm, K, size, size, backend="gsplat")  # default
            ours_nc = lambda: render(means, quats, scales, opac, sh, vm, K, size, size, backend="gsplat", check=True)
            # interleave to share the machine's state; median of each
            t_raw, t_ours, t_nc = [], [], []
            for _ in range(3): raw(); ours(); ours_nc()
            for _ in range(reps):
                t_raw.append(time_ms(raw, dev, 1, 0)[0] / 1000); t_ours.append(time_ms(ours, dev, 1, 0)[0] / 1000); t_nc.append(time_ms(ours_nc, dev, 1, 0)[0] / 1000)
            r, o, c = (statistics.median(x) * 1000 for x in (t_raw, t_ours, t_nc))
            rows.append((torch.cuda.get_device_name(), size, n, r, o, o / r, c, c / r))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128])
    ap.add_argument("--counts", type=int, nargs="+", default=[30000])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gsplat", action="store_true", help="compare render(backend='gsplat') with gsplat.rasterization")
    ap.add_argument("--gsplat-only", action="store_true", help="skip the CPU rows")
    ap.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        torch.set_num_threads(torch.get_num_threads())
        return one_cpu(a.one[0], a.one[1], a.reps)
    if not a.gsplat_only:
        print(f"\ntorch backend on CPU ({torch.get_num_threads()} threads), median of {a.reps} runs\n")
        print("| size | Gaussians | forward ms | forward+backward ms | peak memory MB |")
        print("| --- | --- | --- | --- | --- |")
        for size in a.sizes:
            for n in a.counts:
                r = subprocess.run([sys.executable, __file__, "--one", str(size), str(n), "--reps", str(a.reps)],
                                   capture_output=True, text=True)
                if r.returncode: print(r.stderr); sys.exit(1)
                d = json.loads(r.stdout.strip().splitlines()[-1])
                print(f"| {size}x{size} | {n:,} | {d['fwd_ms']:.0f} | {d['fwd_bwd_ms']:.0f} | {d['peak_mb']:.0f} |")
    if a.gsplat or a.gsplat_only:
        rows = gsplat_rows(a.sizes, a.counts, max(a.reps, 50))
        print(f"\nrender(backend='gsplat') against gsplat.rasterization on the same inputs (RGB+ED, SH 3), median of {max(a.reps, 50)}\n")
        print("| device | size | Gaussians | gsplat ms | render() ms | ratio | render(check=True) ms | ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r[0]} | {r[1]}x{r[1]} | {r[2]:,} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.2f} | {r[6]:.3f} | {r[7]:.2f} |")


if __name__ == "__main__":
    main()
