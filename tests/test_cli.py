"The main job end to end, as a user runs it."
import json
import shutil

from conftest import ROOT, run_py
from avatar_nb.config import load_config
from avatar_nb.template import load_template, topology_fingerprint


def test_demo_embedded_default(tmp_path, anny_body):
    out = tmp_path / "demo"
    r = run_py("-m", "avatar_nb", "demo", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "109,680" in r.stdout  # the summary table names the Gaussian count
    s = json.loads((out / "summary.json").read_text())
    assert s["body"]["model"] == "anny"
    assert s["template"]["num_gaussians"] == 4 * anny_body.num_faces == 109_680
    assert sorted(p.name for p in out.iterdir()) == ["avatar.ply", "config.yaml", "summary.json", "template.npz", "template.png"]
    t = load_template(out / "template.npz", expect_fingerprint=topology_fingerprint(anny_body.faces, anny_body.num_vertices))
    assert t.k == 4 and t.sh_degree == 3
    assert (out / "template.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_config(out / "config.yaml").template.path == str(out / "template.npz")


def test_console_script_and_config_file(tmp_path):
    exe = shutil.which("avatar_nb")
    assert exe, "the avatar_nb console script is not installed"
    import subprocess
    r = subprocess.run([exe, "demo", "--out", str(tmp_path), "--config", str(ROOT / "configs" / "demo.yaml"),
                        "template.mode=test", "template.k=3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["template"]["num_gaussians"] == 24


def test_bad_input_exits_2_with_the_key(tmp_path):
    cases = [(["template.k=0"], "template.k"), (["template.sh_degree=5"], "template.sh_degree"),
             (["template.mode=fancy"], "template.mode"), (["template.kk=1"], "template.kk"),
             (["body.model=smplx", "body.model_path=/nowhere"], "/nowhere/SMPLX_NEUTRAL.npz")]
    for overrides, needle in cases:
        out = tmp_path / overrides[0].replace("=", "_")
        r = run_py("-m", "avatar_nb", "demo", "--out", str(out), *overrides)
        assert r.returncode == 2, (overrides, r.stdout, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (out / "summary.json").exists()
    r = run_py("-m", "avatar_nb", "demo", "--config", str(tmp_path / "none.yaml"))
    assert r.returncode == 2 and "none.yaml" in r.stderr
