"""The fit's ablation on synthetic people with exact and noisy stored bodies: prints a markdown table.

    python benchmarks/bench_fit.py --data DIR --datasets s0_exact s0_deg1 s0_deg3 --truth s0_exact --rig rig_s0.pt \
        --template template.npz [--steps 1000] [--size 256] [--device cuda] [--json out.json]

Each dataset is fitted from the template alone (no trained model): refinement with the stored bodies, then refinement
with body correction. test_view is scored on the bodies the fit used (corrected where corrected), test_pose on the
stored bodies and, labelled apart, after fitting only the held-out bodies with the avatar frozen. Body errors are
mean vertex distances to the true bodies (the exact dataset of the same seed), in cm.
"""
import argparse, json, time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from avatar_nb.data import load_dataset_index
from avatar_nb.fit import FitConfig, fit_avatar, evaluate_avatar, refit_bodies, load_rig, body_error_cm
from avatar_nb.template import load_template


def render_fps(a, device, size=512, reps=200):
    "Frames per second of the fitted avatar re-posed and rendered one frame per call at size x size."
    from avatar_nb.avatar import place_gaussians
    from avatar_nb.localise import Localiser, intrinsics, look_at, transform_points
    from avatar_nb.decoder import DecodedGaussians
    loc = Localiser(a.template).to(device)
    g = DecodedGaussians(*(getattr(a.gaussians, k).to(device) for k in ("rotation", "scale", "opacity", "sh", "offset")))
    v = torch.from_numpy(a.vertices[:1]).to(device)
    E = look_at(torch.tensor([0.0, 1.3, 3.3]), torch.tensor([0.0, 1.0, 0.0])).to(device)[None]
    K = intrinsics(size, size, 40.0).to(device)[None]
    def once():
        p = place_gaussians(loc, g, transform_points(E, v))
        return p.render(K, size, size, background=torch.ones(1, 1, 3, device=device), check=False)
    with torch.no_grad():
        for _ in range(10): once()
        torch.cuda.synchronize() if device != "cpu" else None
        t0 = time.perf_counter()
        for _ in range(reps): once()
        torch.cuda.synchronize() if device != "cpu" else None
    return reps / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--datasets", nargs="+", required=True, help="dataset folders under --data, each NAME or NAME:off,params")
    ap.add_argument("--truth", required=True); ap.add_argument("--rig", required=True); ap.add_argument("--template", required=True)
    ap.add_argument("--steps", type=int, default=1000); ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--refit-steps", type=int, default=200); ap.add_argument("--device", default="cuda")
    ap.add_argument("--modes", nargs="+", default=["off", "params"]); ap.add_argument("--json", default=None)
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop starting new fits after this many seconds")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    root = Path(args.data)
    rig, template = load_rig(root / args.rig), load_template(root / args.template)
    ti = load_dataset_index(root / args.truth)
    truth = {f: ti.vertices[ti.row(f)] for f in ti.frames}
    rows, fps = [], None
    print("| stored bodies | start error cm | fit | corrected error cm | test_view box | test_pose box (stored) | test_pose box (bodies refitted) | fit s |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |", flush=True)
    for spec in args.datasets:  # NAME or NAME:mode,mode (modes of that dataset only)
        name, _, ms = spec.partition(":")
        index = load_dataset_index(root / name)
        for mode in (ms.split(",") if ms else args.modes):
            if time.perf_counter() - t_start > args.budget_s: print(f"(budget reached: {name} {mode} not run)"); continue
            cfg = FitConfig(steps=args.steps, size=args.size, body=mode, progress=False, backend="auto")
            a = fit_avatar(index, template, cfg, body=rig, device=args.device)
            used = {f: torch.from_numpy(a.vertices[i]) for i, f in enumerate(a.frames)}
            tv = evaluate_avatar(a, index, "test_view", used, device=args.device)
            tp = evaluate_avatar(a, index, "test_pose", device=args.device)
            tpr = None
            if mode != "off" and args.refit_steps:
                r = refit_bodies(a, index, "test_pose", replace(cfg, steps=args.refit_steps), rig, args.device)
                tpr = evaluate_avatar(a, index, "test_pose", {f: torch.from_numpy(r.vertices[i]) for i, f in enumerate(r.frames)},
                                      device=args.device)
            err0 = float(np.mean([np.linalg.norm(index.vertices[index.row(f)] - truth[f], axis=-1).mean() for f in a.frames])) * 100
            err1 = body_error_cm(a, truth)  # both over the fitted (training) frames
            rec = {"dataset": name, "mode": mode, "start_error_cm": err0, "corrected_error_cm": err1,
                   "test_view_box": tv["psnr_crop"], "test_view_full": tv["psnr"], "test_pose_box": tp["psnr_crop"],
                   "test_pose_refit_box": tpr["psnr_crop"] if tpr else None, "fit_s": a.provenance["seconds"],
                   "gaussians": a.num_gaussians}
            rows.append(rec)
            fit_name = "refinement" if mode == "off" else "refinement + body correction"
            refit = "n/a" if tpr is None else f"{tpr['psnr_crop']:.2f}"
            print(f"| {name} | {err0:.2f} | {fit_name} | {err1:.2f} | {tv['psnr_crop']:.2f} | {tp['psnr_crop']:.2f} | "
                  f"{refit} | {a.provenance['seconds']:.0f} |", flush=True)
            if fps is None and args.device != "cpu":
                fps = render_fps(a, args.device); print(f"fitted avatar, 1 frame per call at 512 x 512: {fps:.0f} frames/s "
                                                        f"({a.num_gaussians} Gaussians)", flush=True)
            if args.json: Path(args.json).write_text(json.dumps({"rows": rows, "fps_512": fps, "args": vars(args)}, indent=1))
    return rows


if __name__ == "__main__":
    main()
