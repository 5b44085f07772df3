"""Every benchmark in bench/ runs in its --smoke mode (tiny sizes, seconds) and writes its result; the README's
benchmark tables are the ones generated from bench/results/.

A benchmark is any bench/*.py whose name does not start with `_` (those are the shared helpers), so a script added
later is run here without anyone listing it; one without `--smoke`, or one that writes no result, fails.
"""
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT/'bench'
SCRIPTS = sorted(p.name for p in BENCH.glob('*.py') if not p.name.startswith('_'))
KEYS = {'bench', 'date', 'commit', 'machine', 'figures', 'table', 'skipped', 'smoke'}


def test_benchmarks_found():
    assert len(SCRIPTS) >= 10, SCRIPTS


@pytest.mark.parametrize('script', SCRIPTS)
def test_smoke(script, tmp_path):
    "The benchmark's --smoke run exits 0 and writes one result with the machine and its figures (or why it skipped)."
    env = {**os.environ, 'POSTERLENS_BENCH_RESULTS': str(tmp_path), 'TQDM_DISABLE': '1', 'HF_HUB_OFFLINE': '1'}
    p = subprocess.run([sys.executable, str(BENCH/script), '--smoke'], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    out = (p.stdout + p.stderr)[-4000:]
    assert p.returncode == 0, f"bench/{script} --smoke exited {p.returncode}:\n{out}"
    res = tmp_path/'smoke'/f'{Path(script).stem}.json'
    assert res.exists(), f"bench/{script} --smoke wrote no result {res.name} (bench/_results.write_result):\n{out}"
    r = json.loads(res.read_text())
    assert KEYS <= set(r), sorted(KEYS - set(r))
    assert r['smoke'] is True and r['bench'] == Path(script).stem
    assert r['machine']['cores'] >= 1 and 'gpu' in r['machine']
    assert r['skipped'] or r['figures'], f"bench/{script}: neither figures nor a reason for skipping"
    assert not list(tmp_path.glob('*.json')), "a smoke run wrote over the real results"


def test_readme_tables_current():
    "README.md's benchmark tables are exactly what bench/_readme_tables.py generates from bench/results/."
    p = subprocess.run([sys.executable, str(BENCH/'_readme_tables.py'), '--check'], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]


def test_readme_tables_follow_results(tmp_path):
    "A changed figure in a result changes the generated README table (the check can fail)."
    sys.path.insert(0, str(BENCH))
    try:
        from _readme_tables import render
        from _results import read_results
    finally: sys.path.remove(str(BENCH))
    text = (ROOT/'README.md').read_text()
    results = read_results()
    assert render(text, results) == text
    name = next(n for n, r in results.items() if r.get('table') and n != 'validity')
    results[name]['table'][0]['value'] = 'changed-figure-123'
    assert 'changed-figure-123' in render(text, results)
