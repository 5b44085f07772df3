"""How much a variant's report executes: the whole stage notebook (every exported definition, test and demo cell,
then the Analysis section) against the report notebook (setup, parameters and the Analysis section only), both
run with papermill on the same fresh artifacts in one run. Prints executed code cells and seconds per notebook.

    .venv/bin/python bench/report_cells.py --variant default      # runs the stages first if they are not fresh
    .venv/bin/python bench/report_cells.py --smoke                # the data notebook of `smoke`, runs in a temporary folder
"""
import argparse, sys, tempfile, time
from pathlib import Path

import nbformat
import papermill as pm

from _results import write_result
from posterlens.core import load_settings
from posterlens.pipeline import run_stages
from posterlens.report import kernel_name, overrides_of, report_notebook, stage_notebooks


def execute(nb, cwd, params) -> tuple[int, float]:
    "Executed code cells and seconds of running `nb` with papermill."
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d)/'in.ipynb', Path(d)/'out.ipynb'
        nbformat.write(nb, src)
        t0 = time.perf_counter()
        pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=kernel_name(), cwd=str(cwd),
                            progress_bar=False, log_output=False, language='python')
        secs = time.perf_counter() - t0
        out = nbformat.read(dst, as_version=4)
    return sum(c.cell_type == 'code' and c.get('execution_count') is not None for c in out.cells), secs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--variant', default='default')
    ap.add_argument('--smoke', action='store_true', help="the `smoke` variant's data notebook only, runs in a temporary folder: seconds")
    a = ap.parse_args(argv)
    if a.smoke: a.variant = 'smoke'
    cfg = load_settings(a.variant, {'runs_dir': tempfile.mkdtemp(prefix='report-cells-')} if a.smoke else None)
    run_stages(cfg, ['data'] if a.smoke else None, progress=False)
    params = {'variant': cfg.variant, 'overrides': overrides_of(cfg)}
    rows = []
    for p in stage_notebooks(cfg)[:1 if a.smoke else None]:
        full = execute(nbformat.read(p, as_version=4), p.parent, params)
        rep = execute(report_notebook(p), p.parent, params)
        rows.append((p.stem, *full, *rep))
        print(f"{p.stem:12} whole notebook: {full[0]:4d} cells {full[1]:7.1f} s | report: {rep[0]:3d} cells {rep[1]:6.1f} s", flush=True)
    fc, fs, rc, rs = (sum(r[i] for r in rows) for i in (1, 2, 3, 4))
    print(f"{'total':12} whole notebook: {fc:4d} cells {fs:7.1f} s | report: {rc:3d} cells {rs:6.1f} s "
          f"| {fs/rs:.1f}x less time, {fc - rc} cells not executed")
    write_result('report_cells', {'variant': a.variant, 'notebooks': [dict(zip(['notebook', 'cells', 'seconds', 'report_cells',
                                                                               'report_seconds'], r)) for r in rows]},
                 [(f'`{a.variant}` report vs whole notebooks: code cells executed', f'{rc} vs {fc}'),
                  (f'`{a.variant}` report vs whole notebooks: seconds', f'{rs:.0f} vs {fs:.0f}')], smoke=a.smoke)


if __name__ == '__main__': sys.exit(main())
