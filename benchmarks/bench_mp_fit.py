"""Your own video, end to end, against exact bodies: a synthetic person filmed by one fixed camera goes through
`avatar_nb preprocess --pose mediapipe` (MediaPipe keypoints and masks, one fitted Anny body; no licensed file) and
`avatar_nb fit`; the same frames with their exact bodies go through `avatar_nb fit` alone. Both avatars are scored
alone on the poses each dataset holds out (the same camera, unseen poses of the same person).

    python benchmarks/bench_mp_fit.py --out /tmp/mp_fit [--poses 20] [--size 256] [--steps 150] [--seed 0]

The frames are the synthetic images composited on grey, written as JPEG files: all MediaPipe sees. The table gives
box PSNR on the held-out poses with the stored bodies, and with only those bodies refitted to their images (the
avatar frozen), and the fitted bodies' mean vertex error against the truth where frames match.
"""
import argparse, json, shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from avatar_nb.avatar import load_avatar_file
from avatar_nb.cli import main as cli
from avatar_nb.data import load_dataset_index


def run(*args):
    rc = cli([str(a) for a in args])
    if rc: raise SystemExit(f"avatar_nb {' '.join(map(str, args))} exited {rc}")


def body_error(avatar_path, index, truth) -> tuple[float, float]:
    "Mean vertex error (cm) of an avatar's fitted bodies against the true ones, each in its camera's frame: as is, aligned."
    from avatar_nb.bodyfit import _kabsch
    a = load_avatar_file(avatar_path)
    cam = lambda ix: np.asarray(next(iter(ix.cameras.values())).viewmat, np.float64)  # one camera in both datasets
    to_cam = lambda E, v: v @ E[:3, :3].T + E[:3, 3]
    names = {Path(f).stem: i for i, f in enumerate(truth.frames)}  # MediaPipe's frame ids are the file names
    raw, aligned = [], []
    for i, f in enumerate(a.frames):
        if str(f) not in names: continue
        p, q = to_cam(cam(index), a.vertices[i].astype(np.float64)), to_cam(cam(truth), truth.vertices[names[str(f)]].astype(np.float64))
        raw.append(np.linalg.norm(p - q, axis=-1).mean() * 100)
        pc, qc = p - p.mean(0), q - q.mean(0)
        R = _kabsch(torch.from_numpy(pc)[None], torch.from_numpy(qc)[None], torch.ones(1, len(p), dtype=torch.float64))[0].numpy()
        aligned.append(np.linalg.norm(pc @ R.T - qc, axis=-1).mean() * 100)
    return (float(np.mean(raw)), float(np.mean(aligned))) if raw else (float("nan"), float("nan"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True); ap.add_argument("--poses", type=int, default=20)
    ap.add_argument("--size", type=int, default=256); ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--fit-size", type=int, default=128); ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refit-steps", type=int, default=60)
    a = ap.parse_args()
    out = Path(a.out)
    if out.exists(): shutil.rmtree(out)
    truth = out / "exact"
    run("synth", "--out", truth, "identities=1", f"poses={a.poses}", "views=1", "test_views=0",
        f"test_poses={max(1, a.poses // 5)}", f"size={a.size}", f"seed={a.seed}", "fov_degrees=40")
    ti = load_dataset_index(truth)
    frames = out / "frames"; frames.mkdir(parents=True)
    for f in ti.frames:  # what a camera would have filmed: the person over a plain grey background
        rgb = np.asarray(Image.open(truth / "images" / "cam_00" / f"{f}.png").convert("RGB"), np.float32)
        m = np.asarray(Image.open(truth / "masks" / "cam_00" / f"{f}.png"), np.float32)[..., None] / 255
        Image.fromarray((rgb * m + 128 * (1 - m)).round().astype(np.uint8)).save(frames / f"{f}.jpg", quality=92)
    mp = out / "mediapipe"
    run("preprocess", "--pose", "mediapipe", "--images", frames, "--out", mp, "fov_degrees=40", "test_every=5")
    fit = ["--k", "1", "--sh-degree", "1", f"steps={a.steps}", f"size={a.fit_size}", "progress=false"]
    rows = []
    for name, data in (("exact bodies", truth), ("MediaPipe + fitted Anny", mp)):
        av = out / f"{data.name}.npz"
        run("fit", "--data", data, "--out", av, *fit)
        run("eval", "--avatar", av, "--data", data, "--refit-steps", a.refit_steps, "--out", out / f"eval_{data.name}")
        m = json.loads((out / f"eval_{data.name}" / "metrics.json").read_text())
        idx = load_dataset_index(data)
        rows.append((name, len(idx.splits.get("train", [])), m.get("test_pose (stored bodies)", {}),
                     m.get("test_pose (bodies refitted, avatar frozen)", {}),
                     load_avatar_file(av).provenance.get("body_correction"), body_error(av, idx, ti)))
    print(f"\nOne person, one fixed camera, {a.poses} poses at {a.size} px; fit: k = 1, {a.steps} steps of "
          f"{a.fit_size} px crops; held-out poses scored alone (box PSNR)\n")
    print("| bodies | training frames | body correction | fitted bodies' error, cm (camera frame; aligned) | "
          "test_pose box, stored bodies | test_pose box, bodies refitted |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    f = lambda d: f"{d['psnr_crop']:.2f} dB ({d['images']})" if d else "n/a"
    for n, t, s, r, bc, (e, ea) in rows: print(f"| {n} | {t} | {bc or 'none'} | {e:.1f}; {ea:.1f} | {f(s)} | {f(r)} |")


if __name__ == "__main__":
    main()
