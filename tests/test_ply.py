"Splat PLY files: exact round trips, no partial files, refused bad files, and SuperSplat's own reader on our output."
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import plyfile
import pytest
import torch

from avatar_nb.ply import Splats, load_ply, ply_property_names, save_ply, save_ply_sequence

ROOT = Path(__file__).resolve().parents[1]
FLIP = torch.tensor([1.0, -1.0, -1.0])


def rand_splats(n, degree=3, seed=0, height=None):
    "Random Gaussians; with `height`, an upright body-sized cloud (y from 0 to height, metres)."
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g)
    if height is not None:
        means = torch.rand(n, 3, generator=g) * torch.tensor([0.5, height, 0.3]) - torch.tensor([0.25, 0.0, 0.15])
    return Splats(means=means, quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
                  scales=torch.rand(n, 3, generator=g) * 0.05 + 1e-3,
                  opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
                  sh=torch.randn(n, (degree + 1) ** 2, 3, generator=g) * 0.3)


def raw_vertices(path):
    "The vertex table of a PLY as stored: {name: float32 array}."
    v = plyfile.PlyData.read(str(path))["vertex"].data
    return {n: np.asarray(v[n]) for n in v.dtype.names}


def expected_columns(s: Splats, frame: str) -> dict:
    "What the file's columns must hold for `s` written in `frame` (float64, before float32 rounding)."
    sign = torch.tensor([1, -1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=torch.float64)
    means, sh, q = s.means.double(), s.sh.double(), s.quats.double()
    if frame == "y_up":
        means, sh = means * FLIP.double(), sh * sign[:sh.shape[1], None]
        w, x, y, z = q.unbind(-1)
        q = torch.stack([-x, w, -z, y], -1)  # (0, 1, 0, 0) * q
    q = q / q.norm(dim=-1, keepdim=True)
    out = {"x": means[:, 0], "y": means[:, 1], "z": means[:, 2],
           "opacity": torch.logit(s.opacities.double())}
    for i in range(3):
        out[f"f_dc_{i}"] = sh[:, 0, i]
        out[f"scale_{i}"] = s.scales[:, i].double().log()
        out[f"n{'xyz'[i]}"] = torch.zeros(s.num_gaussians, dtype=torch.float64)
    for i in range(4): out[f"rot_{i}"] = q[:, i]
    if sh.shape[1] > 1:
        rest = torch.zeros(s.num_gaussians, 15, 3, dtype=torch.float64)
        rest[:, :sh.shape[1] - 1] = sh[:, 1:]
        for i, v in enumerate(rest.transpose(1, 2).reshape(s.num_gaussians, 45).unbind(-1)): out[f"f_rest_{i}"] = v
    return {k: v.numpy() for k, v in out.items()}


def assert_columns(got: dict, want: dict):
    assert list(got) == list(ply_property_names(0 if len(got) == 17 else 3))
    assert set(got) == set(want)
    for n in got:
        np.testing.assert_allclose(np.asarray(got[n], np.float64), want[n], rtol=1e-6, atol=1e-6, err_msg=n)


# ---------------------------------------------------------------- file round trips

@pytest.mark.parametrize("degree", [0, 3])
@pytest.mark.parametrize("frame", ["y_up", "y_down"])
def test_round_trip(tmp_path, degree, frame):
    s = rand_splats(200, degree, seed=degree)
    p = save_ply(tmp_path / "s.ply", s, frame=frame)
    assert_columns(raw_vertices(p), expected_columns(s, frame))
    floats = 17 + (45 if degree else 0)
    header = p.read_bytes().split(b"end_header\n")[0] + b"end_header\n"
    assert p.stat().st_size == len(header) + 200 * 4 * floats
    b = load_ply(p, frame=frame)
    assert b.sh_degree == degree
    assert torch.equal(b.means, s.means)
    assert torch.equal(b.sh, s.sh)
    torch.testing.assert_close(b.quats, s.quats, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.scales, s.scales, rtol=1e-6, atol=0)
    torch.testing.assert_close(b.opacities, s.opacities, rtol=1e-6, atol=1e-7)
    other = load_ply(p, frame="y_down" if frame == "y_up" else "y_up")
    assert torch.equal(other.means, s.means * FLIP)


def test_degree_one_and_two_pad_to_three(tmp_path):
    for deg in (1, 2):
        for frame in ("y_up", "y_down"):
            s = rand_splats(30, deg)
            b = load_ply(save_ply(tmp_path / f"{deg}{frame}.ply", s, frame=frame), frame=frame)
            assert b.sh_degree == 3
            assert torch.equal(b.means, s.means)
            assert torch.equal(b.sh[:, :s.sh.shape[1]], s.sh) and not b.sh[:, s.sh.shape[1]:].any()


def test_saturated_opacities_stay_finite(tmp_path):
    s = rand_splats(4)
    s.opacities = torch.tensor([0.0, 1.0, 0.5, 1.0])
    raw = raw_vertices(save_ply(tmp_path / "o.ply", s))
    assert np.isfinite(raw["opacity"]).all() and raw["opacity"][1] > 15 and raw["opacity"][0] < -80
    torch.testing.assert_close(load_ply(tmp_path / "o.ply").opacities, s.opacities)


# ---------------------------------------------------------------- atomic writes

def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.ply"
    save_ply(target, rand_splats(10, seed=1))
    before = target.read_bytes()
    calls = []

    def half_then_fail(self, stream, text, byte_order):
        calls.append(stream.tell())  # the header is already written
        stream.write(self.data.tobytes()[: self.data.nbytes // 2])
        raise OSError("disk full")

    monkeypatch.setattr(plyfile.PlyElement, "_write", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_ply(target, rand_splats(50, seed=2))
    with pytest.raises(OSError, match="disk full"):
        save_ply(tmp_path / "new.ply", rand_splats(50, seed=2))
    assert len(calls) == 2 and all(c > 0 for c in calls)  # the failure really was midway
    assert sorted(os.listdir(tmp_path)) == ["a.ply"]
    assert target.read_bytes() == before
    monkeypatch.undo()
    save_ply(target, rand_splats(50, seed=2))
    assert load_ply(target).num_gaussians == 50


# ---------------------------------------------------------------- bad data and bad files

def test_non_finite_gaussians_are_dropped_with_one_warning(tmp_path):
    s = rand_splats(100)
    bad = [3, 40, 41, 99]
    s.means[3, 1] = float("nan"); s.quats[40, 2] = float("inf"); s.scales[41, 0] = float("nan")
    s.sh[99, 12, 2] = -float("inf"); s.opacities[40] = float("nan")  # two bad values in one Gaussian
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = save_ply(tmp_path / "n.ply", s)
    assert len(caught) == 1
    assert "dropped 4 of 100 Gaussians" in str(caught[0].message)
    keep = torch.tensor([i not in bad for i in range(100)])
    b = load_ply(p)
    assert b.num_gaussians == 96
    assert torch.equal(b.means, s.means[keep]) and torch.equal(b.sh, s.sh[keep])
    s.scales[:] = float("nan")
    with pytest.raises(ValueError, match="all 100 Gaussians .*nothing to write"):
        save_ply(tmp_path / "all.ply", s)
    assert sorted(os.listdir(tmp_path)) == ["n.ply"]


def test_truncated_and_foreign_files_are_refused(tmp_path):
    full = save_ply(tmp_path / "a.ply", rand_splats(20)).read_bytes()
    body_start = full.index(b"end_header\n") + len(b"end_header\n")
    for cut, msg in ((len(full) - 1, "truncated"), (body_start + 300, "truncated"), (body_start, "truncated"),
                     (body_start - 40, "not a readable PLY")):
        (tmp_path / "cut.ply").write_bytes(full[:cut])
        with pytest.raises(ValueError, match=msg) as e:
            load_ply(tmp_path / "cut.ply")
        assert "cut.ply" in str(e.value)
    with pytest.raises(FileNotFoundError, match="nowhere.ply"):
        load_ply(tmp_path / "nowhere.ply")
    (tmp_path / "text.ply").write_text("hello")
    with pytest.raises(ValueError, match="text.ply: not a readable PLY"):
        load_ply(tmp_path / "text.ply")
    xyz = np.zeros(3, dtype=[(n, "<f4") for n in ("x", "y", "z", "opacity")])
    plyfile.PlyData([plyfile.PlyElement.describe(xyz, "vertex")]).write(str(tmp_path / "points.ply"))
    with pytest.raises(ValueError, match="missing vertex properties 'f_dc_0', 'f_dc_1'"):
        load_ply(tmp_path / "points.ply")
    v = np.zeros(2, dtype=[(n, "<f4") for n in ply_property_names(0) if n != "rot_3"])
    plyfile.PlyData([plyfile.PlyElement.describe(v, "vertex")]).write(str(tmp_path / "norot.ply"))
    with pytest.raises(ValueError, match="missing vertex property 'rot_3'"):
        load_ply(tmp_path / "norot.ply")
    v = np.zeros(2, dtype=[(n, "<f4") for n in ply_property_names(0)])
    faces = np.array([([0, 1, 1],)], dtype=[("vertex_indices", "O")])
    plyfile.PlyData([plyfile.PlyElement.describe(v, "vertex"),
                     plyfile.PlyElement.describe(faces, "face")]).write(str(tmp_path / "mesh.ply"))
    with pytest.raises(ValueError, match=r"element 'face' has list properties \['vertex_indices'\]"):
        load_ply(tmp_path / "mesh.ply")
    bad = plyfile.PlyData.read(str(tmp_path / "a.ply"))
    bad["vertex"].data["scale_1"][[3, 7]] = [np.nan, np.inf]
    bad.write(str(tmp_path / "nan.ply"))
    with pytest.raises(ValueError, match=r"nan.ply: vertex property 'scale_1' holds 2 non-finite value\(s\)") as e:
        load_ply(tmp_path / "nan.ply")
    assert "first at vertex 3, 7" in str(e.value)


# ---------------------------------------------------------------- sequences

def test_sequence_naming(tmp_path):
    frames = [rand_splats(6, 1, seed=i) for i in range(12)]
    paths = save_ply_sequence(tmp_path / "seq", iter(frames))
    assert [p.name for p in paths] == [f"frame{i:04d}.ply" for i in range(1, 13)]
    assert sorted(os.listdir(tmp_path / "seq")) == [p.name for p in paths]
    for p, f in zip(paths, frames):
        assert torch.equal(load_ply(p).means, f.means)
    later = save_ply_sequence(tmp_path / "later", frames[:2], frame="y_down", start=99)
    assert [p.name for p in later] == ["frame0099.ply", "frame0100.ply"]
    assert torch.equal(load_ply(later[1], frame="y_down").means, frames[1].means)
    with pytest.warns(UserWarning, match="10 other numbered frame files"):
        save_ply_sequence(tmp_path / "seq", frames[:2])


# ---------------------------------------------------------------- SuperSplat's reader

def splat_transform_cli() -> Path:
    "The @playcanvas/splat-transform CLI (SuperSplat's reader), or skip the test."
    exe = Path(os.environ.get("SPLAT_TRANSFORM", ".ci/node/node_modules/.bin/splat-transform"))
    exe = exe if exe.is_absolute() else ROOT / exe
    if shutil.which("node") is None:
        pytest.skip("node is not installed; SuperSplat's reader (@playcanvas/splat-transform) needs it")
    if not exe.exists():
        pytest.skip(f"splat-transform not found at {exe}; install it with "
                    f"`npm install --prefix .ci/node @playcanvas/splat-transform@2.7.1` or set SPLAT_TRANSFORM")
    return exe


def run_splat_transform(*args, cwd):
    r = subprocess.run([str(splat_transform_cli()), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"splat-transform {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.parametrize("degree", [0, 3])
@pytest.mark.parametrize("frame", ["y_up", "y_down"])
def test_supersplat_reader_decodes_our_values(tmp_path, degree, frame):
    s = rand_splats(300, degree, seed=10 + degree)
    p = save_ply(tmp_path / "s.ply", s, frame=frame)
    run_splat_transform("-q", "-w", p, tmp_path / "s.csv", cwd=tmp_path)
    lines = (tmp_path / "s.csv").read_text().splitlines()
    names = lines[0].split(",")
    table = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
    assert table.shape == (300, len(names))
    got = dict(zip(names, table.T))
    assert_columns(got, expected_columns(s, frame))  # the reader sees our Gaussians, in the order we wrote them
    raw = raw_vertices(p)
    for n in names:  # and decodes the stored float32 exactly
        assert np.array_equal(got[n].astype(np.float32), raw[n]), n


def parse_summary(text: str):
    "Row count and {column: {stat: value}} from splat-transform's --summary markdown."
    count = int(next(l for l in text.splitlines() if "Row Count" in l).split("**")[-1])
    rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in text.splitlines() if l.startswith("|")]
    head = rows[0]
    stats = {r[0]: {h: float(v) for h, v in zip(head[1:-1], r[1:-1])} for r in rows[2:]}
    return count, stats


def test_supersplat_reader_accepts_an_upright_avatar(tmp_path):
    s = rand_splats(1000, 3, seed=5, height=1.7)  # a person-sized cloud, y up from the feet
    p = save_ply(tmp_path / "avatar.ply", s)  # frame="y_up"
    r = run_splat_transform(p, "--summary", "null", cwd=tmp_path)
    count, stats = parse_summary(r.stdout)
    assert count == 1000
    assert "3 SH bands" in r.stderr + r.stdout  # progress line, e.g. "1K gaussians · 3 SH bands"
    want = s.means * FLIP  # turned for a y-down viewer: the head (y = 1.7 up) ends at y = -1.7
    for i, c in enumerate("xyz"):
        assert stats[c]["min"] == pytest.approx(float(want[:, i].min()), abs=2e-6), c
        assert stats[c]["max"] == pytest.approx(float(want[:, i].max()), abs=2e-6), c
        assert stats[c]["nans"] == 0 and stats[c]["infs"] == 0
    assert stats["y"]["max"] <= 0 and stats["y"]["min"] < -1.6
    # the reader reports opacity and scale activated: they must be ours again
    assert stats["opacity"]["min"] == pytest.approx(float(s.opacities.min()), abs=2e-6)
    assert stats["scale_0"]["max"] == pytest.approx(float(s.scales[:, 0].max()), abs=2e-6)
