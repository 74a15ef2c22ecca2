"""Localisation speed: B posed bodies -> x3D, x2D and face frames for every Gaussian.

    python benchmarks/bench_localise.py                 # Anny k=4, B=8, on CPU (and CUDA when present)
    python benchmarks/bench_localise.py --save-mesh m.npz   # write the Anny rest mesh for machines without anny
    python benchmarks/bench_localise.py --mesh m.npz        # time on that mesh
"""
import argparse
import numpy as np
import torch

from avatar_nb.speed import time_ms
from common import load_mesh
from avatar_nb.template import make_template
from avatar_nb.localise import Localiser, intrinsics, look_at, transform_points


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mesh", help="npz with vertices [V,3] and faces [F,3] (default: the Anny rest mesh)")
    ap.add_argument("--save-mesh", help="write the Anny rest mesh to this npz and exit")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--devices", default="cpu,cuda")
    a = ap.parse_args()
    verts, faces, name = load_mesh(a.mesh)
    if a.save_mesh:
        np.savez(a.save_mesh, vertices=verts.numpy(), faces=faces.numpy(), name=name)
        print(f"wrote {a.save_mesh}")
        return
    t = make_template(verts, faces, k=a.k, sh_degree=0, body_model=name)
    g = torch.Generator().manual_seed(0)
    B = a.batch
    # B bodies: the rest mesh with small random vertex jitter, 3 m in front of a 512x512 camera
    world = verts[None] + 0.01 * torch.randn(B, *verts.shape, generator=g)
    cam = transform_points(look_at(torch.tensor([0.0, 0.0, 3.0]), torch.zeros(3)), world)
    K = intrinsics(512, 512).expand(B, 3, 3)
    rows = []
    for dev in a.devices.split(","):
        if dev == "cuda" and not torch.cuda.is_available(): continue
        d = torch.device(dev)
        loc = Localiser(t).to(d)
        v, Kd = cam.to(d), K.to(d)
        name_dev = torch.cuda.get_device_name() if d.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        for dtype in (torch.float32, torch.bfloat16):
            vv = v.to(dtype)
            with torch.no_grad():
                off = time_ms(lambda: loc(vv, Kd, check=False), d, a.reps, warmup=10)[0]
                on = time_ms(lambda: loc(vv, Kd, check=True), d, a.reps, warmup=10)[0]
            rows.append((name_dev, str(dtype).replace("torch.", ""), B, t.num_gaussians, off, on))
    print(f"\nLocalisation ({name} mesh, k={a.k}), median of {a.reps} runs, no grad\n")
    print("| device | input dtype | B | Gaussians per body | ms (check off) | ms (check on) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows: print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:,} | {r[4]:.2f} | {r[5]:.2f} |")


if __name__ == "__main__":
    main()
