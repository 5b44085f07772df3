"""The README's benchmark tables, generated from the latest results in bench/results/ (never typed by hand).

    .venv/bin/python bench/_readme_tables.py           # rewrite the tables between their markers in README.md
    .venv/bin/python bench/_readme_tables.py --check   # exit 1, with a diff, when README.md differs from the results

Each table sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`:

- `performance`: every figure of every benchmark's `table` rows (one result per benchmark), with when, at which
  commit and on what machine it was measured; a skipped benchmark shows why;
- `validity`: `bench/validity.py`'s figures, the fast stand-in beside the default variant's own procedure.

`make bench` writes the results and then this script; `make check` and tests/test_bench.py run `--check`.
"""
import argparse, difflib, re, sys
from pathlib import Path

from _results import ROOT, read_results

README = ROOT/'README.md'
SECTIONS = ('performance', 'validity')


def _cell(x) -> str: return str(x).replace('|', '\\|').replace('\n', ' ')


def run_info(r:dict) -> str:
    "When, where and at which commit a result was measured, in a few words."
    m = r.get('machine') or {}
    gpu = m.get('gpu') or 'no GPU'
    sha = (r.get('commit') or 'unknown')[:7] + ('-dirty' if str(r.get('commit') or '').endswith('-dirty') else '')
    load = f" (load {r['load_average']:.1f})" if r.get('load_average') is not None else ''
    return f"{(r.get('date') or '')[:10]}, `{sha}`, {m.get('cores')} cores{load}, {gpu}"


def performance_table(results:dict) -> str:
    "One row per figure of every benchmark except validity (its own table)."
    lines = ['| benchmark | figure | value | measured |', '|---|---|---|---|']
    for name, r in sorted(results.items()):
        if name == 'validity': continue
        bench = f"`bench/{name}.py`"
        if r.get('skipped'):
            lines.append(f"| {bench} | skipped | {_cell(r['skipped'])} | {run_info(r)} |")
        for row in r.get('table') or []:
            lines.append(f"| {bench} | {_cell(row['figure'])} | {_cell(row['value'])} | {run_info(r)} |")
        if not r.get('skipped') and not r.get('table'):
            lines.append(f"| {bench} | (no figures) | see its JSON result | {run_info(r)} |")
    return '\n'.join(lines)


MODELS = {'ridge': 'ridge word model per fold (stand-in)', 'default': '`default` variant (fine-tuned MiniLM)'}



def _seed_commits(f:dict) -> str:
    "Which commits the seeds ran at, when a run was continued at a later commit (`--first-seed`): '' otherwise."
    by = {}
    for r in f.get('seeds') or []:
        if r.get('commit'): by.setdefault(r['commit'][:7], []).append(r['seed'])
    if len(by) < 2: return ''
    return ', '.join(f"`{c}` (seed{'s' if len(v) > 1 else ''} {', '.join(map(str, v))})" for c, v in by.items())

def validity_table(results:dict) -> str:
    "The validity figures of the stand-in and the real procedure side by side, then how far apart they are."
    r = results.get('validity')
    if not r: return '_No result yet: run `make bench-validity`._'
    figs = r.get('figures') or {}
    models = [m for m in MODELS if (figs.get(m) or {}).get('summary')]
    lines = ['| figure | ' + ' | '.join(MODELS[m] for m in models) + ' |', '|---|' + '---|'*len(models)]
    for row in r.get('table') or []:
        lines.append(f"| {_cell(row['figure'])} | " + ' | '.join(_cell(row.get(m, '')) for m in models) + ' |')
    m = r.get('machine') or {}
    for k in models:
        f = figs[k]
        done = '' if f.get('complete', True) else ' (partial: the run was still going)'
        at = _seed_commits(f) or f"`{(f.get('commit') or '')[:7]}`"
        lines.append(f"\n{MODELS[k]}: {f['procedure']}. Measured {f.get('date', '')[:10]} at {at} "
                     f"on {m.get('cores')} cores, {m.get('gpu') or 'no GPU'}{done}.")
    if set(models) == {'ridge', 'default'}:
        a, b = figs['ridge']['summary'], figs['default']['summary']
        lines.append(f"\nStand-in minus real model: planted attributes recovered per seed "
                     f"{a['recovered_mean'] - b['recovered_mean']:+.1f}, unplanted factors flagged per seed "
                     f"{a['unplanted_mean'] - b['unplanted_mean']:+.2f}, share of shuffled-target seeds with anything flagged "
                     f"{a['null_any_flagged']/max(a['null_seeds'], 1) - b['null_any_flagged']/max(b['null_seeds'], 1):+.2f}.")
    rr = (figs.get('ridge') or {}).get('real_shuffled_summary')
    if rr:
        lines.append(f"\nStand-in on the real posters with shuffled ratings: anything flagged in {rr['null_any_flagged']} of "
                     f"{rr['seeds']} seeds ({rr['null_any_flagged_no_gate']} of {rr['seeds']} with the gate ignored).")
    return '\n'.join(lines)


TABLES = {'performance': performance_table, 'validity': validity_table}


def render(text:str, results:dict) -> str:
    "`text` with every marked table replaced by the one generated from `results`."
    for name, fn in TABLES.items():
        pat = re.compile(rf'(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)', re.S)
        if not pat.search(text): raise SystemExit(f"README.md has no <!-- bench:{name} --> ... <!-- /bench:{name} --> markers")
        text = pat.sub(lambda m: m.group(1) + fn(results) + '\n' + m.group(2), text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--check', action='store_true', help='fail when README.md differs from the results')
    ap.add_argument('--readme', default=str(README))
    ap.add_argument('--results', default=None, help='results folder (default: bench/results/)')
    a = ap.parse_args(argv)
    p = Path(a.readme)
    old = p.read_text()
    new = render(old, read_results(Path(a.results) if a.results else None))
    if a.check:
        if old == new:
            print(f"{p.name}: benchmark tables match the results"); return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), str(p), 'generated'))
        print(f"\n{p.name}: the benchmark tables differ from bench/results/: run `.venv/bin/python bench/_readme_tables.py`")
        return 1
    if new != old: p.write_text(new); print(f"{p.name}: tables rewritten")
    else: print(f"{p.name}: tables already up to date")
    return 0


if __name__ == '__main__': sys.exit(main())
