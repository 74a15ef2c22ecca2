"The README's chapter table and 00_index's are one list, naming every notebook with the module it exports."
import json
import re

from conftest import ROOT

NOTEBOOK = re.compile(r"^`\d\d[a-z]?_\w+`(, `\d\d[a-z]?_\w+`)*$")


def chapter_rows(text: str) -> list[list[str]]:
    "Rows of the chapter table (notebook | module | stage) in a markdown text."
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("| `")]
    return [r for r in rows if NOTEBOOK.match(r[0])]


def index_markdown() -> str:
    cells = json.loads((ROOT / "nbs" / "00_index.ipynb").read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def default_exp(path) -> str | None:
    for c in json.loads(path.read_text())["cells"]:
        m = re.match(r"#\|\s*default_exp\s+(\S+)", "".join(c["source"]))
        if c["cell_type"] == "code" and m: return m.group(1)
    return None


def test_readme_and_index_list_the_same_chapters():
    readme = chapter_rows((ROOT / "README.md").read_text())
    assert len(readme) > 20
    assert chapter_rows(index_markdown()) == readme


def test_every_notebook_is_listed_with_its_module():
    listed = {}
    for nbs, modules, _ in chapter_rows((ROOT / "README.md").read_text()):
        names, mods = re.findall(r"`(\w+)`", nbs), re.findall(r"`avatar_nb\.(\w+)`", modules)
        assert len(mods) in (0, len(names)), f"row {nbs}: {len(names)} notebooks but modules {mods}"
        listed.update(zip(names, mods or [None] * len(names)))
    on_disk = {p.stem: default_exp(p) for p in sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))}
    assert listed == on_disk, {k: (listed.get(k, "not listed"), on_disk.get(k, "no notebook"))
                               for k in listed.keys() | on_disk.keys() if listed.get(k, 0) != on_disk.get(k, 0)}
