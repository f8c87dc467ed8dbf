"""The docs speak of the product: no words about how it is made, no paths of one machine, and every
link to a section of another page lands on a heading."""
import re
from pathlib import Path

import pytest
from helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
SOURCES = [*sorted((ROOT / "resnet_cifar").rglob("*.py")), *sorted((ROOT / "bench").glob("*.py")),
           *sorted((ROOT / "bench").glob("*.sh"))]
# Words about how the project is being made rather than what it does, and paths of one machine.
BANNED = ["at hand", "minutes here", "run here instead", "Targets missed", "Against the goals",
          "measured here", "this project's", "it names it now", "in two calls", "carried back",
          "in a second call", "/tmp/", "I found"]


@pytest.mark.parametrize("path", PAGES + SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_word_about_the_making_and_no_machine_path(path):
    text = path.read_text(encoding="utf-8")
    found = [word for word in BANNED if re.search(rf"\b{re.escape(word)}" if word[0].isalnum() else re.escape(word),
                                                  text)]
    assert found == []


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(line.lstrip("#")) for line in page.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_to_a_section_lands_on_a_heading(page):
    broken = []
    for target, fragment in re.findall(r"\]\(([^)#\s]*\.md)?#([^)\s]+)\)", page.read_text(encoding="utf-8")):
        linked = (page.parent / target).resolve() if target else page
        if not linked.exists() or fragment not in anchors(linked):
            broken.append(f"{target}#{fragment}")
    assert broken == []


def test_every_figure_in_the_readme_has_its_entry():
    """Each accuracy and ratio in the README, and each speed in its tables, appears in docs/results.md
    or bench/README.md, where its command, machine, date and commit are."""
    sources = (ROOT / "docs" / "results.md").read_text(encoding="utf-8") + (ROOT / "bench" / "README.md").read_text(
        encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("|")]
    figures = {figure for row in rows for figure in re.findall(r"\d[\d,]* img/s", row)}
    figures |= set(re.findall(r"\d+\.\d+%|\d+\.\d+×", readme))
    assert figures and not {f for f in figures if f.replace(" img/s", "") not in sources
                            and f.replace("%", "") not in sources}


def test_the_readme_stays_a_front_page():
    assert len((ROOT / "README.md").read_bytes()) <= 10 * 1024


def prose_and_tables(page: Path) -> str:
    """A page without its code blocks (indented or fenced): transcripts show a command's output as it
    printed it, and are measurements of their own command."""
    kept, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        elif not fenced and not line.startswith("    "):
            kept.append(line)
    return "\n".join(kept)


@pytest.mark.parametrize("page", [p for p in PAGES if p.name not in ("README.md", "results.md")
                                  and p.parent.name != "bench"], ids=lambda p: p.name)
def test_every_figure_in_the_docs_has_its_entry(page):
    """Each accuracy and ratio in the docs' prose and tables appears in docs/results.md or bench/README.md."""
    sources = (ROOT / "docs" / "results.md").read_text(encoding="utf-8") + (ROOT / "bench" / "README.md").read_text(
        encoding="utf-8")
    figures = set(re.findall(r"\d+\.\d+%|\d+\.\d+×", prose_and_tables(page)))
    assert sorted(f for f in figures if f not in sources and f.replace("%", "") not in sources) == []
