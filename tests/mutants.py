"""Mutation checks of the claims: each named mutation of tests/mutations.toml plants one deliberate bug in a scratch
copy of the repository and runs only the tests named to catch it; the mutation is killed when one of them fails.

    python tests/mutants.py              # every mutation (what `make mutants` runs)
    python tests/mutants.py --fast       # the fast subset (`fast = true`; what .ci/run runs)
    python tests/mutants.py -k unreach   # those whose name contains a word
    python tests/mutants.py --list       # the table of mutations, without running anything

A mutation is declared by exact strings: `old` must occur exactly once in `file` (for a notebook, in one cell's
source), else it is STALE (the code it targets was changed: update the mutation) and the run fails. Before any
mutation, the named tests run once on the unchanged copy (baseline): a test that fails or is skipped there proves
nothing, so its mutations are reported as BASELINE and the run fails. Exit status 0 only when every selected mutation
is killed by one of its own tests.
"""
from __future__ import annotations
import argparse, json, os, re, shutil, subprocess, sys, tempfile, time, tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT/'tests'/'mutations.toml'


@dataclass
class Mutation:
    name: str
    claim: str
    file: str
    old: str
    new: str
    tests: list[str]
    fast: bool = False
    timeout: int = 300
    status: str = ''
    killed_by: list[str] = field(default_factory=list)
    seconds: float = 0.0
    detail: str = ''


def load(path:Path=SPEC) -> list[Mutation]:
    "The mutations declared in `path`; a malformed entry is an error."
    spec = tomllib.loads(Path(path).read_text())
    out, seen = [], set()
    for i, m in enumerate(spec.get('mutation', [])):
        missing = {'name', 'claim', 'file', 'old', 'new', 'tests'} - set(m)
        if missing: raise SystemExit(f"{path.name}: mutation #{i + 1} lacks {sorted(missing)}")
        if m['name'] in seen: raise SystemExit(f"{path.name}: two mutations named {m['name']!r}")
        if m['old'] == m['new']: raise SystemExit(f"{path.name}: mutation {m['name']!r} changes nothing")
        seen.add(m['name'])
        out.append(Mutation(**{k: m[k] for k in ('name', 'claim', 'file', 'old', 'new', 'tests')},
                            fast=bool(m.get('fast', False)), timeout=int(m.get('timeout', 300))))
    return out


# -- applying a mutation --------------------------------------------------------------------------------------------

def _cells(nb:dict) -> list[dict]:
    return [c for c in nb['cells'] if c['cell_type'] == 'code']


def occurrences(text:str, m:Mutation) -> int:
    "How often `m.old` occurs in the file's text (a notebook: summed over its code cells' sources)."
    if m.file.endswith('.ipynb'):
        return sum(''.join(c['source']).count(m.old) for c in _cells(json.loads(text)))
    return text.count(m.old)


def mutate(text:str, m:Mutation) -> str:
    "The file's text with `m.old` replaced by `m.new` (exactly one occurrence)."
    if not m.file.endswith('.ipynb'): return text.replace(m.old, m.new, 1)
    nb = json.loads(text)
    for c in _cells(nb):
        src = ''.join(c['source'])
        if m.old in src:
            c['source'] = src.replace(m.old, m.new, 1).splitlines(keepends=True)
            break
    return json.dumps(nb, indent=1, ensure_ascii=False) + '\n'


def check_stale(muts:list[Mutation], root:Path=ROOT) -> None:
    "Mark STALE every mutation whose `old` string is not found exactly once in its file, or whose tests do not exist."
    for m in muts:
        p = root/m.file
        n = occurrences(p.read_text(), m) if p.exists() else 0
        if n != 1:
            m.status, m.detail = 'STALE', (f'{m.file} not found' if not p.exists() else
                                           f"`old` found {n} times in {m.file} (must be exactly once)")
            continue
        for t in m.tests:
            f, _, name = t.partition('::')
            fp = root/f
            if not fp.exists() or (name and not re.search(rf'^(async\s+)?def {re.escape(name.split("[")[0])}\b', fp.read_text(), re.M)):
                m.status, m.detail = 'STALE', f'test {t} not found'
                break


# -- the scratch copy -----------------------------------------------------------------------------------------------

def scratch_copy(dest:Path, root:Path=ROOT) -> Path:
    "Copy the working tree's files (tracked, and untracked ones git does not ignore) into `dest`."
    files = subprocess.run(['git', 'ls-files', '-z', '-co', '--exclude-standard'], cwd=root, capture_output=True,
                           check=True).stdout.decode().split('\0')
    for f in filter(None, files):
        src = root/f
        if not src.is_file() or src.is_symlink() and not src.exists(): continue
        (dest/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest/f)
    return dest


def env_for(copy:Path) -> dict:
    "The environment of a test run in `copy`: its package first on the path, no bytecode written (a mutated file of the same size and second must not reuse a stale .pyc)."
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH',)}
    env.update(PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE='1', PYTHONHASHSEED='0', PYTHONUNBUFFERED='1')
    return env


def run_tests(copy:Path, tests:list[str], timeout:int, tag:str, first_failure:bool=True) -> tuple[str, dict, float, str]:
    "Run `tests` in `copy`: ('ok' | 'failed' | 'timeout' | 'error', {test: outcome}, seconds, output tail)."
    py = [t for t in tests if not t.endswith('.ipynb')]
    nbs = [t for t in tests if t.endswith('.ipynb')]
    outcomes, tails, t0 = {}, [], time.monotonic()
    env = env_for(copy)
    if py:
        xml = copy/f'.mutants-{tag}.xml'
        cmd = [sys.executable, '-m', 'pytest', '-q', *(['-x'] if first_failure else []), '-p', 'no:cacheprovider',
               '--no-header', '-rfEs', f'--junitxml={xml}', *py]
        try: r = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired: return 'timeout', outcomes, time.monotonic() - t0, ''
        tails.append((r.stdout + r.stderr)[-3000:])
        outcomes.update(_junit(xml))
        xml.unlink(missing_ok=True)
        if r.returncode != 0 and not any(v == 'failed' for v in outcomes.values()):
            return 'error', outcomes, time.monotonic() - t0, tails[-1]     # no test failed: collection error, nothing run
    for nb in nbs:
        left = max(1, timeout - (time.monotonic() - t0))
        cmd = [str(Path(sys.executable).parent/'nbdev-test'), '--path', nb, '--do_print']
        try: r = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired: return 'timeout', outcomes, time.monotonic() - t0, ''
        outcomes[nb] = 'passed' if r.returncode == 0 else 'failed'
        tails.append((r.stdout + r.stderr)[-3000:])
    status = 'failed' if any(v == 'failed' for v in outcomes.values()) else 'ok'
    return status, outcomes, time.monotonic() - t0, '\n'.join(tails)


def _junit(xml:Path) -> dict:
    "{nodeid-ish name: passed | failed | skipped} from a pytest junit file."
    if not xml.exists(): return {}
    out = {}
    for tc in ET.parse(xml).getroot().iter('testcase'):
        f = tc.get('file') or (tc.get('classname', '').replace('.', '/') + '.py')
        name = f"{f}::{tc.get('name')}"
        kids = {c.tag for c in tc}
        out[name] = 'failed' if kids & {'failure', 'error'} else 'skipped' if 'skipped' in kids else 'passed'
    return out


def _matches(test:str, outcome_key:str) -> bool:
    "Does a junit test name belong to the requested test (a file, or file::name, parametrized ids included)?"
    f, _, name = test.partition('::')
    of, _, oname = outcome_key.partition('::')
    return of == f and (not name or oname == name or oname.startswith(name + '['))


# -- the run --------------------------------------------------------------------------------------------------------

def table(muts:list[Mutation], show_claim:bool=False) -> str:
    rows = [('mutation', 'file', 'status', 'killed by', 's')]
    for m in muts:
        who = ', '.join(k.split('::')[-1] for k in m.killed_by) or (m.detail[:60] if m.status != 'KILLED' else '')
        rows.append((m.name, m.file.split('/')[-1], m.status or '-', who, f'{m.seconds:.0f}' if m.seconds else ''))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    fmt = lambda r: '  '.join(str(x).ljust(w[i]) for i, x in enumerate(r[:4])) + f'  {r[4]:>4}'
    lines = [fmt(rows[0]), '  '.join('-'*x for x in w) + '  ----', *map(fmt, rows[1:])]
    if show_claim: lines += [''] + [f'{m.name}: {m.claim}' for m in muts]
    return '\n'.join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--fast', action='store_true', help='only the mutations marked fast = true (the CI subset)')
    ap.add_argument('-k', dest='select', default='', help='only the mutations whose name contains this text')
    ap.add_argument('--list', action='store_true', help='print the mutations (and whether they are stale), run nothing')
    ap.add_argument('--spec', default=str(SPEC), help='the mutations file (default tests/mutations.toml)')
    ap.add_argument('--keep', action='store_true', help='keep the scratch copy (its path is printed)')
    ap.add_argument('--no-baseline', action='store_true', help='skip running the tests on the unchanged copy first')
    a = ap.parse_args(argv)
    muts = [m for m in load(Path(a.spec)) if (not a.fast or m.fast) and a.select in m.name]
    if not muts: print('mutants: no mutation selected'); return 1
    check_stale(muts)
    if a.list:
        print(table(muts, show_claim=True)); return 0
    live = [m for m in muts if m.status != 'STALE']
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix='posterlens-mutants-'))
    try:
        copy = scratch_copy(tmp/'repo')
        probe = subprocess.run([sys.executable, '-c', 'import posterlens, sys; print(posterlens.__file__)'], cwd=copy,
                               env=env_for(copy), capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(copy)):
            print(f'mutants: the scratch copy does not import its own package: {probe.stdout.strip() or probe.stderr.strip()}')
            return 1
        print(f'mutants: {len(muts)} mutations ({len(live)} to run) in a scratch copy {copy}', flush=True)
        if live and not a.no_baseline:
            tests = list(dict.fromkeys(t for m in live for t in m.tests))
            st, outcomes, secs, tail = run_tests(copy, tests, 60*30, 'baseline', first_failure=False)
            print(f'mutants: baseline, {len(tests)} tests on the unchanged copy: {st} in {secs:.0f} s', flush=True)
            for m in live:
                bad = [k for k, v in outcomes.items() if v != 'passed' and any(_matches(t, k) for t in m.tests)]
                bad += [t for t in m.tests if not t.endswith('.ipynb') and not any(_matches(t, k) for k in outcomes)] if st != 'timeout' else []
                if st in ('timeout', 'error') and not bad: bad = [f'baseline {st}']
                if bad: m.status, m.detail = 'BASELINE', f"unchanged code: {', '.join(f'{k} {outcomes.get(k, st)}' for k in bad)}"
            if st == 'error': print(tail)
        for m in [m for m in live if not m.status]:
            p = copy/m.file
            orig = p.read_text()
            try:
                new = mutate(orig, m)
                if m.file.endswith('.py'):
                    try: compile(new, str(p), 'exec')
                    except SyntaxError as e:
                        m.status, m.detail = 'INVALID', f'syntax error: {e}'; continue
                p.write_text(new)
                st, outcomes, m.seconds, tail = run_tests(copy, m.tests, m.timeout, m.name)
                m.killed_by = [k for k, v in outcomes.items() if v == 'failed']
                m.status = {'failed': 'KILLED', 'ok': 'SURVIVED', 'timeout': 'TIMEOUT', 'error': 'ERROR'}[st]
                if st == 'error': m.detail = tail.strip().splitlines()[-1][:120] if tail.strip() else 'pytest error'
            finally:
                p.write_text(orig)
            print(f'  {m.status:8s} {m.name} ({m.seconds:.0f} s)', flush=True)
    finally:
        if a.keep: print(f'mutants: scratch copy kept in {tmp}')
        else: shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(table(muts))
    killed = sum(m.status == 'KILLED' for m in muts)
    print(f'\nkill rate: {killed}/{len(muts)} = {killed/len(muts):.0%}'
          + (' (the --fast subset)' if a.fast else '') + f'; {time.monotonic() - t0:.0f} s')
    for m in muts:
        if m.status != 'KILLED': print(f'  {m.status}: {m.name}: {m.detail or m.claim}')
    return 0 if killed == len(muts) else 1


if __name__ == '__main__':
    sys.exit(main())
