"""README.md and docs/*.md: every relative link reaches a file of the repository, and every ``#anchor`` a
heading of the page it names, by GitHub's rule (lowercase, spaces to ``-``, other punctuation dropped;
a repeated heading gets ``-1``, ``-2``, ...). Standard library only."""

import glob
import os
import re

import pytest

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
# [text](target) outside code; the target ends at the first space or ")" (titles are not used here)
LINK = re.compile(r"(?<!\!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# Pages that another change of this round writes; a link to one is checked once it exists.
PENDING = {os.path.join("docs", "fleet.md")}


def github_anchor(heading):
    """The anchor GitHub gives a heading: markup dropped, lowercase, spaces to ``-``, punctuation dropped
    (letters, digits, ``-`` and ``_`` stay)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def prose(text):
    """``text`` without fenced code blocks and inline code spans, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path):
    seen = {}
    found = set()
    with open(path) as handle:
        text = handle.read()
    for line in re.sub(r"^```.*?^```", "", text, flags=re.S | re.M).splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else "%s-%d" % (anchor, count))
    return found


def links(path):
    with open(path) as handle:
        return LINK.findall(prose(handle.read()))


def test_the_anchor_rule_is_githubs():
    assert github_anchor("Exit status") == "exit-status"
    assert github_anchor("What `--trust-model` allows") == "what---trust-model-allows"
    assert github_anchor("Any TensorFlow release (`--tf`, `--bisect`)") == "any-tensorflow-release---tf---bisect"
    assert github_anchor("Installed: the `tfbridge` command and the Python API") == \
        "installed-the-tfbridge-command-and-the-python-api"


def test_the_link_finder_sees_links_and_not_code():
    text = "see [a](a.md) and [b `c`](b.md#x), not `[d](d.md)` nor\n```\n[e](e.md)\n```\n![img](i.png)"
    assert LINK.findall(prose(text)) == ["a.md", "b.md#x"]


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(page, REPO) for page in PAGES])
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not checked offline
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if os.path.relpath(resolved, REPO) in PENDING and not os.path.exists(resolved):
            continue
        if not os.path.exists(resolved):
            broken.append("%s: no such file" % target)
        elif anchor and (not resolved.endswith(".md") or anchor not in anchors(resolved)):
            broken.append("%s: no heading with that anchor" % target)
    assert not broken, "%s has broken links: %s" % (os.path.relpath(page, REPO), "; ".join(broken))


def test_every_docs_page_is_linked_from_the_readme():
    linked = set(os.path.normpath(os.path.join(REPO, target.partition("#")[0]))
                 for target in links(os.path.join(REPO, "README.md")))
    missing = [os.path.relpath(page, REPO) for page in PAGES[1:] if page not in linked]
    assert not missing, "docs pages no README link reaches: %s" % ", ".join(missing)


def test_the_readme_stays_a_front_door():
    with open(os.path.join(REPO, "README.md")) as handle:
        assert len(handle.read().splitlines()) <= 350
