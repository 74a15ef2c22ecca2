"""Loader throughput: AvatarDataset items (1 source + 1 target crop, augmentations on) per second through a
torch DataLoader, printed as a Markdown table.

    python benchmarks/bench_loader.py                      # 512 x 512 inputs, 256 x 256 crops, 0 and 2 workers,
                                                           # without and with DataConfig.cache_dir
    python benchmarks/bench_loader.py --input 1080 --workers 2
    python benchmarks/bench_loader.py --synth              # inputs from avatar_nb.synth (Anny renders) instead

The default input is the tiny SMPL-layout dataset of `avatar_nb.data.write_tiny_dataset`, its images re-saved
with a photographic grain so that PNG decoding costs what it costs on real photographs (flat synthetic
renders compress, and so decode, several times faster).
"""
import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from avatar_nb.body import write_tiny_model_file
from avatar_nb.data import load_dataset_index, write_tiny_dataset
from avatar_nb.pairs import AvatarDataset, DataConfig, collate


def make_input(root: Path, size: int, synth: bool) -> Path:
    if synth:
        from avatar_nb.synth import SynthConfig, generate_dataset
        generate_dataset(root / "data", SynthConfig(identities=1, poses=6, views=4, size=size, test_poses=0,
                                                    test_views=0, val_fraction=0.0))
        return root / "data"
    model = write_tiny_model_file(root / "SMPL_NEUTRAL.pkl", "smpl")
    cams = tuple((f"cam{i}", 30.0 + 90 * i) for i in range(4))
    data = write_tiny_dataset(root / "data", model, width=size, height=size, n_frames=9, cameras=cams,
                              fov_degrees=40)
    rng = np.random.default_rng(0)
    for p in sorted((data / "images").rglob("*.png")):  # grain: realistic PNG sizes and decode times
        a = np.asarray(Image.open(p)).astype(np.int16)
        a = np.clip(a + rng.integers(-12, 13, a.shape), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(p)
    return data


def throughput(ds, workers: int, batch: int, samples: int) -> float:
    "Items per second over `samples` items drawn in one pass (no epoch boundary drains the prefetch)."
    sampler = torch.utils.data.RandomSampler(ds, num_samples=samples + batch, generator=torch.Generator().manual_seed(0))
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate)
    it, n = iter(dl), 0
    next(it)  # worker start-up and the first batch are not timed
    t0 = time.perf_counter()
    for b in it: n += b.target.image.shape[0]
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=int, nargs="+", default=[512], help="input image side(s), pixels")
    ap.add_argument("--size", type=int, default=256, help="crop side, pixels")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--samples", type=int, default=1500)
    ap.add_argument("--cache", nargs="+", default=["off", "on"], choices=["off", "on"],
                    help="DataConfig.cache_dir unset / set (decoded pixels kept as .npy, memory-mapped)")
    ap.add_argument("--synth", action="store_true", help="inputs from avatar_nb.synth.generate_dataset")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for size in a.input:
        with tempfile.TemporaryDirectory() as d:
            root = make_input(Path(d), size, a.synth)
            idx = load_dataset_index(root)
            mb = sum(p.stat().st_size for p in (root / "images").rglob("*.png")) / len(idx.files) / 2 ** 20
            for cache in a.cache:
                cfg = DataConfig(size=a.size, num_sources=1, seed=0, cache_dir=str(Path(d) / "cache") if cache == "on" else None)
                ds = AvatarDataset(idx, "train", cfg)
                for w in a.workers:
                    rows.append((size, f"{mb:.2f}", len(ds), cache, w, throughput(ds, w, a.batch, a.samples)))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}; "
          f"crop {a.size} x {a.size}, 1 source + 1 target per item, batch {a.batch}, "
          f"input: {'synth (Anny renders)' if a.synth else 'tiny SMPL-layout dataset + grain'}\n")
    print("| input (px) | MB per PNG | items in split | decoded cache | workers | items/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows: print(f"| {r[0]} x {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.0f} |")


if __name__ == "__main__":
    main()
