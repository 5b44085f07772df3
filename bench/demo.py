"""`make demo` on a fresh clone, timed stage by stage (install; data, caption, train, explain, reports).

    python3 bench/demo.py [--src .] [--rev HEAD] [--dir /tmp/x] [--keep] [--pip-cache] [--variant default]
                          [--make-args 'TORCH_SPEC=...'] [--smoke]

Clones the checkout at `--src` (its committed `--rev`) into a temporary folder, then runs, there,
`make install` (a new virtual environment: python3 -m venv, torch, the package) and `make demo` (the pipeline
and the reports), and prints one table. The pipeline's stages are cut where each stage writes its
`stage.json` (data, caption, model, explain under runs/<variant>/); the reports are what is left of the
`make demo` command. Wall seconds, CPU seconds of the child processes and the load average are shown per
phase: other processes on the machine slow every wall time, so the CPU seconds and the load say how quiet
the run was. By default pip runs without its download cache (as on a fresh machine); `--pip-cache` uses it.
The model and explanation figures of the run (CV RMSE of the model, the mean predictor and TF-IDF; the
permutation check; the planted-effect recovery) are printed under the table.

`--smoke` (seconds, what the tests run): the clone's pipeline through this interpreter (`python -m posterlens.cli
run --variant smoke` with a tiny random text model), no install and no reports."""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

from _results import write_result


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd:list[str], cwd:Path, env:dict, log:Path) -> tuple[float, float, int]:
    "Run `cmd`, its output appended to `log` with time stamps; (wall seconds, child CPU seconds, exit status)."
    t0, c0 = time.time(), cpu_children()
    with open(log, 'a') as f:
        f.write(f"$ {' '.join(cmd)}\n"); f.flush()
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in p.stdout: f.write(f"[{time.time() - t0:7.1f}] {line}")
        rc = p.wait()
    return time.time() - t0, cpu_children() - c0, rc


def stage_ends(runs:Path) -> dict[str, float]:
    "Modification time of each stage's `stage.json` (its end), for the stages that finished, named by their folder."
    return {f.parent.name: f.stat().st_mtime for f in runs.glob('*/stage.json')}


def figures(runs:Path) -> list[str]:
    "The run's headline figures: CV RMSE (model, mean, TF-IDF), the permutation check, planted recovery."
    lines = []
    m, s = runs/'model'/'metrics.json', runs/'explain'/'summary.json'
    if m.exists():
        m = json.loads(m.read_text())
        r = lambda k: f"{m[k]['rmse']:.4f} [{m[k]['ci'][0]:.3f}, {m[k]['ci'][1]:.3f}]"
        best = [v['best_epoch'] for v in m.get('history', {}).values()]
        eps = [len(v['history']) for v in m.get('history', {}).values()]
        lines += [f"CV RMSE: model {r('model')}, mean {r('mean')}, TF-IDF {r('tfidf')}; beats mean: {m.get('beats_mean')}",
                  f"epochs run per fold {eps}, best epoch {best}, {m.get('seconds_per_epoch') or 0:.1f} s per epoch, "
                  f"train stage {m.get('seconds') or 0:.0f} s"]
    if s.exists():
        s = json.loads(s.read_text())
        p, pl = s.get('permutation') or {}, s.get('planted') or {}
        lines += [f"factors {s['factors']['n']}, significant {s['factors']['significant']} (up {s['factors']['up']}, down {s['factors']['down']})",
                  f"permutation: chance CIs excluding 0 per permutation {p.get('chance_ci_excludes_0')}, "
                  f"null |mean| q95 {p.get('null_abs_mean_q95')}, settings {p.get('settings')}",
                  f"planted: found {pl.get('found')}/{pl.get('effects')}, sign agreement {pl.get('sign_agreement')}, "
                  f"Spearman |coef| vs |effect| {pl.get('spearman_abs')}",
                  f"explain seconds: {({k: round(v, 1) for k, v in (s.get('seconds') or {}).items()})}"]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--src', default=str(Path(__file__).resolve().parents[1]), help='checkout to clone')
    ap.add_argument('--rev', default='HEAD', help='commit to check out')
    ap.add_argument('--dir', default=None, help='folder for the clone (default: a new temporary folder)')
    ap.add_argument('--keep', action='store_true', help='keep the clone (with its .venv) afterwards')
    ap.add_argument('--pip-cache', action='store_true', help="let pip use its download cache (a fresh machine has none)")
    ap.add_argument('--variant', default='default')
    ap.add_argument('--make-args', default='', help='extra make arguments, e.g. "TORCH_SPEC=torch==2.13.0"')
    ap.add_argument('--smoke', action='store_true', help='the smoke variant with a tiny model, no install, no reports: seconds')
    a = ap.parse_args()
    base = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix='posterlens-demo-'))
    clone = base/'posterlens'
    if clone.exists(): shutil.rmtree(clone)
    subprocess.run(['git', 'clone', '-q', a.src, str(clone)], check=True)
    subprocess.run(['git', '-C', str(clone), 'checkout', '-q', a.rev], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'PYTHONPATH')}
    if not a.pip_cache: env['PIP_NO_CACHE_DIR'] = '1'
    log = base/'demo.log'
    print(f"clone: {clone} ({subprocess.run(['git', '-C', str(clone), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}); "
          f"log: {log}; {os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f}", flush=True)
    extra = a.make_args.split()
    rows = []
    l0 = os.getloadavg()[0]
    if a.smoke:
        a.variant = 'smoke'
        from posterlens.model import tiny_text_model
        tiny = tiny_text_model(base/'tiny-bert')
        env['PYTHONPATH'] = str(clone)
        demo = [sys.executable, '-m', 'posterlens.cli', 'run', '--variant', 'smoke', '--set', f'text_model={tiny}', '-q']
        rows.append(('install (not run)', 0.0, 0.0, l0, l0))
    else:
        w, c, rc = timed(['make', 'install', *extra], clone, env, log)
        rows.append(('install', w, c, l0, os.getloadavg()[0]))
        if rc:   # no package index (or PyTorch's) reachable here: say so in the result, not as a failure of the demo
            print(f"make install failed ({rc}); see {log}")
            write_result('demo', {'variant': a.variant, 'install_exit': rc, 'install_s': w}, smoke=a.smoke,
                         skipped=f"`make install` on a fresh clone failed (exit {rc}): no package index reachable? ({log})")
            return
        demo = ['make', 'demo', f'VARIANT={a.variant}', *extra]
    l0, t0, c0 = os.getloadavg()[0], time.time(), cpu_children()
    w, c, rc = timed(demo, clone, env, log)
    t1, l1 = time.time(), os.getloadavg()[0]
    if rc: print(f"make demo failed ({rc}); see {log}")
    ends, prev = stage_ends(clone/'runs'/a.variant), t0
    for name in sorted(ends, key=ends.get):     # every stage the run recorded, in the order they finished
        rows.append((name, ends[name] - prev, None, None, None)); prev = ends[name]
    rows.append(('reports', t1 - prev, None, None, None))
    rows.append(('pipeline (make demo)', w, c, l0, l1))
    total_w = rows[0][1] + w
    print(f"\n{'phase':<22}{'wall s':>9}{'CPU s':>9}{'load':>13}")
    for name, w_, c_, la, lb in rows:
        cpu = f"{c_:9.0f}" if c_ is not None else f"{'':>9}"
        load = f"{la:5.1f}->{lb:5.1f}" if la is not None else ''
        print(f"{name:<22}{w_:9.1f}{cpu}{load:>13}")
    print(f"{'total (install + demo)':<22}{total_w:9.1f}")
    print('\n' + '\n'.join(figures(clone/'runs'/a.variant)))
    write_result('demo', {'variant': a.variant, 'exit': rc, 'phases': [dict(zip(['phase', 'wall_s', 'cpu_s', 'load_start', 'load_end'], r))
                                                                       for r in rows], 'total_s': total_w, 'figures': figures(clone/'runs'/a.variant)},
                 [(f'`make demo` on a fresh clone ({a.variant}): ' + ', '.join(f'{r[0]} {r[1]:.0f} s' for r in rows[:-1]),
                   f'{total_w:.0f} s in all')], smoke=a.smoke)
    if rc: sys.exit(f"the pipeline failed ({rc}); see {log}")
    if not a.keep: shutil.rmtree(clone, ignore_errors=True)   # the log stays in `base`


if __name__ == '__main__': main()
