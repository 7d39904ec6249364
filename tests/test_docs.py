"""The Markdown docs: a short README and relative links that resolve (anchors included)."""
import re
from pathlib import Path
from typing import List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
LINKED = [README, ROOT / 'CHANGELOG.md', ROOT / 'hf_cards' / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]

MAX_README_LINES = 250
# [text](target) and ![alt](target), target without spaces; an optional "title" after it
_LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
_FENCE = re.compile(r'^(```|~~~).*?^\1', re.M | re.S)
_INLINE_CODE = re.compile(r'`[^`\n]*`')


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (whose brackets and hashes are not links or history)."""
    return _INLINE_CODE.sub('', _FENCE.sub('', text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading.strip())  # links keep their text
    text = re.sub(r'[^\w\- ]', '', text.lower())
    return text.replace(' ', '-')


def _anchors(path: Path) -> Set[str]:
    seen, out = {}, set()
    for line in _FENCE.sub('', path.read_text(encoding='utf-8')).splitlines():
        m = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f'{slug}-{n}')
    return out


def _relative_links(path: Path) -> List[Tuple[str, str]]:
    """``(file part, anchor)`` of every relative link in ``path``."""
    links = []
    for target in _LINK.findall(_prose(path.read_text(encoding='utf-8'))):
        if re.match(r'[a-z][a-z0-9+.-]*:', target, re.I):  # http:, https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition('#')
        links.append((file_part, anchor))
    return links


def test_readme_is_short():
    lines = README.read_text(encoding='utf-8').count('\n')
    assert lines <= MAX_README_LINES, f'README.md has {lines} lines; move reference material to docs/'


@pytest.mark.parametrize('path', LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert path.exists()
    broken = []
    for file_part, anchor in _relative_links(path):
        target = (path.parent / file_part).resolve() if file_part else path
        if not target.exists():
            broken.append(f'{file_part}: no such file')
        elif anchor and target.suffix == '.md' and anchor not in _anchors(target):
            broken.append(f'{file_part}#{anchor}: no such heading in {target.relative_to(ROOT)}')
    assert not broken, f'{path.relative_to(ROOT)}: {broken}'


def test_docs_index_lists_every_page():
    index = {f for f, _ in _relative_links(ROOT / 'docs' / 'README.md')}
    pages = {p.name for p in (ROOT / 'docs').glob('*.md') if p.name != 'README.md'}
    assert pages <= index, f'docs/README.md does not list {sorted(pages - index)}'
