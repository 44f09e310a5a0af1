"""The README is the manual and docs/ the lab notebook: every relative link between them
resolves (file and, where given, heading), and the README stays short enough to read."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(pages: list[Path]) -> list[str]:
    out = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # no links inside code blocks
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                out.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md":
                anchors = {_anchor(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(), flags=re.M)}
                if anchor not in anchors:
                    out.append(f"{page.name}: {target} (no such heading)")
    return out


def test_no_broken_relative_link_in_readme_and_docs():
    assert (ROOT / "docs").is_dir()
    assert broken_links(_pages()) == []


def test_the_link_check_finds_a_broken_file_and_heading(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\n## Real heading\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](a.md) [ok](a.md#real-heading) [web](https://x.org/y)\n"
                    "[bad](docs/missing.md) [bad](a.md#no-such)\n```\n[in code](nowhere.md)\n```\n")
    got = broken_links([page])
    assert [g.split(": ", 1)[1] for g in got] == ["docs/missing.md (no such file)", "a.md#no-such (no such heading)"]


def test_readme_is_a_manual_of_at_most_300_lines():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert "make repro" in text and "make test" in text and "| hypothesis |" in text and "docs/" in text


def test_readme_result_blocks_are_the_committed_runs_metrics():
    """The README's result tables are generated from the commit's report and metrics
    (specdraft.report.readme): a figure there that the metrics do not give fails here."""
    from specdraft.report.readme import BLOCKS, MARK, render

    text = (ROOT / "README.md").read_text()
    assert sorted(m.group(2) for m in MARK.finditer(text)) == sorted(BLOCKS)
    assert render(text, ROOT) == text, "README.md is stale: run `make readme` (python -m specdraft.report.readme)"


def test_the_readme_check_sees_one_changed_digit():
    from specdraft.report.readme import MARK, render

    text = (ROOT / "README.md").read_text()
    block = next(m for m in MARK.finditer(text) if m.group(2) == "results")
    i = block.start(3) + next(j for j, ch in enumerate(block.group(3)) if ch.isdigit() and block.group(3)[j - 1] == ".")
    changed = text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:]
    assert changed != text and render(changed, ROOT) == text
