"Timing and mesh loading shared by the benchmark scripts."
import statistics
import time

import torch


def time_ms(fn, device: torch.device, reps: int, warmup: int = 2) -> tuple[float, float]:
    "Median and best wall time of `fn()` in milliseconds, synchronising CUDA around every call."
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup): fn()
    ts = []
    for _ in range(reps):
        if cuda: torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda: torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1000, min(ts) * 1000


def load_mesh(path: str | None):
    "Vertices [V, 3], faces [F, 3] and name of a mesh saved by bench_localise.py --save-mesh; the Anny rest mesh when None."
    if path:
        import numpy as np
        z = np.load(path)
        return torch.from_numpy(z["vertices"]).float(), torch.from_numpy(z["faces"]).long(), str(z["name"])
    from avatar_nb.body import load_body_model
    body = load_body_model()
    return body.rest_vertices.detach(), body.faces, body.name
