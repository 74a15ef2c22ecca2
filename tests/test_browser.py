"""The viewer as a person uses it: JupyterLab (headless, loopback) serves a small notebook, Chromium opens it, runs
every cell, moves the azimuth slider, and the screenshots before and after show a rendered person that turned.
The static 3D scene in the same notebook is drawn by viser's client in the browser (WebGL, software rendering).

Runs only with AVATAR_NB_BROWSER=1 (one to two minutes; `.ci/run` sets it); needs Debian's chromium and
chromium-driver (`apt-get install -y chromium chromium-driver`) and the dev requirements (jupyterlab, selenium).
AVATAR_NB_BROWSER_OUT=<folder> keeps the screenshots."""
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(os.environ.get("AVATAR_NB_BROWSER") != "1",
                                reason="browser test: set AVATAR_NB_BROWSER=1 (needs chromium, chromium-driver, jupyterlab, selenium)")

CELLS = [
    """import torch, tempfile
from avatar_nb.synth import generate_dataset, SynthConfig
from avatar_nb.data import load_dataset_index
from avatar_nb.body import load_body_model
from avatar_nb.config import TemplateConfig
from avatar_nb.template import build_template
from avatar_nb.model import AvatarModel, ModelConfig
from avatar_nb.encoders import EncoderConfig
from avatar_nb.decoder import DecoderConfig
from avatar_nb.pairs import AvatarDataset, DataConfig, stack_views
from avatar_nb.export import decode_person, walk_vertices
from avatar_nb.people import vertex_parts, PART_NAMES
from avatar_nb.viz import AvatarViewer, subset_mask
from avatar_nb.scene import embed_scene""",
    """tmp = tempfile.TemporaryDirectory()
generate_dataset(f"{tmp.name}/synth", SynthConfig(identities=1, poses=3, views=3, size=96))
index = load_dataset_index(f"{tmp.name}/synth")
body = load_body_model()
torch.manual_seed(0)
small = ModelConfig(encoder=EncoderConfig(width=8, out_channels=16, z_dim=8, id_hidden=16), decoder=DecoderConfig(hidden=32))
model = AvatarModel(build_template(TemplateConfig(k=1, sh_degree=1), body), small).eval()
src = index.splits["train"][0]
decoded = decode_person(model, stack_views([AvatarDataset(index, "train", DataConfig(size=96, augment=False)).view(src)]))
walk = walk_vertices(body, index, src[0], n=4)
viewer = AvatarViewer(model, decoded, walk, labels=vertex_parts(body), label_names=PART_NAMES)""",
    "viewer.widget()",
    """s = viewer.posed(0)
m = subset_mask(s.num_gaussians, every=2)
embed_scene(type(s)(**{k: getattr(s, k)[m] for k in ("means", "quats", "scales", "opacities", "sh")}), height=320)""",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path):
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
              "source": src} for i, src in enumerate(CELLS)]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


@pytest.fixture()
def lab(tmp_path):
    "JupyterLab on a free loopback port with a random token, serving a folder with the test notebook."
    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).exists()]
    if missing: pytest.skip(f"{missing} not found: apt-get install -y chromium chromium-driver")
    for mod in ("jupyterlab", "selenium"):
        try: __import__(mod)
        except ImportError: pytest.skip(f"{mod} is not installed: pip install -e '.[dev]'")
    root = tmp_path / "lab"
    root.mkdir()
    _notebook(root / "viewer.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), MPLBACKEND="Agg")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                             *(["--allow-root"] if os.geteuid() == 0 else [])],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if proc.poll() is not None: pytest.fail(f"jupyter lab exited: {(tmp_path / 'lab.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError: time.sleep(0.5)
        else: pytest.fail(f"jupyter lab did not answer on {base}: {(tmp_path / 'lab.log').read_text()[-3000:]}")
        yield base, token, tmp_path
    finally:
        try: os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (it and its kernels)
        except ProcessLookupError: pass
        try: proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)
        log.close()


def _png(data: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def _person_fraction(img: np.ndarray) -> float:
    "Share of non-white pixels in the render part of the viewer's figure (left 60 %, below the title)."
    h, w = img.shape[:2]
    region = img[int(0.1 * h):, : int(0.6 * w)]
    return float((np.abs(region - 255).sum(-1) > 40).mean())


def test_viewer_in_jupyterlab(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    base, token, tmp = lab
    keep = Path(os.environ["AVATAR_NB_BROWSER_OUT"]) if os.environ.get("AVATAR_NB_BROWSER_OUT") else None
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1400",
              "--use-angle=swiftshader", "--enable-unsafe-swiftshader", f"--user-data-dir={tmp / 'chrome'}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    shots = {}
    try:
        driver.get(f"{base}/lab/tree/viewer.ipynb?token={token}")
        wait = lambda s, cond, what: WebDriverWait(driver, s, poll_frequency=0.5).until(cond, message=what)
        wait(90, lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), "the notebook did not open")
        wait(120, lambda d: "| Idle" in d.find_element(By.ID, "jp-main-statusbar").text, "the kernel did not start")
        for b in driver.find_elements(By.CSS_SELECTOR, ".jp-toast-button"):  # the news question, if shown
            if b.text == "No": b.click()
        # select the first cell and press Shift+Enter once per cell, as a person does
        cells = lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")
        active = lambda i: lambda d: len(cells(d)) > i and "jp-mod-active" in cells(d)[i].get_attribute("class")
        cells(driver)[0].find_element(By.CSS_SELECTOR, ".jp-InputArea-editor").click()
        wait(10, active(0), "the first cell could not be selected")
        for i in range(len(CELLS)):
            ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
            wait(10, active(i + 1), f"Shift+Enter did not move on from cell {i}")

        def image_ready(d):
            err = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output") if "Traceback" in e.text
                   or "Error" in e.text.split("\n")[0]]
            if err: raise AssertionError(f"a cell failed in the browser:\n{err[0][:3000]}")
            imgs = d.find_elements(By.CSS_SELECTOR, "img.avatar-viewer-image")
            return imgs[0] if imgs and d.execute_script("return arguments[0].naturalWidth", imgs[0]) > 0 else False
        img = wait(240, image_ready, "the viewer's image did not appear")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
        time.sleep(1)
        src0 = img.get_attribute("src")
        shots["before"] = img.screenshot_as_png
        before = _png(shots["before"])
        assert _person_fraction(before) > 0.03, "the viewer's first image shows no person"

        # move the azimuth slider with the keyboard: focus its handle, 18 steps of 5 degrees to the right
        handle = driver.find_element(By.CSS_SELECTOR, ".avatar-viewer-azimuth .noUi-handle")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", handle)
        handle.click()
        for _ in range(18): handle.send_keys(Keys.ARROW_RIGHT)
        readout = driver.find_element(By.CSS_SELECTOR, ".avatar-viewer-azimuth .widget-readout")
        wait(30, lambda d: readout.text.strip() not in ("0.00", "0.0", "0"), "the azimuth slider did not move")
        wait(60, lambda d: img.get_attribute("src") != src0, "the image did not change after the slider moved")
        last, stable = None, 0
        for _ in range(120):  # let the renders queued by the key presses finish
            time.sleep(0.5)
            s = img.get_attribute("src")
            stable = stable + 1 if s == last else 0
            last = s
            if stable >= 6: break
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
        time.sleep(1)
        shots["after"] = img.screenshot_as_png
        after = _png(shots["after"])
        assert _person_fraction(after) > 0.03, "after the slider moved the image shows no person"
        h, w = before.shape[:2]
        diff = np.abs(after[int(0.1 * h):, : int(0.6 * w)] - before[int(0.1 * h):, : int(0.6 * w)]).mean()
        assert diff > 2, f"the render did not change when the azimuth moved (mean difference {diff:.2f})"
        status = driver.find_elements(By.CSS_SELECTOR, ".avatar-viewer .widget-html-content pre")
        assert not status, f"the viewer reported an error: {status[0].text}"
        print(f"azimuth readout {readout.text}; person {_person_fraction(before):.1%} -> {_person_fraction(after):.1%} "
              f"of the render area; mean change {diff:.1f}")

        # the static 3D scene: viser's client draws the splats into a WebGL canvas inside the iframe
        frame = wait(120, lambda d: d.find_elements(By.CSS_SELECTOR, "iframe.avatar-scene"), "no 3D scene iframe")[0]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", frame)
        driver.switch_to.frame(frame)
        wait(60, lambda d: d.find_elements(By.TAG_NAME, "canvas"), "viser's canvas did not appear")
        driver.switch_to.default_content()
        scene, frac = None, 0.0
        for _ in range(40):
            time.sleep(1)
            shots["scene"] = frame.screenshot_as_png
            scene = _png(shots["scene"])
            h, w = scene.shape[:2]
            centre = scene[int(0.3 * h):int(0.9 * h), int(0.35 * w):int(0.65 * w)]  # where the person stands
            frac = float((np.abs(centre - centre[0, 0]).sum(-1) > 60).mean())
            if frac > 0.03: break
        assert frac > 0.03, f"the 3D scene shows no person ({frac:.1%} of the centre differs from the background)"
    finally:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for k, v in shots.items(): (keep / f"{k}.png").write_bytes(v)
            (keep / "page.png").write_bytes(driver.get_screenshot_as_png())
        driver.quit()
