"Training: exact resume, DDP on gloo, bad steps, atomic and corrupt checkpoints, Ctrl-C, out-of-memory advice."
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, run_py, train_tiny as _train

pytestmark = pytest.mark.filterwarnings("ignore")


def _state(path):
    from avatar_nb.train import read_checkpoint
    c = read_checkpoint(path)
    return c["state_dict"], c["optimizer_states"][0], c["avatar_nb"]["batches_seen"], c["global_step"]


def test_resume_is_exact(tiny_run):
    tmp, ov = tiny_run
    straight = _train(ov + [f"out={tmp / 'a'}", "trainer.max_steps=6", "trainer.checkpoint_every=3"])
    half = _train(ov + [f"out={tmp / 'b'}", "trainer.max_steps=3"])
    w3 = _state(half["last"])[0]
    resumed = _train(ov + [f"out={tmp / 'b'}", "trainer.max_steps=6", "trainer.resume=last"])
    assert straight["steps"] == resumed["steps"] == 6
    (wa, oa, ba, sa), (wb, ob, bb, sb) = _state(straight["last"]), _state(resumed["last"])
    assert (ba, sa) == (bb, sb) == (6, 6)
    assert wa.keys() == wb.keys()
    for k in wa: assert torch.equal(wa[k], wb[k]), k
    for k, st in oa["state"].items():
        for n, v in st.items(): assert torch.equal(torch.as_tensor(v), torch.as_tensor(ob["state"][k][n])), (k, n)
    assert any(not torch.equal(w3[k], wa[k]) for k in wa)  # the last three steps changed the weights


def test_bad_steps_are_skipped_and_counted(tiny_run):
    from avatar_nb.train import AvatarModule, TrainingError
    tmp, ov = tiny_run

    class NaNAt(AvatarModule):
        bad = {1, 2}
        def step_outputs(self, batch, bg):
            loss, rgb, target = super().step_outputs(batch, bg)
            if self.batches_seen in self.bad: loss.total = loss.total * float("nan")
            return loss, rgb, target

    r = _train(ov + [f"out={tmp / 'a'}", "trainer.max_steps=4"], module_cls=NaNAt)
    # a skipped step counts as a step (max_steps, the schedule), as with loss scaling
    assert (r["steps"], r["bad_steps"], r["batches_seen"]) == (4, 2, 4)
    w, opt = _state(r["last"])[:2]
    assert all(torch.isfinite(v).all() for v in w.values())
    # AdamW counted only the two good updates: the skipped ones changed neither weights nor moments
    assert {float(st["step"]) for st in opt["state"].values()} == {2.0}

    class AlwaysNaN(NaNAt):
        bad = set(range(100))
    # checked every log_every steps (1 here) without waiting on the device in between
    with pytest.raises(TrainingError, match="3 steps in a row had a non-finite loss"):
        _train(ov + [f"out={tmp / 'b'}", "trainer.max_steps=6", "trainer.max_bad_steps=3"], module_cls=AlwaysNaN)
    # with checks further apart, the end of training still checks
    with pytest.raises(TrainingError, match="4 steps in a row had a non-finite loss"):
        _train(ov + [f"out={tmp / 'c'}", "trainer.max_steps=4", "trainer.max_bad_steps=3", "trainer.log_every=10"],
               module_cls=AlwaysNaN)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_training_follows_eager(tiny_run):
    "trainer.compile: the compiled model and losses train like the eager ones (same data, same start)."
    tmp, ov = tiny_run
    logs = {}
    for mode in ("none", "default"):
        r = _train(ov + [f"out={tmp / mode}", "trainer.max_steps=3", f"trainer.compile={mode}"])
        assert r["steps"] == 3 and r["bad_steps"] == 0
        rows = (tmp / mode / "logs" / "metrics.csv").read_text().splitlines()
        col = rows[0].split(",").index("train/loss")
        logs[mode] = [float(x.split(",")[col]) for x in rows[1:] if x.split(",")[col]]
    assert len(logs["none"]) == len(logs["default"]) == 3
    for a, b in zip(logs["none"], logs["default"]):
        assert abs(a - b) <= 1e-3 * abs(a), logs  # fused kernels round differently; nothing else differs


def test_out_of_memory_names_the_knobs(tiny_run):
    from avatar_nb.train import AvatarModule, TrainingError
    tmp, ov = tiny_run

    class OOM(AvatarModule):
        def step_outputs(self, batch, bg): raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    with pytest.raises(TrainingError, match=r"trainer.batch_size=2 and data.size=32"):
        _train(ov + [f"out={tmp / 'a'}", "trainer.max_steps=2"], module_cls=OOM)


def test_corrupt_checkpoints_are_clear_errors(tiny_run):
    from avatar_nb.train import CheckpointError, load_avatar, read_checkpoint
    tmp, ov = tiny_run
    r = _train(ov + [f"out={tmp / 'a'}", "trainer.max_steps=2"])
    model, cfg = load_avatar(r["last"])
    assert cfg.trainer.max_steps == 2 and model.num_gaussians == r["module"].model.num_gaussians
    data = r["last"].read_bytes()
    cut = tmp / "cut.ckpt"; cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"): read_checkpoint(cut)
    short = tmp / "short.ckpt"; short.write_bytes(data[:1000])
    with pytest.raises(CheckpointError, match="short.ckpt.*truncated or corrupt|truncated or corrupt.*short.ckpt"):
        load_avatar(short)
    junk = tmp / "junk.ckpt"; junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="junk.ckpt"): load_avatar(junk)
    foreign = tmp / "foreign.ckpt"; torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an avatar_nb"): read_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"): read_checkpoint(tmp / "nope.ckpt")


KILL_SCRIPT = """
import sys, time
import avatar_nb.run as R
import avatar_nb.train as T
calls = [0]
real = R._write_checkpoint_file
def slow(f, ckpt):
    calls[0] += 1
    if calls[0] == 1: return real(f, ckpt)
    import io; b = io.BytesIO(); real(b, ckpt); data = b.getvalue()
    f.write(data[: len(data) // 2]); f.flush()
    print("HALF-WRITTEN", flush=True)
    time.sleep(120)
R._write_checkpoint_file = slow
cfg = T.load_run_config(overrides=sys.argv[1:])
T.train(cfg, enable_progress_bar=False, enable_model_summary=False)
"""


def test_kill_9_mid_write_keeps_the_previous_checkpoint(tiny_run):
    from avatar_nb.train import read_checkpoint
    tmp, ov = tiny_run
    script = tmp / "kill.py"; script.write_text(KILL_SCRIPT)
    p = subprocess.Popen([sys.executable, str(script), *ov, f"out={tmp / 'a'}", "trainer.max_steps=50",
                          "trainer.checkpoint_every=2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    try:
        for line in p.stdout:
            if "HALF-WRITTEN" in line: break
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    ck = tmp / "a" / "checkpoints"
    parts = list(ck.glob(".last.ckpt.*.part"))
    assert parts and parts[0].stat().st_size > 0  # the interrupted write is there, under another name
    c = read_checkpoint(ck / "last.ckpt")
    assert c["global_step"] == 2


def test_ctrl_c_saves_a_last_checkpoint(tiny_run):
    from avatar_nb.train import read_checkpoint
    tmp, ov = tiny_run
    last = tmp / "a" / "checkpoints" / "last.ckpt"
    p = subprocess.Popen([sys.executable, "-m", "avatar_nb", "train", *ov, f"out={tmp / 'a'}",
                          "trainer.max_steps=100000", "trainer.checkpoint_every=3"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not last.exists() and time.time() - t0 < 180 and p.poll() is None: time.sleep(0.2)
    assert last.exists(), p.communicate()[0][-2000:]
    time.sleep(2)
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=120)[0]
    step = read_checkpoint(last)["global_step"]
    assert step > 3, out[-2000:]  # written at the interrupt, after the first periodic checkpoint
    assert p.returncode != 0 and "interrupted" in out, out[-2000:]


def _curve(run_dir):
    import csv
    rows = list(csv.DictReader(open(run_dir / "logs" / "metrics.csv")))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def test_ddp_on_gloo_matches_one_process(tiny_run):
    "2 processes x batch 1 (gloo) follow the loss curve of 1 process x batch 2: same items, averaged gradients."
    tmp, ov = tiny_run
    # 8 steps: a z-buffer stride picked per process and batch (before it was fixed at the first step) drifted at step 6
    common = [o for o in ov if not o.startswith("trainer.batch_size")] + ["trainer.max_steps=8"]
    r = run_py("-m", "avatar_nb", "train", *common, f"out={tmp / 'ddp'}", "trainer.strategy=ddp",
               "trainer.devices=2", "trainer.batch_size=1", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    one = _train(common + [f"out={tmp / 'one'}", "trainer.batch_size=2"])
    half = _train(common + [f"out={tmp / 'half'}", "trainer.batch_size=1"])  # what one rank alone would do
    (wd, _, bd, sd), (w1, _, b1, s1) = _state(tmp / "ddp" / "checkpoints" / "last.ckpt"), _state(one["last"])
    assert (sd, bd) == (s1, b1) == (8, 8)
    cd, c1, ch = _curve(tmp / "ddp"), _curve(tmp / "one"), _curve(tmp / "half")
    assert sorted(cd) == sorted(c1) and len(cd) == 8
    for k in c1: assert abs(cd[k] - c1[k]) <= 1e-4 * abs(c1[k]), (k, cd[k], c1[k])
    assert max(abs(ch[k] - c1[k]) for k in c1) > 1e-3 * abs(c1[0])  # a single rank's batch gives another curve
    wh = _state(half["last"])[0]
    dd = max(float((wd[k] - w1[k]).abs().max()) for k in w1)
    dh = max(float((wh[k] - w1[k]).abs().max()) for k in w1)
    assert dd < 0.1 * dh, (dd, dh)  # the DDP weights are far closer to the global-batch run than one rank's
