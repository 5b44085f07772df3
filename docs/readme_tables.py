"""The README's tables of stages and captioning backends, generated from their declarations
(`posterlens.pipeline.STAGES` and `CAPTIONERS`) between `<!-- stages:begin -->`/`<!-- stages:end -->` and
`<!-- captioners:begin -->`/`<!-- captioners:end -->`.

    python docs/readme_tables.py           # rewrite README.md
    python docs/readme_tables.py --check   # exit 1 when README.md differs from the declarations (make check)
"""
from __future__ import annotations
import argparse, re, sys
from pathlib import Path

from posterlens.pipeline import CAPTIONERS, STAGES

ROOT = Path(__file__).resolve().parent.parent


def _code(xs) -> str: return ', '.join(f'`{x}`' for x in xs) or '-'


def _pages(st) -> str:
    "Its report pages: fixed names, and for a callable (the captioner's page) every name it may give."
    return ', '.join(f'`{p}`' if isinstance(p, str) else "the captioner's: " + ' or '.join(f'`{n}`' for n in p(None))
                     for p in st.notebooks) or '-'


def stage_rows() -> list[str]:
    "The stage table: one row per declared stage, in order."
    rows = ['| stage | takes | writes (in `runs/<variant>/`) | report pages | what it does |', '|---|---|---|---|---|']
    for st in STAGES.values():
        writes = ', '.join(f'`{st.folder}/{o}`' for o in st.outputs) or '-'
        rows.append(f'| `posterlens {st.name}` | {_code(st.after)} | {writes} | {_pages(st)} | {st.help} |')
    return rows


def captioner_rows() -> list[str]:
    "The backend table: one row per declared captioning backend."
    yes = lambda b: 'yes' if b else 'no'
    rows = ['| `captioner` | class | networked | rate limited (`rpm`) | priced | report page |', '|---|---|---|---|---|---|']
    for name, c in CAPTIONERS.items():
        rows.append(f'| `{name}` | `{c.__module__}.{c.__name__}` | {yes(c.networked)} | {yes(c.rate_limited)} | {yes(c.priced)} | '
                    f'{_code([c.notebook] if c.notebook else [])} |')
    return rows


def render(text:str) -> str:
    "`text` (the README) with both tables regenerated between their markers."
    for name, rows in (('stages', stage_rows()), ('captioners', captioner_rows())):
        pat = re.compile(rf'(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)', re.S)
        if not pat.search(text): raise SystemExit(f'README.md has no <!-- {name}:begin --> ... <!-- {name}:end --> markers')
        text = pat.sub(lambda m: m.group(1) + '\n'.join(rows) + '\n' + m.group(2), text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--check', action='store_true', help='exit 1 when README.md is out of date instead of rewriting it')
    ap.add_argument('--readme', default=str(ROOT/'README.md'), help='the README to update (default: %(default)s)')
    a = ap.parse_args(argv)
    p = Path(a.readme)
    old = p.read_text(encoding='utf-8')
    new = render(old)
    if a.check:
        if new != old:
            print(f'{p}: the stage or captioner table differs from the declarations; run `make readme`', file=sys.stderr)
            return 1
        return 0
    if new != old: p.write_text(new, encoding='utf-8')
    return 0


if __name__ == '__main__': sys.exit(main())
