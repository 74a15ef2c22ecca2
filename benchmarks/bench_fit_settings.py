"""The fit's settings compared on one person: each row a fit from the same start, scored alone on held-out views and poses.

    python benchmarks/bench_fit_settings.py --data outputs/demo/data --checkpoint outputs/demo/checkpoints/best.ckpt \
        --steps 150 --size 128 "lr=0 lr_sh=0 body=off" "body=off" "body=off sh_rest_reg=10 residual_reg=0 lr=0.003"

A row's settings are `FitConfig` keys over the defaults; "lr=0 lr_sh=0 body=off" scores the start itself (the fused
decode of `--checkpoint`, or without it a k = --k template coloured from the images). Box = PSNR on the person's box.
"""
import argparse, time

from avatar_nb.config import load_config
from avatar_nb.data import load_dataset_index
from avatar_nb.fit import FitConfig, fit_avatar, fused_start
from avatar_nb.fit_cli import evaluate_avatar_file


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True); ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--k", type=int, default=1); ap.add_argument("--sh-degree", type=int, default=1)
    ap.add_argument("--steps", type=int, default=150); ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("settings", nargs="+", help="one quoted string of key=value FitConfig overrides per row")
    a = ap.parse_args()
    index = load_dataset_index(a.data)
    base = FitConfig(steps=a.steps, size=a.size, progress=False)
    if a.checkpoint:
        template, start, how = fused_start(a.checkpoint, index, base, a.device)
    else:
        from avatar_nb.body import load_body_model
        from avatar_nb.config import BodyConfig, TemplateConfig
        from avatar_nb.template import build_template
        template, start = build_template(TemplateConfig(k=a.k, sh_degree=a.sh_degree, mode="generate"),
                                         load_body_model(BodyConfig(model=index.body_model))), None
        how = f"template k={a.k}"
    print(f"{index}; start: {how}; {a.steps} steps of {base.batch} crops of {a.size} px on {a.device}\n")
    print("| settings | body correction | test_view box | test_pose box | test_view full | fit s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for s in a.settings:
        cfg = load_config(None, s.split(), schema=base)
        t0 = time.perf_counter()
        av = fit_avatar(index, template, cfg, start=start, device=a.device)
        sec = time.perf_counter() - t0
        r = evaluate_avatar_file(av, index, device=a.device)
        tv, tp = r.get("test_view (corrected bodies)"), r.get("test_pose (stored bodies)")
        f = lambda x, k: f"{x[k]:.2f}" if x else "n/a"
        print(f"| {s} | {av.provenance['body_correction'] or 'none'} | {f(tv, 'psnr_crop')} | {f(tp, 'psnr_crop')} | "
              f"{f(tv, 'psnr')} | {sec:.0f} |", flush=True)


if __name__ == "__main__":
    main()
