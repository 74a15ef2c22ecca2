"Run folders you can trust: refuse, lock, resume checks, signals and exit codes, clear errors for damaged inputs."
import csv
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, run_py, train_tiny as _train

pytestmark = pytest.mark.filterwarnings("ignore")


def _rows(run):
    return list(csv.DictReader(open(run / "logs" / "metrics.csv")))


def _curve(run):
    return {int(r["step"]): float(r["train/loss"]) for r in _rows(run) if r.get("train/loss")}


def _files(run):
    "Bytes of every file a run wrote (the lock's holder line aside)."
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_second_run_is_refused_and_overwrite_replaces_it(tiny_run):
    "Cases 1 and 2: no silent replacement, no best-v1.ckpt, `best` is this run's."
    from avatar_nb.train import RunFolderError, read_checkpoint
    tmp, ov = tiny_run
    run = tmp / "a"
    first = _train(ov + [f"out={run}", "trainer.max_steps=4", "trainer.val_every=2", "trainer.val_items=1"])
    assert first["best"] == run / "checkpoints" / "best.ckpt"
    before = _files(run)
    with pytest.raises(RunFolderError, match=r"already holds a run.*trainer.resume=last.*trainer.overwrite=true"):
        _train(ov + [f"out={run}", "trainer.max_steps=2"])
    assert _files(run) == before  # nothing replaced, nothing added
    r = run_py("-m", "avatar_nb", "train", *ov, f"out={run}", "trainer.max_steps=2")
    assert r.returncode == 2 and "--overwrite" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert _files(run) == before
    second = _train(ov + [f"out={run}", "trainer.max_steps=6", "trainer.val_every=3", "trainer.val_items=1",
                          "trainer.overwrite=true"])
    ck = run / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["best.ckpt", "last.ckpt"]  # no best-v1.ckpt
    assert second["best"] == ck / "best.ckpt"
    best = read_checkpoint(second["best"])
    assert "max_steps: 6" in best["avatar_nb"]["config"] and best["global_step"] in (3, 6)
    steps = [int(x["step"]) for x in _rows(run) if x.get("train/loss")]
    assert steps == list(range(6))  # one run's rows, each once


def test_one_writer_at_a_time(tiny_run):
    "Case 3: a second process is refused naming the holder; a dead holder's lock is taken over."
    from avatar_nb.train import RunFolderError
    tmp, ov = tiny_run
    run = tmp / "a"
    holder = subprocess.Popen([sys.executable, "-c", f"from avatar_nb.run import RunLock\nimport time\n"
                               f"with RunLock({str(run)!r}):\n    print('LOCKED', flush=True); time.sleep(120)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        with pytest.raises(RunFolderError, match=f"in use by pid {holder.pid}"):
            _train(ov + [f"out={run}", "trainer.max_steps=2"])
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # the refused run wrote nothing
    finally:
        holder.kill(); holder.wait()  # SIGKILL: the lock file stays, naming a dead process
    assert f"pid {holder.pid}" in (run / ".lock").read_text()
    r = _train(ov + [f"out={run}", "trainer.max_steps=2"])
    assert r["steps"] == 2 and f"pid {os.getpid()}" in (run / ".lock").read_text()


def test_log_survives_resume(tiny_run):
    "Case 4: metrics.csv of N + resume + N equals the uninterrupted run's, and a no-op resume keeps it."
    tmp, ov = tiny_run
    _train(ov + [f"out={tmp / 'a'}", "trainer.max_steps=6"])
    _train(ov + [f"out={tmp / 'b'}", "trainer.max_steps=3"])
    _train(ov + [f"out={tmp / 'b'}", "trainer.max_steps=3", "trainer.resume=last"])  # nothing left to train
    assert sorted(_curve(tmp / "b")) == [0, 1, 2]
    _train(ov + [f"out={tmp / 'b'}", "trainer.max_steps=6", "trainer.resume=last"])
    a, b = _curve(tmp / "a"), _curve(tmp / "b")
    assert sorted(b) == list(range(6)) and a == b


def test_resume_with_another_model_is_refused(tiny_run):
    "Case 5: every key that may not change is named, before anything in the folder is touched."
    from avatar_nb.train import RunFolderError
    tmp, ov = tiny_run
    run = tmp / "a"
    _train(ov + [f"out={run}", "trainer.max_steps=2"])
    before = _files(run)
    with pytest.raises(RunFolderError) as e:
        _train(ov + [f"out={run}", "trainer.max_steps=4", "trainer.resume=last", "template.k=3",
                     "model.decoder.hidden=64"])
    msg = str(e.value)
    assert "template.k: checkpoint 2, now 3" in msg and "model.decoder.hidden: checkpoint 32, now 64" in msg
    assert "trainer.max_steps" not in msg.split("(only")[0]  # the run's length may change
    assert _files(run) == before
    r = _train(ov + [f"out={run}", "trainer.max_steps=4", "trainer.resume=last", "trainer.log_every=2"])
    assert r["steps"] == 4


SIGNAL_SCRIPT = """
import os, sys, time
import avatar_nb.train as T
from avatar_nb.cli import main
mode = sys.argv[1]

class Slow(T.AvatarModule):
    def on_fit_start(self):
        super().on_fit_start()
        print("FIT-START", flush=True)
        if mode == "before-first-step": time.sleep(5)
    def step_outputs(self, batch, bg):
        print(f"IN-STEP {self.batches_seen}", flush=True)  # the k-th step: batches_seen already counts it
        time.sleep(0.4)
        return super().step_outputs(batch, bg)

T.AvatarModule = Slow
sys.exit(main(["train", *sys.argv[2:]]))
"""


def _spawn(tmp, args, **kw):
    script = tmp / "signals.py"
    script.write_text(SIGNAL_SCRIPT)
    return subprocess.Popen([sys.executable, str(script), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _wait_for(p, needle):
    for line in p.stdout:
        if needle in line: return line
    raise AssertionError(f"{needle!r} never printed; exit {p.wait()}")


def test_interrupt_at_a_random_point_resumes_exactly(tiny_run):
    "Cases 6 and 7: SIGINT in the middle of a random step (SIGINT inherited as ignored) saves one finished step."
    from avatar_nb.train import read_checkpoint
    tmp, ov = tiny_run
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    k, delay = rng.randrange(1, 5), rng.uniform(0.0, 0.3)
    straight = _train(ov + [f"out={tmp / 'a'}", "trainer.max_steps=6"])
    # started the way a background job of a non-interactive shell is: SIGINT ignored
    p = _spawn(tmp, ["mid-step", *ov, f"out={tmp / 'b'}", "trainer.max_steps=6", "trainer.checkpoint_every=0"],
               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        _wait_for(p, f"IN-STEP {k}")
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=60)[0]
    finally:
        p.kill()
    assert p.returncode == 130, (seed, out[-2000:])
    assert f"at step {k};" in out and "trainer.resume=last" in out, (seed, out[-600:])
    c = read_checkpoint(tmp / "b" / "checkpoints" / "last.ckpt")
    assert c["global_step"] == c["avatar_nb"]["batches_seen"] == k, seed  # the step in flight finished
    resumed = _train(ov + [f"out={tmp / 'b'}", "trainer.max_steps=6", "trainer.resume=last"])
    wa, wb = (read_checkpoint(r["last"])["state_dict"] for r in (straight, resumed))
    for key in wa: assert torch.equal(wa[key], wb[key]), (seed, key)
    assert _curve(tmp / "a") == _curve(tmp / "b"), seed


def test_sigterm_and_early_ctrl_c_exit_non_zero(tiny_run):
    "Case 7: SIGTERM to the process group (loader workers too) exits 143 with the resume hint; Ctrl-C before the first step says there is nothing to resume."
    from avatar_nb.train import read_checkpoint
    tmp, ov = tiny_run
    p = _spawn(tmp, ["mid-step", *ov, f"out={tmp / 'a'}", "trainer.max_steps=1000", "trainer.num_workers=1"],
               start_new_session=True)
    try:
        _wait_for(p, "IN-STEP 2")
        os.killpg(p.pid, signal.SIGTERM)  # as a scheduler does: every process of the job
        out = p.communicate(timeout=60)[0]
    finally:
        p.kill()
    assert p.returncode == 143, out[-2000:]
    assert "interrupted (SIGTERM)" in out and "trainer.resume=last" in out and "Traceback" not in out, out[-2000:]
    assert read_checkpoint(tmp / "a" / "checkpoints" / "last.ckpt")["global_step"] == 2  # the step in flight finished
    p = _spawn(tmp, ["before-first-step", *ov, f"out={tmp / 'b'}", "trainer.max_steps=1000"])
    try:
        _wait_for(p, "FIT-START")
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=60)[0]
    finally:
        p.kill()
    assert p.returncode == 130 and "nothing to resume" in out and "holds it" not in out, out[-2000:]
    assert not (tmp / "b" / "checkpoints" / "last.ckpt").exists()


def test_one_device_setting(tiny_run):
    "Case 8: device and trainer.accelerator cannot disagree; a checkpoint from a CUDA run evaluates on a CPU machine."
    from avatar_nb.config import ConfigError
    tmp, ov = tiny_run
    with pytest.raises(ConfigError, match="device=cuda but trainer.accelerator=cpu"):
        _train(ov + [f"out={tmp / 'x'}", "device=cuda"])
    r = _train(ov + [f"out={tmp / 'a'}", "trainer.max_steps=1"])
    c = torch.load(r["last"], weights_only=False)
    assert "device: cpu" in c["avatar_nb"]["config"]  # the stored config says where it trained
    if torch.cuda.is_available(): return
    c["avatar_nb"]["config"] = c["avatar_nb"]["config"].replace("device: cpu", "device: cuda")
    torch.save(c, tmp / "cuda.ckpt")
    e = run_py("-m", "avatar_nb", "eval", "--checkpoint", str(tmp / "cuda.ckpt"), "--out", str(tmp / "ev"),
               "eval.max_items=1", "eval.fps_frames=1")
    assert e.returncode == 0 and "using cpu" in e.stderr, e.stderr[-2000:]
    assert (tmp / "ev" / "metrics.json").is_file()


def test_damaged_inputs_are_named(tiny_run):
    "Cases 9, 10, 11: an empty checkpoint, NaN bodies, a truncated pixel cache."
    from avatar_nb.data import DatasetError, load_dataset_index
    from avatar_nb.pairs import AvatarDataset, DataConfig
    from avatar_nb.train import CheckpointError, read_checkpoint
    tmp, ov = tiny_run
    empty = tmp / "empty.ckpt"; empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.ckpt is empty"): read_checkpoint(empty)
    for cmd in (["eval", "--checkpoint", str(empty)], ["export", "--checkpoint", str(empty), "--out", str(tmp / "x.ply"),
                                                      "--frame", "000000"]):
        r = run_py("-m", "avatar_nb", *cmd)
        assert r.returncode == 2 and "is empty (0 bytes)" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    (tmp / "r" / "checkpoints").mkdir(parents=True); (tmp / "r" / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"): _train(ov + [f"out={tmp / 'r'}", "trainer.resume=last"])
    # a pixel cache cut short is rebuilt, naming the file
    index = load_dataset_index(tmp / "data")
    ds = AvatarDataset(index, "train", DataConfig(size=32, cache_dir=str(tmp / "cache")))
    entry = index.splits["train"][0]
    good = np.array(ds.pixels(entry))
    (f,) = list((tmp / "cache").glob("*.npy"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.warns(UserWarning, match=f"{f.name} is unreadable.*rebuilding"):
        again = np.array(ds.pixels(entry))
    assert np.array_equal(good, again) and np.array_equal(np.load(f), good)
    # NaN vertices: named with the file and the frame at load, before a run writes anything
    z = dict(np.load(tmp / "data" / "bodies.npz"))
    key = "vertices" if "vertices" in z else next(k for k in z if z[k].dtype.kind == "f")
    z[key] = z[key].copy(); z[key][2].flat[0] = np.nan
    np.savez(tmp / "data" / "bodies.npz", **z)
    with pytest.raises(DatasetError, match=rf"bodies.npz: '{key}' is NaN or infinite in 1 frame\(s\): \['000002'\]"):
        load_dataset_index(tmp / "data")
    with pytest.raises(DatasetError, match="000002"): _train(ov + [f"out={tmp / 'n'}", "trainer.max_steps=2"])
    assert [p.name for p in (tmp / "n").iterdir()] == [".lock"]  # no config.yaml, template.npz, logs/ or tb/


def test_disk_full_names_the_folder_and_keeps_the_last_checkpoint(tiny_run, monkeypatch):
    "Case 12: the second checkpoint write hits a full device (/dev/full); the first stays."
    import avatar_nb.run as R
    from avatar_nb.train import CheckpointError, read_checkpoint
    tmp, ov = tiny_run
    real, calls = R._write_checkpoint_file, []
    def full_after_one(f, ckpt):
        calls.append(1)
        if len(calls) == 1: return real(f, ckpt)
        with open("/dev/full", "wb") as dev: real(dev, ckpt)  # the OS's own "no space left on device"
    monkeypatch.setattr(R, "_write_checkpoint_file", full_after_one)
    ck = tmp / "a" / "checkpoints"
    with pytest.raises(CheckpointError, match=rf"no space left on {ck} while writing last.ckpt; .* previous checkpoint"):
        _train(ov + [f"out={tmp / 'a'}", "trainer.max_steps=6", "trainer.checkpoint_every=2"])
    assert read_checkpoint(ck / "last.ckpt")["global_step"] == 2
    assert not list(ck.glob(".*.part"))


def test_small_faults_are_named(tiny_run, tmp_path):
    "Case 13: a YAML syntax error, a relative dataset.root seen from another folder, leftovers of a kill -9."
    tmp, ov = tiny_run
    bad = tmp_path / "bad.yaml"; bad.write_text("trainer:\n  max_steps: 3\n lr: [0.1\n")
    r = run_py("-m", "avatar_nb", "train", "--config", str(bad))
    assert r.returncode == 2 and f"{bad}, line" in r.stderr and "not valid YAML" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    run = tmp / "a"
    rel = [o for o in ov if not o.startswith("dataset.root")] + ["dataset.root=data"]
    r = run_py("-m", "avatar_nb", "train", *rel, f"out={run}", "trainer.max_steps=1", cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    (run / "checkpoints" / ".last.ckpt.999.part").write_bytes(b"half")  # what a kill -9 mid-write leaves
    (run / ".eval.tmp-1a2b").mkdir(); (run / "cache").mkdir(exist_ok=True)  # a half-written folder, a cache file
    (run / "cache" / ".pixels.npy.part").write_bytes(b"half")
    r = run_py("-m", "avatar_nb", "eval", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), cwd=tmp_path.parent)
    assert r.returncode == 2 and "relative to the working directory" in r.stderr and "--data" in r.stderr, r.stderr
    _train(ov + [f"out={run}", "trainer.max_steps=2", "trainer.resume=last"])
    assert not list((run / "checkpoints").glob(".*.part"))  # cleaned at the next start
    assert not (run / ".eval.tmp-1a2b").exists() and not list((run / "cache").glob(".*.part"))


def test_no_val_split_says_there_will_be_no_best_checkpoint(tiny_run, capsys):
    "Case 13: validation asked for on a dataset without the val split is said at start, not found missing at the end."
    tmp, ov = tiny_run
    run = tmp / "a"
    r = _train(ov + [f"out={run}", "trainer.max_steps=2", "trainer.val_every=1", "dataset.val_split=val"])
    err = capsys.readouterr().err
    assert r["best"] is None and not (run / "checkpoints" / "best.ckpt").exists()
    assert f"{tmp / 'data'} has no entries in split 'val'" in err and "no best.ckpt" in err, err[-2000:]
    assert "trainer.val_every=0" in err
    _train(ov + [f"out={tmp / 'b'}", "trainer.max_steps=2", "trainer.val_every=1", "trainer.val_items=1"])
    assert "no best.ckpt" not in capsys.readouterr().err  # test_pose is there: nothing to say


def test_skipped_entries_are_reported(tiny_run, capsys):
    "Case 13: entries left out by dataset.on_error=skip are counted and named once at the start of training."
    from avatar_nb.data import load_dataset_index
    tmp, ov = tiny_run
    index = load_dataset_index(tmp / "data")
    entry = index.splits["train"][0]
    index.files[entry][0].unlink()
    r = _train(ov + [f"out={tmp / 'a'}", "trainer.max_steps=1", "dataset.on_error=skip"])
    err = capsys.readouterr().err
    assert r["steps"] == 1
    assert err.count("dataset entry skipped (dataset.on_error=skip)") == 1, err[-2000:]
    assert "1 dataset entry skipped" in err and f"missing image {index.files[entry][0]}" in err, err[-2000:]


def test_truncated_png_and_black_mask_are_found_at_start(tiny_run):
    "Case 13: a PNG cut short and an all-black mask are named when the dataset is loaded, not mid-run."
    from PIL import Image
    from avatar_nb.data import DatasetError, load_dataset_index
    tmp, ov = tiny_run
    index = load_dataset_index(tmp / "data")
    (img, _), (_, mask) = index.files[index.splits["train"][0]], index.files[index.splits["train"][1]]
    img.write_bytes(img.read_bytes()[: img.stat().st_size * 2 // 3])
    with pytest.raises(DatasetError, match=rf"cannot read image {img}: truncated or damaged"):
        load_dataset_index(tmp / "data")
    with pytest.raises(DatasetError, match=rf"{img}: truncated"):
        _train(ov + [f"out={tmp / 'a'}", "trainer.max_steps=1"])
    with Image.open(mask) as m: black = Image.new(m.mode, m.size)
    black.save(mask)
    skipped = load_dataset_index(tmp / "data", on_error="skip").skipped
    assert len(skipped) == 2 and any(f"mask {mask} is all black" in s for s in skipped), skipped
