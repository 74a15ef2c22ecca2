"""Model forward speed: B source images + bodies -> decoded Gaussians placed on B target bodies (no render).

    python benchmarks/bench_forward.py                      # Anny k=4, B=4: CPU at 256x256, CUDA at 512x512 when present
    python benchmarks/bench_forward.py --mesh m.npz         # a mesh saved by bench_localise.py --save-mesh (no anny needed)
    python benchmarks/bench_forward.py --stages             # also time each stage (synchronising between them)
    python benchmarks/bench_forward.py --devices cuda --compile max-autotune-no-cudagraphs
                                                            # adds the fast GPU path (see below)

The fast GPU path: the sampler's z-buffer stride fixed once from a first batch (no host read per call),
the whole forward under bfloat16 autocast, and the model wrapped in `torch.compile(mode=...)`. The first
call compiles (minutes with max-autotune); shapes must then stay fixed.

Rows: the decoder's MLP in float32, and under bfloat16 autocast (DecoderConfig(bf16=True)); everything
else in float32. Median and best of --reps runs after warm-up, under torch.no_grad().

On the CPU, glibc returns every large freed block to the system, so each forward pays page faults for its
few-hundred-MB activations again; `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000` in the
environment keeps that memory in the process, which made the decoder up to 2x faster on a busy machine.
"""
import argparse
import time
from collections import defaultdict

import torch

from avatar_nb.speed import time_ms
from common import load_mesh
from avatar_nb.template import make_template
from avatar_nb.localise import intrinsics, look_at, transform_points
from avatar_nb.decoder import DecoderConfig
from avatar_nb.model import AvatarModel, ModelConfig
from avatar_nb.sampling import pick_zbuffer_stride


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def stage_times(model, fn, device, reps):
    "Mean ms per forward spent in each submodule (localiser: source and target), synchronising around each call."
    acc, t0 = defaultdict(list), {}
    def pre(name):
        def h(mod, args):
            sync(device); t0[name] = time.perf_counter()
        return h
    def post(name):
        def h(mod, args, out):
            sync(device); acc[name].append(time.perf_counter() - t0[name])
        return h
    names = ("image_encoder", "identity_encoder", "localiser", "sampler", "decoder")
    hooks = [getattr(model, n).register_forward_pre_hook(pre(n)) for n in names]
    hooks += [getattr(model, n).register_forward_hook(post(n)) for n in names]
    for _ in range(2): fn()
    acc.clear()
    for _ in range(reps): fn()
    for h in hooks: h.remove()
    return {n: sum(acc[n]) / reps * 1000 for n in names}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mesh", help="npz with vertices [V,3], faces [F,3], name (default: the Anny rest mesh)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--cpu-size", type=int, default=256)
    ap.add_argument("--cuda-size", type=int, default=512)
    ap.add_argument("--reps", type=int, default=0, help="timed runs (default: 5 on CPU, 50 on CUDA)")
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--stages", action="store_true", help="also print a per-stage breakdown")
    ap.add_argument("--compile", default=None, help="on CUDA, also time the fast path with torch.compile(mode=COMPILE)")
    a = ap.parse_args()
    verts, faces, name = load_mesh(a.mesh)
    t = make_template(verts, faces, k=a.k, sh_degree=3, body_model=name)
    B = a.batch
    g = torch.Generator().manual_seed(0)
    c = (verts.amax(0) + verts.amin(0)) / 2
    E = look_at(c + torch.tensor([0.0, 0.0, 3.2]), c)
    src = transform_points(E, verts[None] + 0.01 * torch.randn(B, *verts.shape, generator=g))
    tgt = transform_points(E, verts[None] + 0.01 * torch.randn(B, *verts.shape, generator=g))
    rows, stages = [], []
    for dev in a.devices.split(","):
        if dev == "cuda" and not torch.cuda.is_available(): continue
        d = torch.device(dev)
        S = a.cuda_size if d.type == "cuda" else a.cpu_size
        reps = a.reps or (50 if d.type == "cuda" else 5)
        imgs = torch.rand(B, 3, S, S, generator=g).to(d)
        K = intrinsics(S, S).expand(B, 3, 3).to(d)
        sv, tv = src.to(d), tgt.to(d)
        dev_name = torch.cuda.get_device_name(d) if d.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        for bf16 in (False, True):
            torch.manual_seed(0)
            model = AvatarModel(t, ModelConfig(decoder=DecoderConfig(bf16=bf16))).to(d).eval()
            fn = lambda: model(imgs, sv, K, tv)
            with torch.no_grad():
                med, best = time_ms(fn, d, reps, warmup=10 if d.type == "cuda" else 2)
                if a.stages: stages.append((dev_name, S, bf16, stage_times(model, fn, d, min(reps, 10))))
            rows.append((dev_name, S, "bfloat16" if bf16 else "float32", med, best))
        if a.compile and d.type == "cuda":
            torch.manual_seed(0)
            probe = AvatarModel(t, ModelConfig()).to(d)
            with torch.no_grad():
                zs = pick_zbuffer_stride(probe.localiser(sv, K, check=False).x2d, (S, S), probe.image_encoder.stride)
            torch.manual_seed(0)
            model = AvatarModel(t, ModelConfig(decoder=DecoderConfig(bf16=True), zbuffer_stride=zs)).to(d).eval()
            fast = torch.compile(model, mode=a.compile)
            def fn():
                with torch.autocast("cuda", dtype=torch.bfloat16): return fast(imgs, sv, K, tv, check=False)
            t0 = time.perf_counter()
            with torch.no_grad(): fn(); sync(d)
            print(f"torch.compile({a.compile!r}): first call {time.perf_counter() - t0:.0f} s")
            with torch.no_grad(): med, best = time_ms(fn, d, reps, warmup=10)
            rows.append((dev_name, S, f"bf16 autocast, fixed z-buffer stride {model.sampler.zbuffer_stride}, "
                                      f"torch.compile({a.compile})", med, best))
    print(f"\nAvatarModel.forward ({name} mesh, k={a.k}: {t.num_gaussians:,} Gaussians per person), B={B}, "
          f"{reps} timed runs, no grad, torch {torch.__version__}\n")
    print("| device | image size | decoder MLP | B | ms per forward (median) | ms (best) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows: print(f"| {r[0]} | {r[1]} x {r[1]} | {r[2]} | {B} | {r[3]:.1f} | {r[4]:.1f} |")
    if stages:
        names = list(stages[0][3])
        print("\nPer stage, ms (each call synchronised; localiser = source + target)\n")
        print("| device | image size | decoder MLP | " + " | ".join(names) + " |")
        print("| --- | --- | --- | " + " | ".join("---" for _ in names) + " |")
        for dev_name, S, bf16, st in stages:
            print(f"| {dev_name} | {S} x {S} | {'bfloat16' if bf16 else 'float32'} | "
                  + " | ".join(f"{st[n]:.2f}" for n in names) + " |")


if __name__ == "__main__":
    main()
