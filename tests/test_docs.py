"""
The documentation stands alone: README.md and docs/ never point outside the repository, every
relative link resolves (file and heading), and the README stays a user guide of bounded length.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from launcher.errors import LauncherError


REPO_ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 220

# Places the docs once pointed to that users of this repository do not have.
FORBIDDEN = ("steering", "../shared", "/work/", "shared/spec", "spec/redis-cache-backend", "redis-cache-backend.md")

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PARENT_PATH = re.compile(r"(?:\.\./)+[\w.\-/]*")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def doc_files() -> list[Path]:
    """README.md and every text file under docs/ (images and other binaries are skipped)."""
    files = [REPO_ROOT / "README.md"]
    for path in sorted((REPO_ROOT / "docs").rglob("*")):
        if path.is_file() and b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def markdown_files() -> list[Path]:
    return [path for path in doc_files() if path.suffix == ".md"]


def outside_references(path: Path, text: str, root: Path = REPO_ROOT) -> list[str]:
    """Mentions in `text` (the content of `path`) of places outside the repository at `root`."""
    found = [marker for marker in FORBIDDEN if marker in text]
    if path.suffix == ".md":
        for mention in PARENT_PATH.findall(text):
            target = (path.parent / mention).resolve()
            if not target.is_relative_to(root):
                found.append(mention)
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown text, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(path: Path, text: str, root: Path = REPO_ROOT) -> list[str]:
    """Relative links in a Markdown text whose file (or heading) does not exist inside `root`."""
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not _resolves(linked, anchor, root):
            broken.append(target)
    return broken


def _resolves(linked: Path, anchor: str, root: Path) -> bool:
    if not linked.is_relative_to(root) or not linked.exists():
        return False
    return not anchor or linked.suffix != ".md" or anchor in anchors(linked.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_docs_never_point_outside_the_repository(path):
    text = path.read_text(encoding="utf-8")
    assert outside_references(path, text) == []


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(path):
    assert broken_links(path, path.read_text(encoding="utf-8")) == []


def test_readme_is_a_short_user_guide():
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES


def test_readme_documents_every_exit_code():
    """The exit-code table is a promise: every code the launcher's errors end with has its row."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("### Exit codes", 1)[1]
    rows = set(re.findall(r"^\| ([0-9 /]+) \|", table, re.MULTILINE))
    documented = {int(code) for row in rows for code in row.split(" / ")}
    pending = [LauncherError]
    raised = set()
    while pending:
        cls = pending.pop()
        raised.add(cls.exit_code)
        pending.extend(cls.__subclasses__())
    assert raised <= documented
    assert documented == {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 130, 143, 129}


def test_docs_exist_that_the_readme_promises():
    for name in ("docs/design.md", "docs/drill.md", "docs/bench/README.md", "docs/venues.md"):
        assert (REPO_ROOT / name).is_file(), name


def test_checks_catch_what_they_are_for(tmp_path):
    """The checkers flag outside paths, missing files and missing headings (so the tests above can fail)."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## The backend's write model\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    text = (
        "Requirements: see ../../shared/spec/x.md and spec/redis-cache-backend.md of the steering repo.\n"
        "[ok](other.md) [ok anchor](other.md#the-backends-write-model) [web](https://example.org/a.md)\n"
        "[missing](nope.md) [bad anchor](other.md#nowhere) [outside](../../etc/passwd)\n"
    )
    page.write_text(text, encoding="utf-8")
    outside = outside_references(page, text, root=tmp_path)
    assert {"steering", "../shared", "spec/redis-cache-backend"} <= set(outside)
    assert "../../shared/spec/x.md" in outside
    assert broken_links(page, text, root=tmp_path) == ["nope.md", "other.md#nowhere", "../../etc/passwd"]
