"""The README is a front page and the manual lives in docs/, one page per topic, with links
between them: every relative Markdown link in README.md and docs/*.md must point to a file
that exists and, where it names an #anchor, to a heading of that page (anchors as GitHub
makes them: lowercase, spaces to '-', punctuation removed, a repeated heading numbered) or
to an explicit `<a id="...">` of it. Every section that the code and the pages cite as
"docs/design.md §N" or "design.md §N" has its anchor `#sN` in docs/design.md."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"\s*>", re.I)
DESIGN = ROOT / "docs" / "design.md"
# "docs/design.md §4", "docs/design.md §2-§8", "design.md §3.1" in a docstring, a comment or a page
CITATION = re.compile(r"(?:DESIGN|design\.md)\s*(§\s*\d+(?:\.\d+)?(?:\s*[-–,]\s*§?\s*\d+(?:\.\d+)?)*)")


def prose_lines(text):
    """The lines outside fenced code blocks (a '#' there is a shell comment, not a heading)."""
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield line


def github_anchor(heading):
    """The anchor GitHub gives a heading: its text without Markdown markup, lowercased,
    punctuation removed (letters, digits, '_', '-' and spaces stay), spaces turned to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page):
    """Every anchor of a page, a repeated heading's numbered '-1', '-2', ... as on GitHub,
    and every explicit `<a id="...">`."""
    seen = {}
    found = set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        found.update(EXPLICIT_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def links(page):
    """(line number, target) of every relative link of a page, outside code."""
    text = page.read_text(encoding="utf-8")
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if inside:
            continue
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            target = match.group(1)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):   # http:, mailto:, ...
                yield number, target


def broken_links(pages):
    """One line per link whose file is missing or whose #anchor names no heading."""
    problems = []
    for page in pages:
        for number, target in links(page):
            path, _, anchor = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            where = f"{page.parent.name}/{page.name}:{number}: {target}"
            if not destination.exists():
                problems.append(f"{where}: no file {destination}")
            elif anchor:
                if destination.suffix != ".md":
                    problems.append(f"{where}: an anchor into a file that is not Markdown")
                elif anchor not in anchors(destination):
                    problems.append(f"{where}: no heading with anchor #{anchor}")
    return problems


def test_the_manual_is_in_docs_and_the_front_page_links_every_page():
    pages = {page.name for page in PAGES[1:]}
    assert len(pages) >= 8, pages
    front = {target.partition("#")[0] for _, target in links(ROOT / "README.md")}
    assert {f"docs/{name}" for name in pages} <= front


@pytest.mark.parametrize("heading, anchor", [
    ("Where the paper's text and its code differ", "where-the-papers-text-and-its-code-differ"),
    ("What `make run` prints", "what-make-run-prints"),
    ("Reports of get-results.py", "reports-of-get-resultspy"),
    ("Headline result: DIGITS", "headline-result-digits"),
    ("bf16 against fp32: accuracy", "bf16-against-fp32-accuracy"),
    ("Options of implicit-augment.py", "options-of-implicit-augmentpy"),
    ("A [linked](x.md) **bold** title", "a-linked-bold-title"),
])
def test_github_anchor_lowercases_drops_punctuation_and_joins_words_with_hyphens(heading, anchor):
    assert github_anchor(heading) == anchor


def test_a_repeated_heading_gets_a_numbered_anchor_and_code_comments_are_no_headings(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## Notes\n\n## Notes\n\n```bash\n# not a heading\n```\n")
    assert anchors(page) == {"page", "notes", "notes-1"}


def test_the_checker_reports_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    other = tmp_path / "docs" / "other.md"
    other.write_text("# Other\n\n## Known section\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text("# Page\n\n[fine](other.md#known-section) [self](#page) [web](https://example.org)\n"
                    "[gone](missing.md) [bad anchor](other.md#unknown) `[in code](nowhere.md)`\n"
                    "```\n[in a block](nowhere.md)\n```\n")
    problems = broken_links([page, other])
    assert len(problems) == 2, problems
    assert "missing.md: no file" in problems[0] and "#unknown" in problems[1]


def test_every_relative_link_in_readme_and_docs_resolves():
    assert len(PAGES) > 1
    problems = broken_links(PAGES)
    assert problems == [], "\n".join(problems)


def test_an_explicit_anchor_counts_as_an_anchor_of_its_page(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('# Page\n\n<a id="s4"></a>\n## §4 The step\n\n```\n<a id="in-code"></a>\n```\n')
    assert anchors(page) == {"page", "s4", "4-the-step"}


def cited_sections(text):
    """The section numbers a text cites as docs/design.md §N / design.md §N (ranges: both ends)."""
    return {number for match in CITATION.finditer(text)
            for number in re.findall(r"\d+(?:\.\d+)?", match.group(1))}


def test_citations_of_the_design_are_read_with_their_ranges():
    text = "see docs/design.md §2-§8 and docs/design.md §3.1, [design §4](design.md#s4), docs/design.md §6"
    assert cited_sections(text) == {"2", "8", "3.1", "6"}


def test_the_design_page_has_every_section_the_code_and_the_pages_cite():
    assert DESIGN.is_file(), "docs/design.md is missing"
    sections = {f"s{number}" for number in (*map(str, range(1, 9)), "3.1", "3.2")}
    assert sections <= anchors(DESIGN)
    citing = [*ROOT.glob("*.py"), *ROOT.glob("*/*.py"), *ROOT.glob("*.md"), *ROOT.glob("docs/*.md")]
    cited = {number: path.relative_to(ROOT) for path in citing
             for number in cited_sections(path.read_text(encoding="utf-8"))}
    assert len(cited) >= 8, cited
    missing = {f"§{number} ({path})" for number, path in cited.items()
               if f"s{number}" not in anchors(DESIGN)}
    assert not missing, f"docs/design.md has no anchor for {sorted(missing)}"
