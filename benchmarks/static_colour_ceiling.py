"""How close any avatar with colours fixed to the body can come to a synthetic dataset lit from a fixed direction.

    python benchmarks/static_colour_ceiling.py DATA [--size 256] [--every 2]

The synthetic renderer shades every surface by a light fixed in the world (`synth` keys `light`, `ambient`), so
the same patch of skin is brighter in one pose than in another. Each image of the training and test_view splits
(every `--every`-th) is rendered twice from the stored (exact) bodies: with each frame's own shading, and with
each vertex's shading averaged over the frames, the best a colour that rides the body can do. The PSNR between
the two, on the person's box, is the ceiling that shading alone sets. Needs the `anny` package and Embree.
"""
import argparse, json
from pathlib import Path

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data"); ap.add_argument("--size", type=int, default=256); ap.add_argument("--every", type=int, default=2)
    a = ap.parse_args(argv)
    import trimesh
    from trimesh.triangles import points_to_barycentric
    from avatar_nb.body import AnnyBody
    from avatar_nb.data import load_dataset_index
    from avatar_nb.people import Person, dress
    from avatar_nb.synth import PosedScene, camera_rays
    index = load_dataset_index(a.data)
    meta = json.loads(Path(a.data, "meta.json").read_text())
    if meta.get("generator") != "avatar_nb.synth": raise SystemExit(f"{a.data}: not written by avatar_nb synth")
    cfg = meta["config"]
    light = np.asarray(cfg["light"], float); light /= np.linalg.norm(light)
    ambient = float(cfg["ambient"])
    outfit = dress(AnnyBody(), Person(**meta["people"][0]))
    ents = {s: index.splits.get(s, [])[::a.every] for s in ("train", "test_view")}
    frames = sorted({f for es in ents.values() for f, _ in es})
    lit = {}
    for f in frames:  # each vertex's shading in each frame, as the renderer computes it (before interpolation)
        n = np.asarray(trimesh.Trimesh(index.vertices[index.row(f)].astype(np.float64), outfit.faces, process=False).vertex_normals)
        lit[f] = ambient + (1 - ambient) * np.clip(n @ light, 0, None)
    mean = np.mean([lit[f] for f in frames], 0)

    def render(v, shade, cam):
        s = a.size
        K = np.asarray(cam.K, float) * np.array([[s / cam.width], [s / cam.height], [1.0]])
        scene = PosedScene(v, outfit.faces)
        o, d = camera_rays(K, np.asarray(cam.viewmat, float), s, s, 1)
        tri, ray, loc = scene.caster.intersects_id(o, d, multiple_hits=False, return_locations=True)
        bary = np.clip(points_to_barycentric(scene.mesh.triangles[tri], loc), 0, 1); bary /= bary.sum(1, keepdims=True)
        img, hit = np.ones((s * s, 3)), np.zeros(s * s, bool)
        img[ray], hit[ray] = outfit.albedo(tri, bary) * (shade[outfit.faces[tri]] * bary).sum(1)[:, None], True
        return img.reshape(s, s, 3), hit.reshape(s, s)

    print(f"{index.root}: {len(frames)} frames, {a.size} x {a.size}, light {light.round(3).tolist()}, ambient {ambient}\n")
    print("| split | images | static-colour ceiling, PSNR box |")
    print("| --- | ---: | ---: |")
    for split, es in ents.items():
        ps = []
        for f, c in es:
            v = index.vertices[index.row(f)].astype(np.float64)
            own, hit = render(v, lit[f], index.cameras[c])
            avg, _ = render(v, mean, index.cameras[c])
            ys, xs = np.nonzero(hit)
            box = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            ps.append(10 * np.log10(1 / max(((own[box] - avg[box]) ** 2).mean(), 1e-12)))
        print(f"| {split} | {len(ps)} | {np.mean(ps):.2f} dB |" if ps else f"| {split} | 0 | n/a |")


if __name__ == "__main__":
    main()
