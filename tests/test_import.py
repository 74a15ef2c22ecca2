"Every module imports in a clean interpreter, and the package metadata agrees with settings.ini."
import configparser

import pytest

from conftest import ROOT, run_py

MODULES = sorted(p.stem for p in (ROOT / "avatar_nb").glob("*.py") if p.stem not in ("__init__", "__main__", "_modidx"))


def test_modules_found():
    assert {"config", "body", "template", "localise", "cli"} <= set(MODULES)


@pytest.mark.parametrize("mod", MODULES)
def test_clean_import(mod):
    r = run_py("-c", f"import avatar_nb.{mod}")
    assert r.returncode == 0, r.stderr


def test_package_version_matches_settings():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    r = run_py("-c", "import avatar_nb; print(avatar_nb.__version__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == cfg["DEFAULT"]["version"]


def test_import_does_not_load_body_model_libraries():
    "Importing the package must stay light: anny and smplx load only when a body model is built."
    r = run_py("-c", "import sys, avatar_nb.cli, avatar_nb.localise; print('anny' in sys.modules, 'smplx' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]
