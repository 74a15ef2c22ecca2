"""A fitted avatar's tile lists: its render beside how many Gaussians each 8 x 8 tile's list holds (a picture).

    python benchmarks/tile_lists.py AVATAR.npz --out nbs/images/tile_lists.png [--size 512] [--distance 3.3] [--device cpu]

The avatar is re-posed on its first body and seen from `bench_fit.py`'s frames/s camera. Lists are counted as gsplat's
intersection forms them (`rasterize.tile_counts` on the PyTorch rasterizer's projection); runs on the CPU.
"""
import argparse

import torch

from bench_fit import front_view


def main(argv=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from avatar_nb.avatar import load_avatar_file
    from avatar_nb.player import AvatarPlayer
    from avatar_nb.rasterize import _project, tile_counts
    ap = argparse.ArgumentParser()
    ap.add_argument("avatar"); ap.add_argument("--out", required=True); ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--distance", type=float, default=3.3); ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    S, dev = args.size, args.device
    a = load_avatar_file(args.avatar)
    v = torch.from_numpy(a.vertices[:1]).to(dev)
    E, K = front_view(S, dev, args.distance)
    with torch.no_grad():
        g = AvatarPlayer(a, dev, graph=False).place(v, E)  # lit, in the camera's frame
        img = g.render(K, S, S, background=torch.ones(1, 1, 3, device=dev), check=False).rgb[0, 0].clamp(0, 1).cpu()
        m2, _, _, _, radii, valid = _project(g.means, torch.nn.functional.normalize(g.quats, dim=-1), g.scales, g.opacities,
                                             torch.eye(4, device=dev)[None], K, S, S, 0.01, 1e10, 0.3, False)
        counts = tile_counts(m2, radii, valid, S, S)[0].cpu()
    held = counts[counts > 0].float()
    title = (f"{int((counts > 0).sum()):,} tiles hold Gaussians: {held.mean():.0f} on average, {int(counts.max()):,} at most "
             f"({int(valid.sum()):,} Gaussians)")
    fig, ax = plt.subplots(1, 2, figsize=(10, 5.4))
    ax[0].imshow(img.numpy()); ax[0].set_title("the avatar (PyTorch rasterizer)", fontsize=10)
    shown = ax[1].imshow(counts.numpy(), cmap="magma", interpolation="nearest")
    ty, tx = divmod(int(counts.argmax()), counts.shape[1])
    ax[1].scatter([tx], [ty], s=160, facecolors="none", edgecolors="cyan", linewidths=1.5)
    ax[1].set_title("Gaussians in each 8 x 8 tile's list (circled: the longest)", fontsize=10)
    fig.colorbar(shown, ax=ax[1], fraction=0.046)
    for x in ax: x.set_xticks([]); x.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(title)


if __name__ == "__main__":
    main()
