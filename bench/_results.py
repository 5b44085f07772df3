"""One JSON result per benchmark under bench/results/: when and where it ran, and its figures.

Every script of bench/ ends with `write_result(...)`. A result holds

- `bench`, `date` (UTC), `commit` (with `-dirty` when the work tree differs), `argv`, `smoke`, `seconds`;
- `machine`: cores, CPU, memory, GPU (name, or null), python, torch; `load_average` (1 minute, at the end: other
  processes on the cores slow every timing);
- `figures`: the benchmark's own numbers (any JSON);
- `table`: rows `{"figure": ..., "value": ...}` (strings) that `bench/readme_tables.py` puts in the README;
- `skipped`: why the benchmark did not measure (no GPU, no network, missing data), else null.

`--smoke` runs (tiny sizes, what the tests run) write under `<results>/smoke/`, never over the real results.
POSTERLENS_BENCH_RESULTS moves the results folder (the tests point it at a temporary one).
"""
import json, os, platform, subprocess, sys, time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
_T0 = time.time()


def sample_dir() -> Path:
    "The real posters some developers keep beside the checkout (shared/data/posters-sample next to it or to a folder above it)."
    for d in ROOT.parents:
        if (d/'shared'/'data'/'posters-sample').is_dir(): return d/'shared'/'data'/'posters-sample'
    return ROOT.parent/'shared'/'data'/'posters-sample'


def results_dir(smoke:bool=False) -> Path:
    "Where results go: bench/results/ (POSTERLENS_BENCH_RESULTS overrides), smoke runs in its smoke/ subfolder."
    d = Path(os.environ.get('POSTERLENS_BENCH_RESULTS') or BENCH/'results')
    return d/'smoke' if smoke else d


def commit() -> str|None:
    "The checked-out commit, `-dirty` when tracked files differ from it (None outside a git checkout)."
    try:
        sha = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'diff', '--quiet', 'HEAD', '--', '.', ':!bench/results'], cwd=ROOT).returncode != 0
        return sha + ('-dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError): return None


def gpu_name() -> str|None:
    "The first CUDA device's name (torch, else nvidia-smi), None without one."
    try:
        import torch
        if torch.cuda.is_available(): return torch.cuda.get_device_name(0)
    except Exception: pass
    try:
        out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError): return None


def machine() -> dict:
    "Cores, CPU, memory and GPU of this machine, with the python and torch versions."
    cpu = platform.processor() or None
    try: cpu = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): pass
    try: mem = round(os.sysconf('SC_PAGE_SIZE')*os.sysconf('SC_PHYS_PAGES')/2**30, 1)
    except (ValueError, OSError, AttributeError): mem = None
    try:
        import torch; tv = torch.__version__
    except Exception: tv = None
    return {'cores': os.cpu_count(), 'cpu': cpu, 'memory_gib': mem, 'gpu': gpu_name(), 'python': platform.python_version(),
            'torch': tv, 'platform': platform.platform()}


def write_result(name:str, # the benchmark: its script's name without .py
                 figures:dict, # its numbers (JSON-serialisable)
                 table:list|None=None, # README rows: (figure, value) pairs or dicts
                 smoke:bool=False, # a --smoke run (written under smoke/)
                 skipped:str|None=None, # why nothing was measured
                 **extra) -> Path:
    "Write the benchmark's result file and say where; returns its path."
    rows = [r if isinstance(r, dict) else {'figure': str(r[0]), 'value': str(r[1])} for r in (table or [])]
    res = {'bench': name, 'date': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'commit': commit(),
           'argv': sys.argv[1:], 'smoke': bool(smoke), 'seconds': round(time.time() - _T0, 1), 'machine': machine(),
           'load_average': round(os.getloadavg()[0], 2) if hasattr(os, 'getloadavg') else None,
           'skipped': skipped, 'figures': figures, 'table': rows, **extra}
    d = results_dir(smoke)
    d.mkdir(parents=True, exist_ok=True)
    p = d/f'{name}.json'
    tmp = p.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(res, indent=1, default=_default) + '\n')
    tmp.replace(p)
    print(f"result: {p}" + (f" (skipped: {skipped})" if skipped else ''), flush=True)
    return p


def _default(o):
    if hasattr(o, 'item'): return o.item()          # numpy scalars
    if hasattr(o, 'tolist'): return o.tolist()      # numpy arrays
    if isinstance(o, Path): return str(o)
    return str(o)


def read_results(folder:Path|None=None) -> dict:
    "The latest result of every benchmark in `folder` (default bench/results/): name -> result."
    d = Path(folder) if folder else results_dir()
    return {p.stem: json.loads(p.read_text()) for p in sorted(d.glob('*.json'))}
