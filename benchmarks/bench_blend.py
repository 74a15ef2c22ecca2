"""Where a fitted avatar's colour-only frame goes on a GPU, and gsplat's blending against chunked blending: prints markdown.

    python benchmarks/bench_blend.py AVATAR.npz [--size 512] [--distance 3.3] [--rounds 3] [--json out.json]

The avatar is re-posed on its first body and seen from the front, from `--distance` metres (3.3, the camera of
`bench_fit.py`'s frames/s, sees it whole; nearer, it fills the image and its tile lists grow).
The tile lists are gsplat's (8-pixel tiles); "light left" is 1 - alpha of gsplat's blending at pixels the person covers.
Times are medians of 200 calls (CUDA synchronised), each measured `--rounds` times in turn.
"""
import argparse, json

import torch

from bench_fit import _against, front_view


def main(argv=None):
    from avatar_nb.avatar import load_avatar_file
    from avatar_nb.blend import chunked_back
    from avatar_nb.evaluate import time_ms
    from avatar_nb.player import AvatarPlayer
    from avatar_nb.rasterize import RenderOutput
    from avatar_nb.render import gsplat_back, gsplat_tiles
    ap = argparse.ArgumentParser()
    ap.add_argument("avatar"); ap.add_argument("--size", type=int, default=512); ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--distance", type=float, default=3.3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    dev, S = "cuda", args.size
    a = load_avatar_file(args.avatar)
    p = AvatarPlayer(a, dev)
    v = torch.from_numpy(a.vertices[:1]).to(dev)
    (E, K), bg = front_view(S, dev, args.distance), torch.ones(1, 3, device=dev)
    with torch.no_grad():
        p.render(v, E, K, S, S, bg[0], depth=False)  # records the colour path's graph for this size
        graph, _, front = p._fronts[(S, S)]
        ids, _, offsets = gsplat_tiles(front, S, S)
        counts = torch.diff(offsets.reshape(-1), append=offsets.new_tensor([ids.numel()]))  # each tile's list length
        ref_rgb, ref_alpha = gsplat_back(front, S, S, bg)
        left = 1 - ref_alpha[0, 0, ..., 0]
        covered = ref_alpha[0, 0, ..., 0] > 0.5
        stats = {"gaussians": p.kept, "intersections": int(ids.numel()), "tiles_holding": int((counts > 0).sum()),
                 "list_mean": float(counts[counts > 0].float().mean()), "list_max": int(counts.max()),
                 "covered_pixels": int(covered.sum()),
                 "covered_median_light_left": float(left[covered].median())}
        p_gs, p_c = AvatarPlayer(a, dev, blend="gsplat"), AvatarPlayer(a, dev, compile=True)
        p_c.render(v, E, K, S, S, bg[0], depth=False)  # compiles before the timing
        runs = {"placement and projection (graph replay)": lambda: graph.replay(),
                "tile lists (gsplat's intersection and sort)": lambda: gsplat_tiles(front, S, S),
                "gsplat's blending (lists included)": lambda: gsplat_back(front, S, S, bg),
                "chunked blending (lists included)": lambda: chunked_back(front, S, S, bg),
                "chunked blending, 16-pixel tiles": lambda: chunked_back(front, S, S, bg, tile_size=16),
                "whole frame, gsplat's blending": lambda: p_gs.render(v, E, K, S, S, bg[0], depth=False),
                "whole frame, chunked blending": lambda: p.render(v, E, K, S, S, bg[0], depth=False),
                "whole frame, chunked blending, placement compiled": lambda: p_c.render(v, E, K, S, S, bg[0], depth=False)}
        ms = {k: [] for k in runs}
        for _ in range(args.rounds):
            for k, fn in runs.items(): ms[k].append(time_ms(fn, dev, 200, warmup=20)[0])
        rgb, alpha = chunked_back(front, S, S, bg)
        full, box = _against([RenderOutput(rgb, alpha, None)], [RenderOutput(ref_rgb, ref_alpha, None)])
        diff = {"max_abs": float((rgb - ref_rgb).abs().max()), "psnr": full, "psnr_box": box}
    print(f"{args.avatar}, {S} x {S} from {args.distance} m, {stats['gaussians']:,} Gaussians, {stats['intersections']:,} tile intersections (8-pixel tiles)")
    print("\n| tiles holding Gaussians | list mean | list max | covered pixels | median light left there |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {stats['tiles_holding']:,} | {stats['list_mean']:.0f} | {stats['list_max']:,} | {stats['covered_pixels']:,} | "
          f"{stats['covered_median_light_left']:.1e} |")
    print(f"\n| step | ms ({args.rounds} rounds) | frames/s |\n| --- | ---: | ---: |")
    for k, xs in ms.items():
        print(f"| {k} | {min(xs):.3f}-{max(xs):.3f} | {f'{1000 / max(xs):,.0f}-{1000 / min(xs):,.0f}' if 'whole' in k else ''} |")
    print(f"\nchunked against gsplat's image: largest difference {diff['max_abs']:.1e}, PSNR {diff['psnr']:.1f} dB "
          f"(person's box {diff['psnr_box']:.1f})")
    if args.json:
        with open(args.json, "w") as f: json.dump({"stats": stats, "ms": ms, "diff": diff, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
