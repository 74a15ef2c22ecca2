"The main job end to end, as a user runs it: demo, train, eval, export; bad input exits 2 naming the key."
import json
import shutil
import subprocess

import pytest

from conftest import ROOT, run_py

# the embedded default shrunk to seconds: 3 poses x 3 cameras at 64 x 64, 32 x 32 crops, 6 steps
TINY = ["dataset.synth.poses=3", "dataset.synth.views=3", "dataset.synth.size=64", "data.size=32",
        "trainer.max_steps=6", "trainer.val_every=3", "trainer.val_items=2", "trainer.batch_size=2",
        "trainer.sample_every=3", "dataset.val_split=test_pose", "eval.max_items=2", "eval.fps_frames=2",
        "fit.steps=3", "fit.size=32", "fit.batch=2", "fit.progress=false"]


def test_demo_end_to_end(tmp_path):
    from avatar_nb.ply import load_ply
    from avatar_nb.train import load_run_config, read_checkpoint
    out = tmp_path / "demo"
    r = run_py("-m", "avatar_nb", "demo", "--out", str(out), *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| test_view |" in r.stdout and "27,420 Gaussians" in r.stdout
    assert "step 6/6  loss " in r.stdout and "steps/s  elapsed " in r.stdout  # not a terminal: progress lines
    for noise in ("Tip:", "weights_only", "LeafSpec", "TPU available", "CUDA driver", "Traceback"):
        assert noise not in r.stdout + r.stderr, noise
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 6 and set(s["metrics"]) == {"test_view", "test_pose"}
    for m in s["metrics"].values():
        assert 5 < m["psnr_full"] < 60 and m["lpips_full"] is None  # LPIPS cannot load here: null, never 0
    for f in ("config.yaml", "template.npz", "template.png", "avatar.ply", "summary.md", "eval/metrics.json",
              "eval/metrics.md", "eval/extremes.png", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
              "logs/metrics.csv", "data/splits.json"):
        assert (out / f).is_file(), f
    assert list((out / "samples").glob("step_*.png"))
    splats = load_ply(out / "avatar.ply")
    assert splats.num_gaussians == s["template"]["num_gaussians"]
    cfg = load_run_config(out / "config.yaml")
    assert cfg.trainer.max_steps == 6 and cfg.dataset.root == str(out / "data")
    assert read_checkpoint(s["checkpoint"])["global_step"] <= 6
    # eval and export from the checkpoint alone
    r = run_py("-m", "avatar_nb", "eval", "--checkpoint", s["checkpoint"], "--out", str(tmp_path / "ev"),
               "eval.max_items=1", "eval.splits=[test_pose]")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert list(m["splits"]) == ["test_pose"] and m["splits"]["test_pose"]["count"] == 1
    r = run_py("-m", "avatar_nb", "eval", "--checkpoint", s["checkpoint"], "trainer.lr=1")  # would alter the run
    assert r.returncode == 2 and "trainer.lr" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_py("-m", "avatar_nb", "export", "--checkpoint", s["checkpoint"], "--walk", "3", "--out", str(tmp_path / "walk"))
    assert r.returncode == 0, r.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "walk").iterdir())
    assert files == ["frame0001.ply", "frame0002.ply", "frame0003.ply"]


def test_console_script_and_config_file(tmp_path):
    exe = shutil.which("avatar_nb")
    assert exe, "the avatar_nb console script is not installed"
    r = subprocess.run([exe, "demo", "--out", str(tmp_path), "--config", str(ROOT / "configs" / "demo.yaml"),
                        *TINY, "template.sh_degree=0"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "summary.json").read_text())["template"]["sh_degree"] == 0


def test_shipped_configs():
    from avatar_nb.config import ConfigError
    from avatar_nb.train import load_run_config
    assert load_run_config(ROOT / "configs" / "demo.yaml") == load_run_config()  # demo.yaml is the embedded default
    with pytest.raises(ConfigError, match=r"body.model_path.*dataset.root|dataset.root.*body.model_path"):
        load_run_config(ROOT / "configs" / "nlfgs_base.yaml")
    with pytest.raises(ConfigError, match="model.encoder.nlf_checkpoint"):
        load_run_config(ROOT / "configs" / "nlfgs_base.yaml", [f"body.model_path={ROOT}", f"dataset.root={ROOT}"])
    gpu = load_run_config(ROOT / "configs" / "nlfgs_base.yaml",
                          [f"body.model_path={ROOT}", f"dataset.root={ROOT}", f"model.encoder.nlf_checkpoint={ROOT}/README.md"])
    assert (gpu.trainer.precision, gpu.template.k, gpu.data.size, gpu.model.encoder.kind) == ("bf16-mixed", 4, 512, "nlf")
    assert (gpu.fit.size, gpu.fit.residual_reg, load_run_config().fit.residual_reg) == (512, 100.0, 0.0)  # held near a GPU prior only


def test_bad_input_exits_2_with_the_key(tmp_path):
    cases = [(["template.k=0"], "template.k"), (["template.sh_degree=5"], "template.sh_degree"),
             (["template.mode=fancy"], "template.mode"), (["template.kk=1"], "template.kk"),
             (["trainer.max_stepz=3"], "trainer.max_stepz"), (["trainer.lr=fast"], "trainer.lr"),
             (["loss.lpips=off"], "loss.lpips"),
             (["body.model=smplx", "body.model_path=/nowhere"], "body.model_path: /nowhere does not exist")]
    for overrides, needle in cases:
        out = tmp_path / overrides[0].replace("=", "_")
        r = run_py("-m", "avatar_nb", "demo", "--out", str(out), *overrides)
        assert r.returncode == 2, (overrides, r.stdout, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (out / "summary.json").exists()
    r = run_py("-m", "avatar_nb", "demo", "--config", str(tmp_path / "none.yaml"))
    assert r.returncode == 2 and "none.yaml" in r.stderr
    r = run_py("-m", "avatar_nb", "eval", "--checkpoint", str(tmp_path / "none.ckpt"))
    assert r.returncode == 2 and "none.ckpt" in r.stderr and "Traceback" not in r.stderr


def test_every_subcommand_takes_config_file_and_keys(tmp_path):
    (tmp_path / "synth.yaml").write_text("poses: 2\nviews: 2\nsize: 32\n")
    out = tmp_path / "s"
    r = run_py("-m", "avatar_nb", "synth", "--out", str(out), "--config", str(tmp_path / "synth.yaml"), "seed=5")
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())["config"]
    assert (meta["poses"], meta["views"], meta["size"], meta["seed"]) == (2, 2, 32, 5)
    for args, key in ((["synth", "--out", str(tmp_path / "t"), "sizee=3"], "sizee"),
                      (["synth", "--out", str(tmp_path / "t"), "size=big"], "size"),
                      (["preprocess", "--images", str(tmp_path), "--out", str(tmp_path / "p")], "nlf"),
                      (["bench", "--out", str(tmp_path / "b"), "repz=3"], "repz"),
                      (["train", "--config", str(tmp_path / "synth.yaml")], "poses")):
        r = run_py("-m", "avatar_nb", *args)
        assert r.returncode == 2 and key in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-2000:])
    assert not (tmp_path / "t").exists() and not (tmp_path / "b").exists()
