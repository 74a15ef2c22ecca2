"""The training loop as `avatar_nb train` runs it: time in the step and time waiting for the next batch.

A callback synchronises the GPU at the start and end of every training batch and records the step (forward,
losses, backward, optimiser, logging) and the wait between two batches (the loader, the copy to the device,
Lightning's own work). Medians after the first --skip steps (compilation, caches filling). Prints a table.

    python benchmarks/bench_train_loop.py --config configs/nlfgs_base.yaml body.model=anny ... trainer.max_steps=300
    python benchmarks/bench_train_loop.py --config ... trainer.compile=reduce-overhead trainer.max_steps=400
"""
import argparse
import statistics
import time

import lightning as L
import torch

from avatar_nb.train import load_run_config, train


class StepClock(L.Callback):
    "Step and wait times of every training batch after the first `skip` steps, seconds."

    def __init__(self, skip: int):
        self.skip, self.step, self.wait, self.prev = skip, [], [], None

    def _now(self):
        if torch.cuda.is_available(): torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.t0 = self._now()
        if self.prev is not None and trainer.global_step > self.skip: self.wait.append(self.t0 - self.prev)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.prev = self._now()
        if trainer.global_step > self.skip: self.step.append(self.prev - self.t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="YAML config (default: the embedded default)")
    p.add_argument("--skip", type=int, default=30, help="steps left out of the medians")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    a = p.parse_args()
    cfg = load_run_config(a.config, a.overrides)
    clock = StepClock(a.skip)
    r = train(cfg, callbacks=[clock], enable_progress_bar=False, enable_model_summary=False)
    if not clock.step or not clock.wait:
        raise SystemExit(f"only {r['steps']} steps ran: raise trainer.max_steps above --skip {a.skip}")
    step, wait = statistics.median(clock.step) * 1000, statistics.median(clock.wait) * 1000
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\n{dev}; trainer.compile={cfg.trainer.compile}; batch {cfg.trainer.batch_size} at {cfg.data.size} px; "
          f"{cfg.trainer.num_workers} loader workers; medians of {len(clock.step)} steps\n")
    print("| step (ms) | waiting for data (ms) | steps/s |\n| ---: | ---: | ---: |")
    print(f"| {step:.1f} | {wait:.1f} | {1000 / (step + wait):.1f} |")


if __name__ == "__main__":
    main()
