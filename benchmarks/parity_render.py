"""Torch backend against gsplat on a CUDA device: images and gradients, random and avatar-like scenes.

    python benchmarks/parity_render.py --mesh mesh.npz --out DIR

mesh.npz holds the Anny rest mesh (`python benchmarks/bench_localise.py --save-mesh mesh.npz` where anny
is installed). Prints a table and writes parity.json and parity_avatar.png (the avatar-like scene seen
from the front and the side by both backends, with their difference magnified 100x) into DIR.
Exit status 1 when a tolerance is missed (images 2e-3 max abs, gradients 5e-2 relative).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from avatar_nb.render import backend_parity, render
from avatar_nb.template import SH_C0
from avatar_nb.template import make_template
from avatar_nb.localise import place_template, look_at, intrinsics, quat_to_matrix


def random_scene(n, seed, dev):
    g = torch.Generator().manual_seed(seed)
    s = dict(means=torch.rand(n, 3, generator=g) * torch.tensor([0.6, 1.7, 0.3]) - torch.tensor([0.3, 0.85, 0.15]),
             quats=torch.randn(n, 4, generator=g), scales=torch.rand(n, 3, generator=g) * 0.015 + 0.004,
             opacities=torch.rand(n, generator=g) * 0.75 + 0.2, colors=torch.randn(n, 16, 3, generator=g) * 0.25)
    return {k: v.to(dev) for k, v in s.items()}


def avatar_scene(mesh, k, seed, dev):
    z = np.load(mesh)
    t = make_template(torch.from_numpy(z["vertices"]).float(), torch.from_numpy(z["faces"]).long(), k=k, sh_degree=3)
    pg = place_template(t)
    g = torch.Generator().manual_seed(seed)
    n = t.num_gaussians
    normal = quat_to_matrix(pg.quats)[..., 2]  # face normals
    sh = torch.randn(n, 16, 3, generator=g) * 0.05
    sh[:, 0] = (0.5 + 0.35 * normal - 0.5) / SH_C0
    c = (t.rest_vertices.max(0).values + t.rest_vertices.min(0).values) / 2
    jitter = 1 + 0.3 * torch.rand(n, 3, generator=g)
    s = dict(means=pg.means - c, quats=pg.quats, scales=pg.scales * jitter,
             opacities=torch.rand(n, generator=g) * 0.2 + 0.8, colors=sh)
    return {k_: v.to(dev) for k_, v in s.items()}


def cams(size, n_cams, dev, dist=2.6):
    eyes = [torch.tensor([0.0, 0.0, dist]), torch.tensor([dist, 0.0, 0.0]), torch.tensor([-1.8, 0.5, -1.8]),
            torch.tensor([1.8, -0.3, 1.8])][:n_cams]
    vm = torch.stack([look_at(e, torch.zeros(3)) for e in eyes]).to(dev)
    K = intrinsics(size, size, fov_degrees=45).expand(n_cams, 3, 3).to(dev)
    return vm, K


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mesh", required=True)
    ap.add_argument("--out", default=".")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--small", action="store_true", help="first run tiny scenes (1, 10, 1000 Gaussians)")
    a = ap.parse_args()
    dev = torch.device("cuda")
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    _, K1 = cams(a.size, 1, dev)
    vm1 = torch.eye(4, device=dev)[None].clone()
    vm1[:, 2, 3] = 2.5  # the random box sits 2.5 m in front of the camera
    vm2, K2 = cams(a.size, 2, dev)
    vm4, K4 = cams(a.size, 4, dev)
    vms, Ks_ = vm1.clone(), intrinsics(64, 64, fov_degrees=45)[None].to(dev)
    small = [(f"random, {n} Gaussians, 64x64", random_scene(n, 10 + n, dev), vms, Ks_, {"width": 64, "height": 64})
             for n in (1, 10, 1000)] if a.small else []
    cases = small + [("random, 1 camera", random_scene(300_000, 0, dev), vm1, K1, {}),
             ("random, 1 camera, antialiased", random_scene(300_000, 1, dev), vm1, K1, {"antialiased": True}),
             ("avatar-like (Anny k=12), 2 cameras", avatar_scene(a.mesh, 12, 2, dev), vm2, K2, {}),
             ("avatar-like (Anny k=4), 4 cameras, white bg", avatar_scene(a.mesh, 4, 3, dev), vm4, K4,
              {"background": torch.ones(3, device=dev)})]
    rows, ok = [], True
    for name, sc, vm, K, kw in cases:
        kw = {"width": a.size, "height": a.size, **kw}
        try:
            r = backend_parity(**sc, viewmats=vm, Ks=K, **kw)
        except Exception as e:  # report and go on with the other scenes
            print(f"{name}: FAILED to run: {type(e).__name__}: {e}", flush=True); ok = False; continue
        worst = max(r["grad_rel"].values())
        good = r["rgb_max_abs"] < 2e-3 and r["alpha_max_abs"] < 2e-3 and worst < 5e-2
        ok &= good
        rows.append({"scene": name, "gaussians": sc["means"].shape[0], "cameras": vm.shape[0], **r, "pass": good})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\ntorch backend vs gsplat, {a.size}x{a.size}, {torch.cuda.get_device_name()}\n")
    print("| scene | Gaussians | cameras | rgb max abs | rgb mean abs | pixels > 2e-3 | alpha max abs | depth max abs (m, alpha>0.5) | "
          "grad rel: means | quats | scales | opacities | colors | viewmats | pass |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        gr = r["grad_rel"]
        print(f"| {r['scene']} | {r['gaussians']:,} | {r['cameras']} | {r['rgb_max_abs']:.1e} | {r['rgb_mean_abs']:.1e} | "
              f"{r['pixels_over_2e-3']} of {r['pixels']:,} | {r['alpha_max_abs']:.1e} | "
              f"{r['depth_max_abs_m']:.1e} | " + " | ".join(f"{gr[k]:.1e}" for k in
              ("means", "quats", "scales", "opacities", "colors", "viewmats")) + f" | {'yes' if r['pass'] else 'NO'} |")
    (out / "parity.json").write_text(json.dumps(rows, indent=2))
    # the figure
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    sc = avatar_scene(a.mesh, 4, 3, dev)
    vm, K = cams(a.size, 2, dev)
    with torch.no_grad():
        imgs = {b: render(**sc, viewmats=vm, Ks=K, width=a.size, height=a.size, background=torch.ones(3, device=dev),
                          backend=b).rgb.clamp(0, 1).cpu() for b in ("gsplat", "torch")}
    fig, axs = plt.subplots(2, 3, figsize=(10, 6.8))
    for i, view in enumerate(("front", "side")):
        diff = (imgs["torch"][i] - imgs["gsplat"][i]).abs()
        axs[i, 0].imshow(imgs["gsplat"][i]); axs[i, 0].set_title(f"{view}: gsplat")
        axs[i, 1].imshow(imgs["torch"][i]); axs[i, 1].set_title(f"{view}: torch backend")
        axs[i, 2].imshow((diff * 100).clamp(0, 1)); axs[i, 2].set_title(f"|difference| x 100 (max {diff.max():.1e})")
    for ax in axs.flat: ax.axis("off")
    fig.tight_layout(); fig.savefig(out / "parity_avatar.png", dpi=80)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
