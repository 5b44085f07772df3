"""The shape of the notebooks' exported cells, per notebook and overall, measured the way the anchors (fastcore,
execnb, nbdev) were: export cells, counting non-blank lines that are not `#|` directives.

    .venv/bin/python bench/cells.py                    # every notebook in nbs/
    .venv/bin/python bench/cells.py nbs/04b_pipeline.ipynb nbs/06_cli.ipynb
    .venv/bin/python bench/cells.py --smoke            # one notebook (what the tests run)

Columns: export cells; lines per export cell, median and 90th percentile; share of export cells over 40 lines;
share with 2+ public definitions (top-level functions and classes whose name does not start with `_`); share of export cells
that hold one public definition used by the next code cell; `#| hide` cells. Then every function (or method)
over 40 lines."""
import argparse, ast, json, re, sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_result  # noqa: E402

DIRECTIVE = re.compile(r'^\s*#\|')


def _source(c) -> str: return ''.join(c['source']) if isinstance(c['source'], list) else c['source']


def _directives(src:str) -> set[str]:
    return {l.split('|', 1)[1].strip().split()[0] for l in src.splitlines() if DIRECTIVE.match(l) and l.split('|', 1)[1].strip()}


def _lines(src:str) -> list[str]:
    return [l for l in src.splitlines() if l.strip() and not DIRECTIVE.match(l)]


def _parse(src:str):
    code = '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!')))
    try: return ast.parse(code)
    except SyntaxError: return None


def _public_defs(tree) -> list[str]:
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and not n.name.startswith('_')]


def _long_functions(tree, src:str, limit:int=40) -> list[tuple[str, int]]:
    "(name, non-blank lines) of every function or method in `tree` longer than `limit` lines."
    lines, out = src.splitlines(), []
    def walk(node, prefix=''):
        for n in ast.iter_child_nodes(node):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = [l for l in lines[n.lineno - 1:n.end_lineno] if l.strip()]
                if len(body) > limit: out.append((prefix + n.name, len(body)))
                walk(n, prefix + n.name + '.')
            elif isinstance(n, ast.ClassDef): walk(n, prefix + n.name + '.')
    walk(tree)
    return out


def measure(path:Path) -> dict:
    "The export cells of one notebook: their sizes, public definitions, uses, and its long functions and hide cells."
    cells = json.loads(path.read_text())['cells']
    code = [c for c in cells if c['cell_type'] == 'code']
    sizes, multi, alone, used, longf = [], 0, 0, 0, []
    hide = sum('hide' in _directives(_source(c)) for c in code)
    for i, c in enumerate(code):
        src = _source(c)
        if not _directives(src) & {'export', 'exporti', 'exports'}: continue
        sizes.append(len(_lines(src)))
        tree = _parse(src)
        if tree is None: continue
        pub = _public_defs(tree)
        multi += len(pub) >= 2
        longf += [(path.stem, n, k) for n, k in _long_functions(tree, src)]
        if len(pub) == 1:
            alone += 1
            nxt = _source(code[i + 1]) if i + 1 < len(code) else ''
            used += bool(re.search(rf'\b{re.escape(pub[0])}\b', nxt))
    return dict(name=path.stem, sizes=sizes, multi=multi, alone=alone, used=used, hide=hide, long=longf)


def row(name:str, sizes:list, multi:int, alone:int, used:int, hide:int) -> str:
    n = len(sizes)
    if not n: return f'{name:<16}{0:>6}'
    med, p90 = np.median(sizes), np.percentile(sizes, 90)
    over = 100 * sum(s > 40 for s in sizes) / n
    return (f'{name:<16}{n:>6}{med:>8.1f}{p90:>7.1f}{over:>8.1f}%{100 * multi / n:>8.1f}%'
            f'{100 * used / n:>9.1f}%{hide:>7}')


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebooks', nargs='*', help='notebooks to measure (default: every one in nbs/)')
    ap.add_argument('--smoke', action='store_true', help='the first notebook only; the result goes under smoke/')
    a = ap.parse_args(argv)
    paths = [Path(p) for p in a.notebooks] or sorted((ROOT/'nbs').glob('*.ipynb'))
    if a.smoke: paths = paths[:1]
    ms = [measure(p) for p in paths]
    print(f"{'notebook':<16}{'cells':>6}{'median':>8}{'p90':>7}{'>40':>9}{'2+ pub':>9}{'def+use':>10}{'hide':>7}")
    for m in ms: print(row(m['name'], m['sizes'], m['multi'], m['alone'], m['used'], m['hide']))
    tot = lambda k: [x for m in ms for x in m[k]] if k == 'sizes' else sum(m[k] for m in ms)
    print(row('overall', tot('sizes'), tot('multi'), tot('alone'), tot('used'), tot('hide')))
    longf = [x for m in ms for x in m['long']]
    print(f'\nfunctions over 40 lines: {len(longf)}')
    for nb, name, k in sorted(longf, key=lambda x: -x[2]): print(f'  {nb}: {name} ({k} lines)')
    sizes = tot('sizes'); n = max(1, len(sizes))
    figs = {'notebooks': [m['name'] for m in ms], 'export_cells': len(sizes),
            'median_lines': float(np.median(sizes)) if sizes else 0.0,
            'p90_lines': float(np.percentile(sizes, 90)) if sizes else 0.0,
            'share_over_40': sum(x > 40 for x in sizes) / n, 'share_2plus_public': tot('multi') / n,
            'functions_over_40': [{'notebook': nb, 'function': f, 'lines': k} for nb, f, k in longf]}
    table = [('export cells: lines, median / p90', f"{figs['median_lines']:.0f} / {figs['p90_lines']:.0f}"),
             ('export cells over 40 lines', f"{100 * figs['share_over_40']:.1f}%"),
             ('export cells with 2+ public definitions', f"{100 * figs['share_2plus_public']:.1f}%"),
             ('functions over 40 lines', str(len(longf)))]
    write_result('cells', figs, table, smoke=a.smoke)
    return 0


if __name__ == '__main__': sys.exit(main())
