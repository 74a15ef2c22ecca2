"""MediaPipe pose + masks and the Anny fit, against the ground truth of the project's synthetic renders, and their speed.

    python benchmarks/bench_mediapipe.py                       # renders a 512 px synthetic set in a temp folder
    python benchmarks/bench_mediapipe.py --data data/synth512  # or reads one made by `avatar_nb synth`
    python benchmarks/bench_mediapipe.py --speed-only --video-frames 100   # speed, with the body fit on 100 frames

Each ring camera's frames are one image sequence (poses differ, camera fixed); the orbiting monocular camera's frames
are one video. Accuracy: 2D keypoint error (px, the 17 COCO points MediaPipe saw with visibility > 0.5, against the
body's own regressed keypoints), fitted-body mean vertex error in the camera frame (cm; as is, and after a rigid
alignment), mask IoU (MediaPipe's mask > 0.5, and the fitted body's silhouette, against the exact masks).
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from avatar_nb.speed import time_ms
from avatar_nb.bodyfit import BLAZE_INDEX, FLIP, KEYPOINTS, AnnyFitModel, FitConfig, _kabsch, fit_anny
from avatar_nb.data import load_dataset_index
from avatar_nb.preprocess import mesh_silhouette
from avatar_nb.localise import project
from avatar_nb.mp_pose import PoseDetector, read_image


def load(a):
    if a.data: return load_dataset_index(a.data)
    from avatar_nb.synth import SynthConfig, generate_dataset
    root = Path(tempfile.mkdtemp()) / "synth"
    generate_dataset(root, SynthConfig(poses=a.poses, views=a.views, size=a.size, monocular=True, test_poses=1))
    return load_dataset_index(root)


def evaluate(idx, entries, fm, det_video, iterations, smooth=False):
    "Accuracy rows for one camera's frames."
    cams = [idx.cameras[c] for _, c in entries]
    ims = [read_image(idx.files[e][0]) for e in entries]
    with PoseDetector(video=det_video) as det: pfs = [det.detect(im) for im in ims]
    keep = [i for i, p in enumerate(pfs) if p is not None]
    out = {"frames": len(entries), "found": len(keep)}
    if not keep: return out
    pfs, entries, cams = [pfs[i] for i in keep], [entries[i] for i in keep], [cams[i] for i in keep]
    K = torch.tensor(cams[0].K, dtype=torch.float32)
    t = lambda k: torch.tensor(np.stack([getattr(p, k)[BLAZE_INDEX] for p in pfs]))
    fit = fit_anny(fm, t("keypoints"), t("visibility"), t("world"), [p.mask for p in pfs], K,
                   FitConfig(iterations=iterations, video=smooth), progress=False)
    V = fm.vertices(fit.pose, fit.phenotype, fit.transl)
    W = fm.body.model
    from anny.keypoints import KeypointsRegressor
    reg = KeypointsRegressor.coco(W, labels=[k for k, _ in KEYPOINTS[:17]]).regression_weights
    kp_err, v_err, v_al, m_iou, f_iou, prec, rec = [], [], [], [], [], [], []
    for i, (e, c) in enumerate(zip(entries, cams)):
        E = torch.tensor(c.viewmat, dtype=torch.float32)
        gt = torch.tensor(idx.vertices[idx.row(e[0])], dtype=torch.float32) @ E[:3, :3].T + E[:3, 3]
        gt2 = project(reg @ gt, K)
        vis = torch.tensor(pfs[i].visibility[BLAZE_INDEX[:17]]) > 0.5
        kp_err.append(float((torch.tensor(pfs[i].keypoints[BLAZE_INDEX[:17]]) - gt2).norm(dim=-1)[vis].mean()))
        fc = V[i] @ FLIP
        v_err.append(float((fc - gt).norm(dim=-1).mean()) * 100)
        a_, b_ = fc - fc.mean(0), gt - gt.mean(0)
        R = _kabsch(a_[None], b_[None], torch.ones(1, len(a_)))[0]
        v_al.append(float((a_ @ R.T - b_).norm(dim=-1).mean()) * 100)
        from PIL import Image
        with Image.open(idx.files[e][1]) as m: exact = torch.tensor(np.asarray(m.convert("L")) > 127)
        mp = torch.tensor(pfs[i].mask > 0.5)
        m_iou.append(float((mp & exact).sum() / (mp | exact).sum()))
        sil = torch.tensor(mesh_silhouette(fc.double().numpy(), fm.body.faces.numpy(), K.double().numpy(), c.width, c.height))
        f_iou.append(float((sil & exact).sum() / (sil | exact).sum()))
        prec.append(float((sil & exact).sum() / sil.sum().clamp_min(1))); rec.append(float((sil & exact).sum() / exact.sum()))
    med = lambda x: float(np.median(x))
    return out | {"kp_px": med(kp_err), "vert_cm": med(v_err), "vert_aligned_cm": med(v_al), "mask_iou": med(m_iou),
                  "fit_iou": med(f_iou), "fit_prec": med(prec), "fit_rec": med(rec), "residual_px": med(fit.residual_px.numpy()), "fit_s": fit.seconds}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a synthetic dataset made by `avatar_nb synth` (default: render one)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--poses", type=int, default=6)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=80)
    ap.add_argument("--video-frames", type=int, default=0, help="also time the body fit on a sequence this long")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--speed-only", action="store_true", help="skip the accuracy table")
    ap.add_argument("--cameras", nargs="*", help="only these camera groups (cam_00 ... , mono)")
    a = ap.parse_args()
    torch.manual_seed(0)
    idx = load(a)
    fm = AnnyFitModel()
    groups = {}
    for es in idx.splits.values():
        for f, c in es: groups.setdefault("mono" if c.startswith("mono") else c, []).append((f, c))
    print("| camera | frames | found | 2D keypoints px | vertex cm | vertex cm aligned | mask IoU | fitted IoU (precision, recall) | residual px |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in sorted(groups) if not a.speed_only else []:
        if a.cameras and name not in a.cameras: continue
        # the synthetic orbit turns 360 / poses degrees between frames: MediaPipe tracks it as a video, but the fit's
        # smoothness (meant for real frame rates) is off for it
        r = evaluate(idx, sorted(groups[name]), fm, name == "mono", a.iterations)
        if r["found"] == 0: print(f"| {name} | {r['frames']} | 0 | | | | | | |"); continue
        print(f"| {name} | {r['frames']} | {r['found']} | {r['kp_px']:.1f} | {r['vert_cm']:.1f} | {r['vert_aligned_cm']:.1f} "
              f"| {r['mask_iou']:.3f} | {r['fit_iou']:.3f} ({r['fit_prec']:.2f}, {r['fit_rec']:.2f}) | {r['residual_px']:.1f} |", flush=True)
    print("(medians over each camera's frames; images %d px)" % a.size)
    e = sorted(groups["cam_00"])[0]
    im = read_image(idx.files[e][0])
    with PoseDetector() as det:
        med, best = time_ms(lambda: det.detect(im), "cpu", a.reps)
    print(f"\n| step | median ms | best ms |\n| --- | --- | --- |\n| pose + mask, one {im.shape[1]} px frame | {med:.0f} | {best:.0f} |")
    if a.video_frames:
        with PoseDetector() as det: pf = det.detect(im)
        T = a.video_frames
        t = lambda k: torch.tensor(getattr(pf, k)[BLAZE_INDEX]).expand(T, *getattr(pf, k)[BLAZE_INDEX].shape).clone()
        K = torch.tensor(idx.cameras[e[1]].K, dtype=torch.float32)
        fit = fit_anny(fm, t("keypoints"), t("visibility"), t("world"), [pf.mask] * T, K,
                       FitConfig(iterations=a.iterations, video=True), progress=False)
        print(f"| body fit, {T}-frame video, {a.iterations} steps, per frame | {fit.seconds / T * 1000:.0f} | |")
    print(f"\n(torch threads {torch.get_num_threads()}; load average {' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())})")


if __name__ == "__main__":
    main()
