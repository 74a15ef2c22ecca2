"""Training on one or several GPUs: steps/s and images/s of one run, and loss curves compared between runs.

Run mode (one training run, any `trainer.devices`; Lightning starts the other processes by re-running this script):
wall time from the start of step --skip to the end of the last step, with one device sync at each end and none
in between, so the numbers are those of the loop as it runs. Rank 0 writes a JSON line to --json.

    python benchmarks/bench_ddp.py --json r.json --config configs/nlfgs_base.yaml <overrides> trainer.devices=2 \
        trainer.strategy=ddp trainer.batch_size=4
    python benchmarks/bench_ddp.py ... --stop-at 150 --keep-at 150     # stop early (schedule of max_steps kept);
                                                                       # keep checkpoints/step150.ckpt
    python benchmarks/bench_ddp.py ... --ddp broadcast_buffers=true    # one of AvatarDDP's choices undone
Compare mode: the train/loss curves of runs (their metrics.csv) against a reference run, step by step.

    python benchmarks/bench_ddp.py --compare runs/one runs/two runs/resumed
    python benchmarks/bench_ddp.py --table r1.json r2.json ...          # the throughput table, scaling vs 1 GPU
"""
import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import lightning as L
import torch

from avatar_nb.train import load_run_config, train


def _now():
    if torch.cuda.is_available(): torch.cuda.synchronize()
    return time.perf_counter()


class Throughput(L.Callback):
    "Wall time of steps [skip, last]; optional early stop, checkpoint copy and profile of steps [a, b)."

    def __init__(self, skip: int, stop_at: int = 0, keep_at: int = 0, profile: tuple = (), profile_out=None):
        self.skip, self.stop_at, self.keep_at, self.profile, self.profile_out = skip, stop_at, keep_at, profile, profile_out
        self.t0 = self.t1 = None
        self.s0 = self.s1 = 0
        self.prof = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        s = trainer.global_step
        if s == self.skip and self.t0 is None: self.t0, self.s0 = _now(), s
        if self.profile and s == self.profile[0] and trainer.is_global_zero:
            act = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                           if torch.cuda.is_available() else [])
            self.prof = torch.profiler.profile(activities=act)
            self.prof.__enter__()
            self.tp = _now()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        s = trainer.global_step  # steps done
        if self.prof is not None and s == self.profile[1]:
            ms = (_now() - self.tp) * 1000 / (self.profile[1] - self.profile[0])
            self.prof.__exit__(None, None, None)
            ka = self.prof.key_averages()
            text = (f"{ms:.2f} ms per profiled step (steps {self.profile[0]}..{self.profile[1]}, rank 0, "
                    f"profiler on)\n\n"
                    + (ka.table(sort_by="self_cuda_time_total", row_limit=30) + "\n\n" if torch.cuda.is_available() else "")
                    + ka.table(sort_by="cpu_time_total", row_limit=30) + "\n")
            Path(self.profile_out).write_text(text)
            self.prof = None
        if self.keep_at and s == self.keep_at and trainer.is_global_zero:  # after LastCheckpoint wrote it
            ck = Path(trainer.default_root_dir) / "checkpoints"
            shutil.copy(ck / "last.ckpt", ck / f"step{s}.ckpt")
        if self.t0 is not None: self.t1, self.s1 = _now(), s
        if self.stop_at and s >= self.stop_at: trainer.should_stop = True


def run(a):
    cfg = load_run_config(a.config, a.overrides)
    t = cfg.trainer
    if a.keep_at and (not t.checkpoint_every or a.keep_at % t.checkpoint_every):
        raise SystemExit(f"--keep-at {a.keep_at} needs trainer.checkpoint_every dividing it (got {t.checkpoint_every})")
    prof = tuple(int(x) for x in a.profile.split(":")) if a.profile else ()
    clock = Throughput(a.skip, a.stop_at, a.keep_at, prof, a.profile_out)
    kw = {}
    if a.ddp:  # AvatarDDP with some of its choices undone, to measure what each one is worth
        from avatar_nb.train import AvatarDDP
        kw["strategy"] = AvatarDDP(sync_every=t.log_every, **{k: v.lower() == "true" if v.lower() in ("true", "false")
                                                               else int(v) for k, v in (x.split("=") for x in a.ddp)})
    r = train(cfg, callbacks=[clock], enable_progress_bar=False, enable_model_summary=False, **kw)
    tr = r["trainer"]
    if not tr.is_global_zero: return
    if clock.t0 is None or clock.s1 <= clock.s0:
        raise SystemExit(f"only {r['steps']} steps ran: run past --skip {a.skip}")
    steps, sec = clock.s1 - clock.s0, clock.t1 - clock.t0
    world = tr.world_size
    res = {"name": a.name or Path(cfg.out).name, "devices": world, "batch": t.batch_size,
           "global_batch": world * t.batch_size, "compile": t.compile, "size": cfg.data.size,
           "workers": t.num_workers, "steps": steps, "seconds": round(sec, 3), "steps_per_s": round(steps / sec, 3),
           "images_per_s": round(steps * world * t.batch_size / sec, 2), "end_step": r["steps"],
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None}
    print("RESULT " + json.dumps(res), flush=True)
    if a.json:
        with open(a.json, "a") as f: f.write(json.dumps(res) + "\n")


def curve(run_dir):
    rows = list(csv.DictReader(open(Path(run_dir) / "logs" / "metrics.csv")))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def compare(dirs):
    ref = curve(dirs[0])
    print(f"train/loss against {dirs[0]} (global batch the same)\n")
    print("| run | steps compared | first | last | max relative difference | at step |\n| --- | --- | ---: | ---: | ---: | ---: |")
    for d in dirs[1:]:
        c = curve(d)
        common = sorted(set(c) & set(ref))
        if not common:
            print(f"| {d} | none | | | | |"); continue
        rel = {k: abs(c[k] - ref[k]) / abs(ref[k]) for k in common}
        k = max(rel, key=rel.get)
        print(f"| {d} | {common[0]}..{common[-1]} ({len(common)}) | {c[common[0]]:.5f} / {ref[common[0]]:.5f} | "
              f"{c[common[-1]]:.5f} / {ref[common[-1]]:.5f} | {rel[k]:.4f} | {k} |")


def table(files):
    rows = [json.loads(l) for f in files for l in open(f) if l.strip()]
    base = {(r["batch"], r["compile"]): r["images_per_s"] for r in rows if r["devices"] == 1}
    print("| run | GPUs | batch per GPU | compile | steps | steps/s | images/s | vs 1 GPU, same batch per GPU | peak GiB |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        b = base.get((r["batch"], r["compile"]))
        ratio = f"{r['images_per_s'] / b:.2f}x" if b and r["devices"] > 1 else ""
        print(f"| {r['name']} | {r['devices']} | {r['batch']} | {r['compile']} | {r['steps']} | {r['steps_per_s']:.1f} | "
              f"{r['images_per_s']:.1f} | {ratio} | {r['peak_gib']} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="YAML config (default: the embedded default)")
    p.add_argument("--skip", type=int, default=30, help="steps before the timed window (compilation, caches)")
    p.add_argument("--stop-at", type=int, default=0, help="stop after this many steps (0: trainer.max_steps)")
    p.add_argument("--keep-at", type=int, default=0, help="copy last.ckpt to checkpoints/stepN.ckpt at this step")
    p.add_argument("--profile", default="", help="A:B: profile steps A..B on rank 0 (torch.profiler)")
    p.add_argument("--profile-out", default="profile.txt", help="where the profile tables go")
    p.add_argument("--ddp", action="append", default=[], help="a DDP argument for AvatarDDP, e.g. broadcast_buffers=true "
                   "(repeat for more)")
    p.add_argument("--json", default=None, help="append the result line to this file")
    p.add_argument("--name", default=None, help="the run's name in tables (default: the out folder's name)")
    p.add_argument("--compare", nargs="+", default=None, help="run folders: the first is the reference")
    p.add_argument("--table", nargs="+", default=None, help="JSON files written by --json")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    a = p.parse_intermixed_args()
    if a.compare: compare(a.compare)
    elif a.table: table(a.table)
    else: run(a)


if __name__ == "__main__":
    main()
