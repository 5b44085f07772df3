"""How the cost of an analysis grows with the number of posters: the same variant on synthetic posters at several sizes.

    .venv/bin/python bench/scale.py [--sizes 400,1600,6400] [--variant default] [--set KEY=VALUE ...]
                                    [--no-reports] [--profile STAGE] [--dir D] [--json PATH]
    .venv/bin/python bench/scale.py --smoke          # two tiny sizes and a tiny text model: seconds, not minutes

Each size runs in a fresh process (nothing cached in memory from another size; the caption cache and the run folders
are new), stage by stage as `posterlens run` does, then (unless --no-reports) the HTML reports. Printed per stage
and size: wall seconds, milliseconds per row, peak resident memory of that stage (VmHWM, reset before each stage),
the size of the stage's artifacts, and between consecutive sizes the growth exponent b of CPU time ~ n^b (1 = linear)
and the ratio of the per-row CPU costs (largest size / smallest). CPU seconds (of the process and, for the reports,
of the notebook kernels) are what is judged: on shared cores the wall time also measures the other work. The reports' total HTML size is printed the same way:
a report that embeds every caption or image grows with n, one that shows a fixed number of examples does not.
`--profile STAGE` also writes a cProfile of that stage at the largest size (top functions by cumulative time).

Timings on shared CPU cores vary from run to run: compare the figures of one run only. Exit status 0 when every
stage's per-row cost at the largest size is within 1.3x of that at the smallest (stages under a second at the
smallest size are too noisy to judge and are not counted). The figures are also written, size by size, to --json."""
import argparse, json, math, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 1.3        # per-row cost at the largest size / at the smallest
MIN_SECONDS = 1.0  # stages faster than this at the smallest size are not judged


def _hwm_kib() -> int:
    "Peak resident memory of this process since the last reset, KiB (VmHWM; ru_maxrss where /proc is absent)."
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('VmHWM:'): return int(line.split()[1])
    except OSError: pass
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _reset_hwm():
    "Start a new peak (Linux: writing 5 to clear_refs resets VmHWM to the current resident size)."
    try: Path('/proc/self/clear_refs').write_text('5')
    except OSError: pass


def _cpu_all() -> float:
    "CPU seconds of this process and of its finished children (the report notebooks' kernels)."
    import resource
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _du(p:Path) -> int:
    return sum(f.stat().st_size for f in Path(p).rglob('*') if f.is_file()) if Path(p).exists() else 0


def worker(n:int, variant:str, overrides:list[str], work:Path, reports:bool, profile:str|None) -> dict:
    "Run the stages (and reports) of `variant` at `synth_n = n` in this process; per stage: seconds, peak KiB, bytes."
    from posterlens.core import load_settings, run_dir
    from posterlens.pipeline import STAGES, run_stage, stage_dir
    from posterlens.report import report_variant
    ov = [*overrides, f'synth_n={n}', f'runs_dir={work}/runs', f'cache_dir={work}/cache', f'reports_dir={work}/reports']
    cfg = load_settings(variant, ov)
    out, done = {'n': n, 'variant': variant, 'overrides': overrides, 'stages': {}}, {}
    for name in STAGES:
        _reset_hwm()
        t0, c0 = time.perf_counter(), time.process_time()
        if profile == name:
            import cProfile, pstats, io
            pr = cProfile.Profile(); pr.enable()
            res = run_stage(cfg, name, progress=False, done=done)
            pr.disable()
            s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats('cumulative').print_stats(30)
            (work/f'profile-{name}-{n}.txt').write_text(s.getvalue())
            out['profile'] = str(work/f'profile-{name}-{n}.txt')
        else: res = run_stage(cfg, name, progress=False, done=done)
        out['stages'][name] = {'seconds': time.perf_counter() - t0, 'cpu_seconds': time.process_time() - c0,
                               'peak_kib': _hwm_kib(), 'bytes': _du(stage_dir(cfg, name))}
        if name == 'data': out['rows'] = len(res)
    if reports:
        _reset_hwm()
        t0, c0 = time.perf_counter(), _cpu_all()
        rep = report_variant(cfg, progress=False, index=False)
        html = sorted(rep.glob('*.html'))
        out['stages']['reports'] = {'seconds': time.perf_counter() - t0, 'cpu_seconds': _cpu_all() - c0, 'peak_kib': _hwm_kib(),
                                    'bytes': sum(f.stat().st_size for f in html),
                                    'pages': {f.stem: f.stat().st_size for f in html}}
    m = run_dir(cfg)/'model'/'metrics.json'
    if m.exists():
        m = json.loads(m.read_text())
        out['rmse'] = {k: m[k]['rmse'] for k in ('model', 'mean', 'tfidf') if k in m}
    s = run_dir(cfg)/'explain'/'summary.json'
    if s.exists():
        s = json.loads(s.read_text())
        out['recovery'] = s.get('recovery') if isinstance(s.get('recovery'), (str, int, float)) else s.get('recovery_text')
    return out


def run_size(n:int, a, work:Path) -> dict:
    "One size in a fresh process (`--worker`); its figures."
    cmd = [sys.executable, __file__, '--worker', str(n), '--variant', a.variant, '--dir', str(work),
           *(x for kv in a.overrides for x in ('--set', kv)), *(['--no-reports'] if a.no_reports else []),
           *(['--profile', a.profile] if a.profile and n == max(a.sizes) else [])]
    t0 = time.perf_counter()
    p = subprocess.run(['nice', '-n', str(a.nice), *cmd] if a.nice else cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode: sys.exit(f"size {n} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res['process_seconds'] = time.perf_counter() - t0
    return res


def exponent(t1, t2, n1, n2) -> float|None:
    return math.log(t2/t1)/math.log(n2/n1) if t1 > 0 and t2 > 0 and n2 != n1 else None


def table(results:list[dict]) -> tuple[list[str], list[str]]:
    "The printed table and the stages whose per-row CPU cost grew beyond LIMIT."
    sizes = [r['rows'] for r in results]
    stages = list(results[0]['stages'])
    W = 40
    head = f"{'stage':<9}" + ''.join(f"{f'n={n}':>{W}}" for n in sizes) + f"{'exponent b':>16}{'per-row ratio':>15}"
    sub = f"{'wall s':>8}{'CPU s':>8}{'CPU ms/row':>11}{'peak MiB':>9}{'MB':>6}"
    lines = [head, f"{'':<9}" + (' '*(W - len(sub)) + sub)*len(sizes) + f"{'(CPU)':>16}{'(CPU)':>15}", '-'*len(head)]
    grew = []
    for st in stages:
        cells, cs = '', []
        for r, n in zip(results, sizes):
            e = r['stages'][st]; c = e.get('cpu_seconds', e['seconds']); cs.append(c)
            cell = f"{e['seconds']:>8.1f}{c:>8.1f}{1000*c/n:>11.2f}{e['peak_kib']/1024:>9.0f}{e['bytes']/1e6:>6.1f}"
            cells += cell.rjust(W)
        bs = [exponent(cs[i], cs[i+1], sizes[i], sizes[i+1]) for i in range(len(cs) - 1)]
        ratio = (cs[-1]/sizes[-1])/(cs[0]/sizes[0]) if cs[0] > 0 and len(cs) > 1 else None
        judged = ratio is not None and cs[0] >= MIN_SECONDS
        if judged and ratio > LIMIT: grew.append(st)
        b = ' '.join('-' if x is None else f'{x:.2f}' for x in bs) or '-'
        lines.append(f"{st:<9}{cells}{b:>16}" + (f"{ratio:>14.2f}{'' if judged else '~'}" if ratio else f"{'-':>15}"))
    tw = [sum(e['seconds'] for e in r['stages'].values()) for r in results]
    tc = [sum(e.get('cpu_seconds', e['seconds']) for e in r['stages'].values()) for r in results]
    lines.append(f"{'total':<9}" + ''.join(f"{w:>8.1f}{c:>8.1f}{1000*c/n:>11.2f}".rjust(W - 15) + ' '*15 for w, c, n in zip(tw, tc, sizes)))
    if 'reports' in stages:
        lines.append('report pages (KB): ' + '; '.join(
            f"n={n}: " + ', '.join(f"{k} {v/1e3:.0f}" for k, v in r['stages']['reports']['pages'].items()) for r, n in zip(results, sizes)))
    return lines, grew


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', type=lambda s: [int(x) for x in s.split(',')], default=[400, 1600, 6400], help='comma-separated poster counts')
    ap.add_argument('--variant', default='default')
    ap.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE', help='override a setting at every size')
    ap.add_argument('--smoke', action='store_true', help='sizes 24,48 with a tiny random text model, 1 epoch, 2 folds, no reports')
    ap.add_argument('--no-reports', action='store_true', help='stages only (no papermill reports)')
    ap.add_argument('--profile', metavar='STAGE', help='cProfile this stage at the largest size (written next to the runs)')
    ap.add_argument('--nice', type=int, default=5, help='niceness of the size processes (0: none; default %(default)s)')
    ap.add_argument('--dir', help='work folder (default: a temporary one, removed)')
    ap.add_argument('--json', help='also write the figures here')
    ap.add_argument('--worker', type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.variant, a.overrides, Path(a.dir), not a.no_reports, a.profile)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(a.dir or tmp)
        if a.smoke:
            from posterlens.model import tiny_text_model
            if a.sizes == [400, 1600, 6400]: a.sizes = [24, 48]
            a.no_reports = True
            a.overrides = [f"text_model={tiny_text_model(base/'tiny-text-model')}", 'freeze_layers=0', 'epochs=1', 'folds=2',
                           'fold_subset=[0]', 'n_bootstrap=50', 'explain_examples=1', 'max_length=64', 'pixel_baseline=False',
                           'token_max_evals=50', 'max_segments=4', *a.overrides]
        results = []
        for n in sorted(a.sizes):
            print(f"n={n}: running {a.variant} ...", flush=True)
            results.append(run_size(n, a, base/f'n{n}'))
            r = results[-1]
            print(f"  {r['process_seconds']:.0f} s; " + ', '.join(f"{k} {v['seconds']:.1f} s" for k, v in r['stages'].items())
                  + (f"; CV RMSE {r['rmse']}" if r.get('rmse') else ''), flush=True)
            if a.json: Path(a.json).write_text(json.dumps({'variant': a.variant, 'cpus': os.cpu_count(), 'results': results}, indent=1))
        lines, grew = table(results)
        print(f"\n{a.variant} on synthetic posters ({', '.join(a.overrides) or 'its own settings'}), {os.cpu_count()} CPUs")
        print('\n'.join(lines))
        print(f"exponent b: time ~ n^b between consecutive sizes; per-row ratio: cost per row at n={results[-1]['rows']} "
              f"/ at n={results[0]['rows']} (~: under {MIN_SECONDS:.0f} s at the smallest size, not judged)")
        print(f"stages whose per-row cost grew more than {LIMIT}x: {', '.join(grew) or 'none'}")
        for r in results:
            if r.get('profile'): print(f"profile of {a.profile} at n={r['n']}:\n" + Path(r['profile']).read_text()[:6000])
        if a.json:
            Path(a.json).write_text(json.dumps({'variant': a.variant, 'cpus': os.cpu_count(), 'results': results, 'grew': grew}, indent=1))
        return 1 if grew else 0


if __name__ == '__main__':
    sys.exit(main())
