"Losses (their values, bounds and config checks are in nbs/15_losses): LPIPS availability in a clean process (warned once, required fails naming TORCH_HOME), finite totals and gradients on random and extreme inputs, bfloat16 inputs and autocast, no host syncs on CUDA."
import sys
import warnings

import pytest
import torch

from avatar_nb.losses import AvatarLoss, LossConfig, LpipsUnavailable, load_lpips, masked_l1, psnr, ssim
from conftest import run_py

ALL_TERMS = {"l1", "ssim", "silhouette", "occlusion", "scale", "offset"}


def case(B=2, N=64, H=32, W=32, seed=0, dtype=torch.float32, device="cpu"):
    "A random batch of renders, targets, masks and Gaussians in front of the camera."
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g)
    mask = torch.zeros(B, 1, H, W); mask[..., H // 4:3 * H // 4, W // 4:3 * W // 4] = 1
    K = torch.tensor([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]]).expand(B, 3, 3)
    means = torch.cat([r(B, N, 2) - 0.5, 1.5 + r(B, N, 1)], -1)
    scales = 10 ** (-5 + 4 * r(B, N, 3))  # 1e-5 .. 0.1 m: some below and above the bounds
    out = dict(rgb=r(B, 3, H, W), alpha=r(B, 1, H, W), target=r(B, 3, H, W), mask=mask, means=means, K=K,
               opacity=r(B, N) * 0.98 + 0.01, scales=scales, offset=(r(B, N) - 0.5) * 0.03)
    return {k: v.to(device=device, dtype=dtype) for k, v in out.items()}


def test_auto_warns_once_per_process():
    "In a clean interpreter without the lpips package: two `auto` loads and a default loss give one warning."
    script = """
import sys, warnings
sys.modules["lpips"] = None  # the package is absent: `import lpips` raises ImportError
from avatar_nb.losses import load_lpips, AvatarLoss
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fns = [load_lpips("auto"), load_lpips("auto"), AvatarLoss().lpips_fn]
print(fns.count(None), len(caught))
print(caught[0].message if caught else "")
"""
    r = run_py("-c", script)
    assert r.returncode == 0, r.stderr
    counts, msg = r.stdout.split("\n", 1)
    assert counts.split() == ["3", "1"]
    assert "LPIPS is unavailable" in msg and "metrics will show LPIPS as unavailable" in msg
    assert "cannot be imported" in msg and "loss.lpips=required" in msg and "\n" not in msg.strip()


def test_required_raises_naming_torch_home(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lpips", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for make in (lambda: load_lpips("required", "alex"), lambda: AvatarLoss(LossConfig(lpips="required"))):
        with pytest.raises(LpipsUnavailable) as e:
            make()
        msg = str(e.value)
        assert f"TORCH_HOME={tmp_path}" in msg and str(tmp_path / "hub" / "checkpoints") in msg
        assert "pip install lpips torchvision" in msg and "cannot be imported" in msg
    assert load_lpips("never") is None
    assert AvatarLoss(LossConfig(lpips="required", lpips_weight=0)).lpips_fn is None  # weight 0: not needed


def test_terms_without_lpips(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = AvatarLoss(LossConfig(lpips="auto"))
    assert loss.lpips_fn is None
    c = case()
    out = loss(**c, max_offset=0.02)
    assert set(out.terms) == ALL_TERMS and "lpips" not in out.terms


def test_total_and_gradients_finite():
    c = case(seed=1)
    # extreme but valid values: saturated alpha, a perfect patch, opacities at the ends, tiny and huge scales,
    # Gaussians at and behind the camera plane, offsets at the bound
    c["alpha"][0, :, :4] = 0; c["alpha"][0, :, 4:8] = 1
    c["rgb"][1, :, :12, :12] = c["target"][1, :, :12, :12]
    c["opacity"][0, :4] = torch.tensor([1e-6, 1 - 1e-6, 0.0, 1.0])
    c["scales"][0, :2] = torch.tensor([1e-30, 1e3])[:, None]
    c["means"][0, :3, 2] = torch.tensor([0.0, -1.0, 1e-9])
    c["offset"][1, :2] = torch.tensor([0.02, -0.02])
    leaves = {k: v.requires_grad_() for k, v in c.items() if k not in ("mask", "K", "target")}
    out = AvatarLoss(LossConfig(lpips="never", opacity_reg=0.1))(**c, max_offset=0.02)
    assert out.total.dim() == 0 and torch.isfinite(out.total)
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.terms.values())
    out.total.backward()
    for k, v in leaves.items():
        if k == "means":
            assert v.grad is None  # the occlusion term reads the mask at detached centres
            continue
        assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0, k


def test_bf16_inputs_and_autocast_compute_in_float32():
    c32 = case(seed=2)
    c16 = {k: v.bfloat16() for k, v in c32.items()}
    ref_in = {k: v.float() for k, v in c16.items()}  # the same values, widened
    loss = AvatarLoss(LossConfig(lpips="never", opacity_reg=0.1))
    ref = loss(**ref_in, max_offset=0.02)
    out = loss(**c16, max_offset=0.02)
    assert out.total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in out.terms.values())
    torch.testing.assert_close(out.total, ref.total, rtol=1e-6, atol=1e-7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss(**ref_in, max_offset=0.02)
        s = ssim(ref_in["rgb"], ref_in["target"])
    torch.testing.assert_close(auto.total, ref.total, rtol=1e-6, atol=1e-7)
    assert s.dtype == torch.float32
    x = c16["rgb"].requires_grad_()
    (1 - ssim(x, c16["target"])).sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()
    for f in (psnr, masked_l1, ssim):
        assert f(c16["rgb"], c16["target"]).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_no_host_sync_and_matches_cpu():
    cpu = case(seed=4)
    gpu = {k: v.cuda().requires_grad_(k in ("rgb", "alpha", "opacity", "scales", "offset")) for k, v in cpu.items()}
    loss = AvatarLoss(LossConfig(lpips="never", opacity_reg=0.1))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = loss(**gpu, max_offset=0.02)
        out.total.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref = loss(**cpu, max_offset=0.02)
    torch.testing.assert_close(out.total.cpu(), ref.total, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(gpu["rgb"].grad).all()
