"""The main job, measured: `avatar_nb demo` (or `avatar_nb train` + eval with a config) from a fresh folder.

Runs the command in a subprocess, times it end to end, and prints a table of the stages, the steps and the
held-out PSNR per split (full image and the person's box) next to the targets.

    python benchmarks/bench_demo.py --out /tmp/bench_demo                 # the embedded default (CPU)
    python benchmarks/bench_demo.py --out /tmp/gpu --config configs/nlfgs_base.yaml body.model=anny ...
"""
import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="run folder (deleted first: a fresh run)")
    p.add_argument("--config", default=None, help="YAML config (default: the embedded default)")
    p.add_argument("--keep-data", action="store_true", help="keep <out>/data and <out>/cache from an earlier run")
    p.add_argument("--minutes", type=float, default=15.0, help="time target, minutes")
    p.add_argument("--box-psnr", type=float, default=24.0, help="held-out views' box PSNR target, dB (the fitted avatar where the demo fits)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    a = p.parse_args()
    out = Path(a.out)
    if out.exists():
        for child in out.iterdir():
            if a.keep_data and child.name in ("data", "cache"): continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    cmd = [sys.executable, "-m", "avatar_nb", "demo", "--out", str(out)] + (["--config", a.config] if a.config else [])
    t0 = time.perf_counter()
    r = subprocess.run(cmd + a.overrides, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        first = [l for l in r.stderr.splitlines() if "Error" in l or "Assertion" in l][:8]
        print(r.stdout[-3000:], *first, r.stderr[-5000:], sep="\n")
        sys.exit(f"demo failed with exit status {r.returncode}")
    s = json.loads((out / "summary.json").read_text())
    import torch
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"`{' '.join(['avatar_nb', 'demo', '--out', str(out)] + (['--config', a.config] if a.config else []) + a.overrides)}` on {dev}\n")
    print("| stage | seconds |\n| --- | ---: |")
    for k, v in s["seconds"].items(): print(f"| {k} | {v:.1f} |")
    print(f"| wall (process, imports included) | {wall:.1f} |\n")
    t = s["template"]
    print(f"{t['body_model']} k={t['k']}: {t['num_gaussians']:,} Gaussians; {s['steps']} steps ({s['bad_steps']} skipped); "
          f"checkpoint {Path(s['checkpoint']).name}\n")
    print("| split | images | PSNR full (dB) | PSNR box (dB) | SSIM full | SSIM box |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for k, m in s["metrics"].items():
        print(f"| {k} | {m['count']} | {m['psnr_full']:.2f} | {m['psnr_crop']:.2f} | {m['ssim_full']:.4f} | {m['ssim_crop']:.4f} |")
    if "avatar" in s:  # the fitted avatar, scored alone
        print("\nThe fitted avatar alone (avatar.npz):\n\n| split (bodies) | images | PSNR full (dB) | PSNR box (dB) |\n| --- | ---: | ---: | ---: |")
        for k, m in s["avatar"].items(): print(f"| {k} | {m['images']} | {m['psnr']:.2f} | {m['psnr_crop']:.2f} |")
    view = s["metrics"].get("test_view", {})
    fitted = s.get("avatar", {}).get("test_view (corrected bodies)")
    box = fitted["psnr_crop"] if fitted else view.get("psnr_crop", float("nan"))
    ok_t, ok_b = wall <= a.minutes * 60, box >= a.box_psnr
    print(f"\ntargets: wall <= {a.minutes:g} min: {'met' if ok_t else 'MISSED'} ({wall / 60:.1f} min); held-out views "
          f"(test_view) box PSNR >= {a.box_psnr:g} dB{' (the fitted avatar)' if fitted else ''}: "
          f"{'met' if ok_b else 'MISSED'} ({box:.2f}; the model: full {view.get('psnr_full', float('nan')):.2f}, "
          f"box {view.get('psnr_crop', float('nan')):.2f})")


if __name__ == "__main__":
    main()
