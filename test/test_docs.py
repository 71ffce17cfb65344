"""The pages hold together: every relative link in README.md and docs/ reaches a file that exists (and an
anchor one of the target page's headings), and every repository path the pages name is a file that exists,
so a moved module or page shows up here rather than as a dead link."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

PAGES = sorted([REPO / 'README.md', *(REPO / 'docs').rglob('*.md')])
# [text](target) and <img src="target">; a target ends at whitespace or the closing parenthesis.
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)|<img [^>]*src="([^"]+)"')
# A file of this repository named in the text: a known top-level folder, a path, an extension. Not one that
# is part of a longer path (src/vln_ros/config/vln.yaml is a colcon workspace's, $share/demo/... an install's).
REPO_PATH = re.compile(r'(?<![\w/.$-])((?:vln_ros|test|tools|config|launch|bench|msg|srv|docs|models|demo)/'
                       r'[\w./-]*\.(?:py|md|yaml|xml|msg|srv|rviz|sh|mcap|jsonl|png|mp4))\b')
FENCE = re.compile(r'^```.*?^```', re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def anchors(page: Path) -> set[str]:
    text = FENCE.sub('', page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r'^#{1,6} (.+)$', text, re.M)}


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub('', page.read_text())  # a link in a code block is text, not a link
    targets = [m.group(1) or m.group(2) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r'[a-z][a-z0-9+.-]*:', t)]  # http:, https:, mailto:


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition('#')
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(f'{target}: no such file')
        elif anchor and path.suffix == '.md' and anchor not in anchors(path):
            broken.append(f'{target}: no heading #{anchor} in {path.name}')
    return broken


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_an_existing_file_and_heading(page):
    assert broken_links(page) == []


def test_the_front_page_links_are_read():
    # the check above cannot pass by finding nothing: the README links to every docs page
    linked = {(REPO / t.partition('#')[0]).resolve() for t in relative_links(REPO / 'README.md')}
    assert {p for p in PAGES if p.parent.name in ('docs', 'nodes')} <= linked


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_file_a_page_names_exists(page):
    named = sorted({m.group(1) for m in REPO_PATH.finditer(page.read_text())})
    assert [name for name in named if not (REPO / name).exists()] == []


def test_a_dead_link_a_missing_heading_and_a_moved_file_are_caught(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('# Title\n\n## Large images: set this\n[ok](#large-images-set-this) [gone](missing.md) '
                    '[bad](#nowhere) [web](https://example.org/x) ![pic](pic.png)\n'
                    '```\n[in code](nowhere.md)\n```\n')
    (tmp_path / 'pic.png').write_bytes(b'')
    assert broken_links(page) == ['missing.md: no such file', '#nowhere: no heading #nowhere in page.md']
    assert [m.group(1) for m in REPO_PATH.finditer('see vln_ros/testing/gone.py and src/vln_ros/config/vln.yaml')] \
        == ['vln_ros/testing/gone.py']
