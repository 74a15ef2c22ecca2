"""The fit's ablation on synthetic people with exact and noisy stored bodies: prints a markdown table.

    python benchmarks/bench_fit.py --data DIR --datasets s0_exact s0_deg1 s0_deg3 --truth s0_exact --rig rig_s0.pt \
        --template template.npz [--steps 1000] [--size 256] [--device cuda] [--json out.json]
    python benchmarks/bench_fit.py ... --checkpoint runs/prior/checkpoints/last.ckpt [key=value ...] [--rows "keep=0.5" ...]
    python benchmarks/bench_fit.py --fps DATASET avatar1.npz avatar2.npz   # frames/s of saved avatars, in one process

Each dataset is fitted from the template alone (no trained model), or with --checkpoint from that trained model's
fused decode of the person's training images: refinement with the stored bodies, then refinement with body
correction. Trailing key=value pairs set other `FitConfig` keys (e.g. lr_body=0.002 body_prior=0); each of --rows
is a fit with its own keys over those. test_view is scored on the bodies the fit used (corrected where corrected)
and, as a diagnosis, on the true bodies; test_pose on the stored bodies and, labelled apart, after fitting only the held-out bodies with the avatar frozen. Body errors are
mean vertex distances to the true bodies (the exact dataset of the same seed), in cm.
"""
import argparse, json, time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from avatar_nb.avatar import save_avatar
from avatar_nb.config import load_config
from avatar_nb.data import load_dataset_index
from avatar_nb.rasterize import ALPHA_THRESHOLD
from avatar_nb.fit import FitConfig, fit_avatar, evaluate_avatar, refit_bodies, body_error_cm, fused_start
from avatar_nb.rig import load_rig
from avatar_nb.template import load_template


def split_views(a, index, split: str, device) -> tuple:
    "Bodies (the avatar's fitted ones), viewmats and intrinsics of a split's images of the avatar's frames."
    row = {f: i for i, f in enumerate(a.frames)}
    ents = [(f, c) for f, c in index.splits[split] if f in row]
    v = torch.from_numpy(np.stack([a.vertices[row[f]] for f, _ in ents])).to(device)
    E = torch.as_tensor(np.stack([index.cameras[c].viewmat for _, c in ents]), dtype=torch.float32, device=device)
    K = torch.as_tensor(np.stack([index.cameras[c].K for _, c in ents]), dtype=torch.float32, device=device)
    cam = index.cameras[ents[0][1]]
    return v, E, K, cam.width, cam.height


def front_view(size: int, device, distance: float = 3.3) -> tuple:
    "The frames/s camera: the body seen from the front at `distance` metres, 40 degrees across: viewmat [1, 4, 4], K [1, 3, 3]."
    from avatar_nb.localise import intrinsics, look_at
    E = look_at(torch.tensor([0.0, 1.3, distance]), torch.tensor([0.0, 1.0, 0.0]))
    return E.to(device)[None], intrinsics(size, size, 40.0).to(device)[None]


def render_fps(a, device, index=None, size=512, reps=200, prune=(0.0, 0.05), rounds=3) -> dict:
    """Frames per second of the fitted avatar re-posed and rendered one frame per call at size x size (1000 / median ms),
    each measured `rounds` times in turn: `render_avatar`, `AvatarPlayer` with depth, and its colour-only path blended in
    chunks (the default), blended by gsplat, and blended in chunks with the placement compiled. With a dataset: the
    held-out views' box PSNR against their images for each, and the chunked colour path keeping only the Gaussians whose
    `contribution` to the training views is above each `prune` value (pixels), scored against the unpruned one."""
    from avatar_nb.avatar import render_avatar
    from avatar_nb.fit import evaluate_avatar
    from avatar_nb.player import AvatarPlayer, contribution
    from avatar_nb.evaluate import time_ms
    from avatar_nb.localise import Localiser
    loc = Localiser(a.template).to(device)
    v = torch.from_numpy(a.vertices[:1]).to(device)
    (E, K), bg = front_view(size, device), torch.ones(3, device=device)
    players = {"chunks": AvatarPlayer(a, device), "gsplat": AvatarPlayer(a, device, blend="gsplat")}
    t0 = time.perf_counter()
    players["compiled"] = p = AvatarPlayer(a, device, compile=True)
    with torch.no_grad(): p.render(v, E, K, size, size, bg, depth=False)
    ms = lambda fn: time_ms(fn, device, reps, warmup=10)[0]
    res = {"kept": players["chunks"].kept, "gaussians": players["chunks"].total, "size": size,
           "compile_s": time.perf_counter() - t0, "fps": {}}
    runs = {"render_avatar": lambda: render_avatar(a, v, E, K, size, size, bg, loc, check=False),
            "player_depth": lambda: players["chunks"].render(v, E, K, size, size, bg)}
    runs |= {f"colour_{k}": (lambda p=p: p.render(v, E, K, size, size, bg, depth=False)) for k, p in players.items()}
    with torch.no_grad():
        for _ in range(rounds):
            for k, fn in runs.items(): res["fps"].setdefault(k, []).append(1000 / ms(fn))
        depth_rgb = runs["player_depth"]().rgb
        res["max_diff_vs_depth_path"] = {k: float((runs[f"colour_{k}"]().rgb - depth_rgb).abs().max()) for k in players}
    if index is None or "test_view" not in index.splits: return res
    used = {f: torch.from_numpy(a.vertices[i]) for i, f in enumerate(a.frames)}
    box = lambda render=None: evaluate_avatar(a, index, "test_view", used, device=device, render=render)["psnr_crop"]
    colour = lambda p: (lambda v_, E_, K_, W, H, b: p.render(v_, E_, K_, W, H, b, depth=False))
    res["test_view_box"] = {"render_avatar": box()} | {k: box(colour(p)) for k, p in players.items()}
    w = contribution(a, *split_views(a, index, "train", device))
    tv, tE, tK, W, H = split_views(a, index, "test_view", device)
    with torch.no_grad():
        views = lambda p: [p.render(tv[i:i + 1], tE[i:i + 1], tK[i:i + 1], W, H, bg, depth=False) for i in range(len(tv))]
        ref = views(players["chunks"])
        for tau in prune:
            p = AvatarPlayer(a, device, keep=w > tau)
            full, box_ = _against(views(p), ref)
            fps = [1000 / ms(lambda: p.render(v, E, K, size, size, bg, depth=False)) for _ in range(rounds)]
            res.setdefault("pruned", []).append({"contribution_above_px": tau, "kept": p.kept, "colour_fps": fps,
                                                 "test_view_psnr_vs_unpruned_min": full, "test_view_box_psnr_vs_unpruned_min": box_})
    return res


def _against(outs: list, refs: list) -> tuple[float, float]:
    "The smallest PSNR of renders against reference renders over the views: whole image, and the reference person's box."
    from avatar_nb.evaluate import person_bbox
    from avatar_nb.losses import psnr
    p = lambda x, y: float(psnr(x.permute(2, 0, 1)[None], y.permute(2, 0, 1)[None])[0])  # [H, W, 3] each; inf when equal
    full, box = [], []
    for o, r in zip(outs, refs):
        full.append(p(o.rgb[0, 0], r.rgb[0, 0]))
        x0, y0, x1, y1 = person_bbox(r.alpha[0, 0, ..., 0] > 0.5) or (0, 0, r.rgb.shape[-2], r.rgb.shape[-3])
        box.append(p(o.rgb[0, 0, y0:y1, x0:x1], r.rgb[0, 0, y0:y1, x0:x1]))
    return min(full), min(box)


def print_fps(name: str, f: dict):
    span = lambda xs: f"{min(xs):,.0f}-{max(xs):,.0f}"
    print(f"{name}, 1 frame per call at {f['size']} x {f['size']} ({f['kept']:,} of {f['gaussians']:,} Gaussians can show), "
          f"frames/s over {len(f['fps']['render_avatar'])} rounds (compiling took {f['compile_s']:.0f} s):", flush=True)
    tv = f.get("test_view_box", {})
    print("| path | frames/s | largest difference from the depth path | test_view box PSNR |\n| --- | ---: | ---: | ---: |")
    for k, xs in f["fps"].items():
        b = k.removeprefix("colour_")  # render_avatar, player_depth, or a colour path's blending
        diff, score = f["max_diff_vs_depth_path"].get(b), tv.get(b)
        print(f"| {k} | {span(xs)} | {'' if diff is None else f'{diff:.1e}'} | {'' if score is None else f'{score:.2f}'} |", flush=True)
    for r in f.get("pruned", []):
        print(f"  chunked colour path keeping contribution > {r['contribution_above_px']} px: {r['kept']:,} Gaussians, "
              f"{span(r['colour_fps'])} frames/s, test_view PSNR against unpruned >= "
              f"{r['test_view_psnr_vs_unpruned_min']:.1f} dB (box {r['test_view_box_psnr_vs_unpruned_min']:.1f})", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--datasets", nargs="+", required=True, help="dataset folders under --data, each NAME or NAME:off,params")
    ap.add_argument("--truth", required=True); ap.add_argument("--rig", required=True)
    ap.add_argument("--template", default=None, help="start from this template (no trained model)")
    ap.add_argument("--checkpoint", default=None, help="start from this trained model's fused decode instead")
    ap.add_argument("overrides", nargs="*", help="FitConfig key=value, for every row")
    ap.add_argument("--rows", nargs="+", default=[""], help="one quoted string of FitConfig key=value overrides per row "
                    "(over the trailing ones); start_bodies=NAME (diagnostic) decodes the start on dataset NAME's bodies")
    ap.add_argument("--steps", type=int, default=1000); ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--refit-steps", type=int, default=200); ap.add_argument("--device", default="cuda")
    ap.add_argument("--modes", nargs="+", default=["off", "params"]); ap.add_argument("--json", default=None)
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop starting new fits after this many seconds")
    ap.add_argument("--no-fps", action="store_true", help="skip the frames/s measurement of the first fitted avatar")
    ap.add_argument("--save", default=None, help="folder to write each fitted avatar to (NAME_MODE[_ROW].npz)")
    args = ap.parse_args(argv)
    settings = [d for d in args.datasets if "=" in d]  # key=value words after --datasets are settings, not datasets
    args.datasets, args.overrides = [d for d in args.datasets if "=" not in d], args.overrides + settings
    if bool(args.template) == bool(args.checkpoint): ap.error("give one of --template or --checkpoint")
    over = dict(o.split("=", 1) for o in args.overrides)
    t_start = time.perf_counter()
    root = Path(args.data)
    rig = load_rig(root / args.rig)
    template = load_template(root / args.template) if args.template else None
    ti = load_dataset_index(root / args.truth)
    truth = {f: ti.vertices[ti.row(f)] for f in ti.frames}
    rows, fps, starts = [], None, {}
    print("| stored bodies | settings | start error cm | fit | corrected error cm | train box | test_view box | "
          "test_view box (true bodies) | test_pose box (stored) | test_pose box (bodies refitted) | Gaussians kept | fit s |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    for spec in args.datasets:  # NAME or NAME:mode,mode (modes of that dataset only)
        name, _, ms = spec.partition(":")
        index = load_dataset_index(root / name)
        for mode in (ms.split(",") if ms else args.modes):
            for n_row, row in enumerate(args.rows):
                if time.perf_counter() - t_start > args.budget_s: print(f"(budget reached: {name} {mode} {row} not run)"); continue
                rover = over | dict(o.split("=", 1) for o in row.split())
                start_on = rover.pop("start_bodies", name)
                cfg = load_config(schema=FitConfig(steps=args.steps, size=args.size, body=mode, progress=False, backend="auto"),
                                  overrides=[f"{k}={v}" for k, v in rover.items()])  # typed and checked as the CLI does
                start, t_start_s = None, time.perf_counter()
                if args.checkpoint:  # one fused decode per dataset and start bodies, reused by every row
                    if start_on not in starts:
                        sidx = index if start_on == name else replace(index, vertices=load_dataset_index(root / start_on).vertices)
                        starts[start_on] = fused_start(args.checkpoint, sidx, cfg, args.device)
                    template, start, _ = starts[start_on]
                a = fit_avatar(index, template, cfg, start=start, body=rig, device=args.device)
                a.provenance["seconds"] = round(time.perf_counter() - t_start_s, 1)  # the fused decode included where made
                if args.save: save_avatar(a, Path(args.save) / f"{name}_{mode}{f'_{n_row}' if len(args.rows) > 1 else ''}.npz")
                used = {f: torch.from_numpy(a.vertices[i]) for i, f in enumerate(a.frames)}
                tv = evaluate_avatar(a, index, "test_view", used, device=args.device)
                tvt = evaluate_avatar(a, index, "test_view", {f: torch.from_numpy(truth[f]) for f in a.frames}, device=args.device)
                tr = evaluate_avatar(a, index, "train", used, device=args.device)  # how closely the fitted views are matched
                tp = evaluate_avatar(a, index, "test_pose", device=args.device)
                tpr = None
                if mode != "off" and args.refit_steps:
                    r = refit_bodies(a, index, "test_pose", replace(cfg, steps=args.refit_steps), rig, args.device)
                    tpr = evaluate_avatar(a, index, "test_pose", {f: torch.from_numpy(r.vertices[i]) for i, f in enumerate(r.frames)},
                                          device=args.device)
                err0 = float(np.mean([np.linalg.norm(index.vertices[index.row(f)] - truth[f], axis=-1).mean() for f in a.frames])) * 100
                err1 = body_error_cm(a, truth)  # both over the fitted (training) frames
                kept = int((a.gaussians.opacity >= ALPHA_THRESHOLD).sum())  # those that can show
                rec = {"dataset": name, "mode": mode, "row": row, "start_error_cm": err0, "corrected_error_cm": err1,
                       "test_view_box": tv["psnr_crop"], "test_view_true_bodies_box": tvt["psnr_crop"], "test_view_full": tv["psnr"],
                       "train_box": tr["psnr_crop"], "test_pose_box": tp["psnr_crop"],
                       "test_pose_refit_box": tpr["psnr_crop"] if tpr else None, "fit_s": a.provenance["seconds"],
                       "gaussians": a.num_gaussians, "gaussians_kept": kept}
                rows.append(rec)
                fit_name = "refinement" if mode == "off" else "refinement + body correction"
                refit = "n/a" if tpr is None else f"{tpr['psnr_crop']:.2f}"
                print(f"| {name} | {row or 'defaults'} | {err0:.2f} | {fit_name} | {err1:.2f} | {tr['psnr_crop']:.2f} | "
                      f"{tv['psnr_crop']:.2f} | {tvt['psnr_crop']:.2f} | {tp['psnr_crop']:.2f} | {refit} | {kept:,} | "
                      f"{a.provenance['seconds']:.0f} |", flush=True)
                if fps is None and args.device != "cpu" and not args.no_fps:
                    fps = render_fps(a, args.device, index)
                    print_fps("fitted avatar", fps)
                if args.json: Path(args.json).write_text(json.dumps({"rows": rows, "fps_512": fps, "args": vars(args)}, indent=1))
    return rows


def fps_main(argv=None):
    "Frames/s of saved avatars, one after another in one process (ratios comparable): --fps DATA AVATAR.npz ..."
    from avatar_nb.avatar import load_avatar_file
    ap = argparse.ArgumentParser()
    ap.add_argument("--fps", required=True, help="the dataset folder whose views the pruning is scored on")
    ap.add_argument("avatars", nargs="+"); ap.add_argument("--device", default="cuda"); ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    index, out = load_dataset_index(args.fps), {}
    for p in args.avatars:
        out[p] = render_fps(load_avatar_file(p), args.device, index)
        print_fps(Path(p).name, out[p])
        if args.json: Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    import sys
    fps_main() if "--fps" in sys.argv else main()
