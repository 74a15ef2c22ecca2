"Template files: exact round trips, refused mismatches, and no partial files on failure."
import os

import numpy as np
import pytest
import torch

from avatar_nb.config import TemplateConfig
from avatar_nb.template import (build_template, load_template, make_template, save_template, tiny_mesh,
                                face_barycentrics, _TENSORS)


def test_round_trip_every_mode(tmp_path, anny_body):
    for cfg, body in ((TemplateConfig(mode="test", k=5, sh_degree=2), None),
                      (TemplateConfig(mode="generate", k=1, sh_degree=0, path=str(tmp_path / "a.npz")), anny_body)):
        t = build_template(cfg, body)
        p = save_template(t, tmp_path / f"{cfg.mode}.npz")
        back = load_template(p, expect_fingerprint=t.fingerprint)
        for n in _TENSORS:
            assert torch.equal(getattr(back, n), getattr(t, n)), n
        assert (back.k, back.sh_degree, back.body_model) == (t.k, t.sh_degree, t.body_model)
    d = build_template(TemplateConfig(mode="default", k=1, sh_degree=0, path=str(tmp_path / "a.npz")), anny_body)
    assert d.num_gaussians == anny_body.num_faces


def test_default_mode_refuses_other_k(tmp_path):
    t = make_template(*tiny_mesh(), k=2, sh_degree=1, body_model="test")
    save_template(t, tmp_path / "t.npz")
    with pytest.raises(ValueError, match="template.k=3"):
        build_template(TemplateConfig(mode="default", k=3, sh_degree=1, path=str(tmp_path / "t.npz")))


def test_failed_save_leaves_nothing_and_keeps_old_file(tmp_path, monkeypatch):
    t = make_template(*tiny_mesh(), k=2, sh_degree=1, body_model="test")
    target = tmp_path / "t.npz"
    save_template(t, target)
    before = target.read_bytes()
    t3 = make_template(*tiny_mesh(), k=3, sh_degree=1, body_model="test")
    def boom(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        save_template(t3, target)
    with pytest.raises(OSError):
        save_template(t3, tmp_path / "new.npz")
    assert sorted(os.listdir(tmp_path)) == ["t.npz"]
    assert target.read_bytes() == before


def test_corrupt_and_foreign_files(tmp_path):
    t = make_template(*tiny_mesh(), k=2, sh_degree=1, body_model="test")
    p = save_template(t, tmp_path / "t.npz")
    (tmp_path / "trunc.npz").write_bytes(p.read_bytes()[:200])
    with pytest.raises(ValueError, match="trunc.npz"):
        load_template(tmp_path / "trunc.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match=r"missing key\(s\)"):
        load_template(tmp_path / "other.npz")
    with pytest.raises(ValueError, match=r"\.npz"):
        save_template(t, tmp_path / "t.pt")


def test_barycentrics_are_deterministic_in_a_fresh_process():
    from conftest import run_py
    r = run_py("-c", "from avatar_nb.template import face_barycentrics as f; import torch; "
               "print(repr(f(7).double().numpy().round(12).tolist()))")
    assert r.returncode == 0, r.stderr
    here = face_barycentrics(7).double().numpy().round(12).tolist()
    assert eval(r.stdout) == here
