"""Build the posterlens documentation site from the notebooks (`make docs`).

1. execute   every notebook (nbs/index.ipynb + nbs/NN_*.ipynb) with papermill into _proc/exec/. Notebooks
             with a `parameters` cell get `variant` (default: `default`, so the `## Analysis` sections show
             what the method finds on the known-answer data; `nbdev-test` keeps running `smoke`) and
             `overrides`. An executed copy is reused while the notebook, the parameters, the library
             (posterlens/), settings.ini and prompts/ are unchanged; the stages' own freshness checks reuse
             the artifacts in runs/<variant>/ (what `make demo` computed is reused). Notebooks run side by side
             (`--jobs`, default 2) wherever no two would compute the same stage (`schedule`); the home page
             runs last, as it quotes the model page's verdict. Kernel messages go to _proc/exec/NAME.kernel.log.
2. process   nbdev-style into _proc/site/: directive lines removed, `hide`/`exporti` cells dropped, `export`
             cells replaced by the API docs of the names nbdev documents (`nbdev.processors.add_show_docs`),
             rendered by Sphinx autodoc with a parameter table from fastcore's docments (docs/conf.py) and a
             link to the highlighted source; TeX in markdown as MathML (`posterlens.report.render_math`);
             cells that only check (`test_eq`, `assert`) collapsed; temp folders, local server URLs, the
             project's and the build's paths made relative in outputs; wide pandas tables with the
             finding's columns first and no NaN (`tidy_tables`); pages named like nbdev's (00_core.ipynb ->
             core.html) with readable titles; the settings reference generated from the schema
             (docs/schema.py) and the how-to guides of docs/howto/ added, each group in its own sidebar caption.
3. render    Sphinx + myst-nb (no execution) with docs/conf.py into _docs/: a static site that opens
             offline (no external JS/CSS).

    python docs/build.py                       # all notebooks in nbs/ -> _docs/ (variant `default`)
    python docs/build.py nbs/index.ipynb nbs/00_core.ipynb --out /tmp/site --proc /tmp/proc
    python docs/build.py --variant smoke       # quick: the tiny variant everywhere
    python docs/build.py --set epochs=1 --set folds=2    # a reduced default while iterating
    python docs/build.py --force               # re-execute every notebook
    python docs/build.py --jobs 1              # one notebook at a time
"""
from __future__ import annotations
import argparse, ast, contextlib, copy, hashlib, html, importlib, inspect, json, os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import nbformat
from fastcore.xtras import modified_env

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT/'docs'
LIB = 'posterlens'
EXEC_VERSION = '2'            # bump to invalidate every cached execution
IMAGE_EXT = {'.png', '.jpg', '.jpeg', '.gif', '.svg', '.webp'}
_re_num = re.compile(r'^\d+[a-zA-Z0-9]*_')

# Sidebar and page titles (nbdev's page names stay: core.html). A notebook not listed keeps its own title.
SETTINGS_PAGE = 'settings'    # the settings reference, generated from the schema
TITLES = {'index': 'posterlens', SETTINGS_PAGE: 'Settings reference', 'core': 'Settings, run folders, hashing', 'data': 'Data: CSV, images, synthetic posters',
          'describe': 'The offline describer', 'caption': 'Captioning images', 'vlm': 'Vision-language models',
          'model': 'The text regressor', 'pixels': 'The pixel baseline', 'explain': 'Explaining the predictions',
          'verify': 'Findings checked on the images', 'pipeline': 'The pipeline', 'report': 'Reports', 'cli': 'Command line'}

def log(*a): print('[docs]', *a, flush=True)

# ---------------------------------------------------------------------------------------------- discovery
def page_name(nb:Path) -> str:
    "nbdev's page name of a notebook: `00_core.ipynb` -> `core`, `02b_vlm.ipynb` -> `vlm`."
    return _re_num.sub('', nb.stem.lower())

def find_notebooks(nbs:Path) -> list[Path]:
    "index.ipynb first, then the numbered notebooks in file-name order."
    nums = sorted(p for p in nbs.glob('*.ipynb') if re.match(r'^\d', p.name))
    return [p for p in [nbs/'index.ipynb'] if p.exists()] + nums

def tst_flags() -> set[str]:
    "The nbdev `tst_flags` (cells carrying one are skipped by nbdev-test, so also when building docs)."
    try:
        import tomllib
        return set(str(tomllib.loads((ROOT/'pyproject.toml').read_text())['tool']['nbdev'].get('tst_flags', '')).split())
    except Exception: return set()

# ---------------------------------------------------------------------------------------------- directives
_re_dir = re.compile(r'^\s*#\s*\|\s*(.*?)\s*$')

def split_directives(src:str) -> tuple[dict, str]:
    "Leading `#| name args` / `#| key: value` lines of a code cell as a dict, and the rest of the source."
    lines, d = src.splitlines(), {}
    i = 0
    while i < len(lines):
        m = _re_dir.match(lines[i])
        if m and m.group(1):
            body = m.group(1)
            if ':' in body.split()[0]:
                k, v = body.split(':', 1)
                d[k.strip().lower()] = v.strip()
            else:
                k, *rest = body.split(None, 1)
                d[k.strip().lower()] = rest[0] if rest else ''
        elif lines[i].strip(): break
        i += 1
    rest = [l for l in lines[i:] if not re.search(r'#\s*\|\s*hide_line\s*$', l)]
    return d, '\n'.join(rest).strip('\n')

def _off(v) -> bool: return str(v).strip().lower() in ('false', 'no', '0')

def has_parameters(nb) -> bool:
    "Whether `nb` has a papermill `parameters` cell."
    return any('parameters' in c.get('metadata', {}).get('tags', []) for c in nb['cells'])

# ---------------------------------------------------------------------------------------------- 1. execute
def _lib_files() -> list[Path]:
    fs = sorted((ROOT/LIB).rglob('*.py'))
    fs += [ROOT/'settings.ini'] if (ROOT/'settings.ini').exists() else []
    fs += sorted(p for p in (ROOT/'prompts').rglob('*') if p.is_file()) if (ROOT/'prompts').exists() else []
    return fs

def lib_hash() -> str:
    h = hashlib.sha256()
    for f in _lib_files(): h.update(str(f.relative_to(ROOT)).encode() + b'\0' + f.read_bytes() + b'\0')
    return h.hexdigest()

def exec_key(nb:Path, lib_hash:str, params:dict|None=None) -> str:
    "Identity of an execution: the notebook's cells (not their outputs), the library's files, the parameters."
    cells = [(c['cell_type'], ''.join(c['source'])) for c in json.loads(nb.read_text())['cells']]
    return hashlib.sha256(json.dumps([EXEC_VERSION, lib_hash, params or {}, cells], sort_keys=True).encode()).hexdigest()

def _skip_for_exec(nb, flags):
    "Turn cells that nbdev-test skips (`#| eval: false`, tst_flags) into raw cells; return their indices."
    skipped = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != 'code': continue
        d, _ = split_directives(c.source)
        if _off(d.get('eval', 'true')) or (flags & set(d)):
            skipped.append(i)
            nb.cells[i] = nbformat.v4.new_raw_cell(c.source, metadata=c.metadata)
    return skipped

def _kernel_manager(log_file):
    "A kernel manager whose kernel writes its own messages (shutdown interrupts, C-level warnings) to `log_file`."
    from jupyter_client.manager import AsyncKernelManager
    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            return await super().start_kernel(**{**kw, 'stdout': log_file, 'stderr': log_file})
    return LoggedKernelManager

def execute(nb_path:Path, out:Path, cwd:Path, force=False, key_extra='', params:dict|None=None) -> Path:
    "Execute `nb_path` with papermill (`params` if it has a parameters cell) into `out`, unless a fresh copy is there."
    params = params if params and has_parameters(json.loads(nb_path.read_text())) else {}
    key = exec_key(nb_path, key_extra, params)
    stamp = out.with_suffix('.key')
    if not force and out.exists() and stamp.exists() and stamp.read_text() == key:
        log(f'{nb_path.name}: executed copy is fresh')
        return out
    import papermill as pm
    nb = nbformat.read(nb_path, as_version=4)
    skipped = _skip_for_exec(nb, tst_flags())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_in, tmp_out, klog = out.with_suffix('.in.ipynb'), out.with_suffix('.run.ipynb'), out.with_suffix('.kernel.log')
    nbformat.write(nb, tmp_in)
    t0 = time.time()
    log(f'{nb_path.name}: executing' + (f' with {params}' if params else '') + ' ...')
    try:
        with open(klog, 'w') as kf:
            pm.execute_notebook(str(tmp_in), str(tmp_out), parameters=params or None, cwd=str(cwd), kernel_name='python3', language='python',
                                progress_bar=False, log_output=False, request_save_on_cell_execute=False,
                                kernel_manager_class=_kernel_manager(kf))
    except Exception as e:
        failed = out.with_suffix('.failed.ipynb')
        if tmp_out.exists(): os.replace(tmp_out, failed)
        tail = klog.read_text()[-2000:] if klog.exists() else ''
        raise SystemExit(f'[docs] {nb_path.name} failed to execute (executed copy: {failed}):\n{e}'
                         + (f'\n[docs] kernel log ({klog}):\n{tail}' if tail.strip() else '')) from None
    finally:
        tmp_in.unlink(missing_ok=True)
    res = nbformat.read(tmp_out, as_version=4)
    for i in skipped:   # back to (unexecuted) code cells; papermill's injected cell comes after the parameters cell
        j = i + sum(1 for c in res.cells[:i+1] if 'injected-parameters' in c.metadata.get('tags', []))
        c = res.cells[j]
        res.cells[j] = nbformat.v4.new_code_cell(c.source, metadata={k: v for k, v in c.metadata.items() if k != 'papermill'})
    nbformat.write(res, tmp_out)
    os.replace(tmp_out, out)
    stamp.write_text(key)
    log(f'{nb_path.name}: executed in {time.time()-t0:.1f} s')
    return out

# ---------------------------------------------------------------------------------------------- 2. process
def _lib():
    "The library itself (imported by the processing step only: executing never imports it here)."
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
    return importlib.import_module(LIB)

class Symbols:
    "The library's public symbols, from nbdev's `_modidx` (what `nbdev-export` wrote)."
    def __init__(self):
        _lib()
        from posterlens._modidx import d
        self.full = {s for mod in d['syms'].values() for s in mod
                     if not any(p.startswith('_') for p in s.split('.')[2:])}
        self.short = {}
        for s in sorted(self.full):
            self.short.setdefault(s.split('.', 2)[2], []).append(s)
    def resolve(self, name:str, mod:str|None=None) -> str|None:
        "`name` (`f`, `Class.method` or `posterlens.mod.f`) as a full dotted name if the library exports it."
        if name in self.full: return name
        if mod and f'{mod}.{name}' in self.full: return f'{mod}.{name}'
        hits = self.short.get(name, [])
        return hits[0] if len(hits) == 1 else None

def documented_names(nb) -> dict[int, list[str]]:
    "{cell index: names} that nbdev's `add_show_docs` documents after each exported cell, in source order."
    from fastcore.nbio import dict2nb
    from nbdev.process import NBProcessor
    from nbdev.processors import add_show_docs
    d = dict2nb(json.loads(nbformat.writes(nb)))
    for i, c in enumerate(d.cells): c['_idx'] = i
    p = NBProcessor(nb=d, procs=[add_show_docs], rm_directives=False)
    p.process()
    out, cur = {}, None
    for c in p.nb.cells:
        if '_idx' in c: cur = c['_idx']; continue
        m = re.fullmatch(r'show_doc\((.+)\)', c.source.strip())
        if m: out.setdefault(cur, []).insert(0, m.group(1))     # nbdev inserts them in reverse order
    return out

def _obj(full:str):
    "The object named `full` (`posterlens.mod.Name` or `posterlens.mod.Class.method`), or None."
    parts = full.split('.')
    try: o = importlib.import_module('.'.join(parts[:2]))
    except ImportError: return None
    for p in parts[2:]:
        o = getattr(o, p, None)
        if o is None: return None
    return o

def _members(cls) -> list[str]:
    "Public methods and properties defined in `cls`'s body, in definition order (`@patch`ed ones have their own entry)."
    try: src, start = inspect.getsourcelines(cls)
    except (OSError, TypeError): return []
    def inside(v):
        f = v.fget if isinstance(v, property) else getattr(v, '__func__', v)
        try: return start <= inspect.getsourcelines(f)[1] < start + len(src)
        except (OSError, TypeError): return False
    return [k for k, v in cls.__dict__.items() if not k.startswith('_')
            and (inspect.isfunction(v) or isinstance(v, (classmethod, staticmethod, property))) and inside(v)]

def autodoc_cell(full:str) -> nbformat.NotebookNode|None:
    "A markdown cell that renders `full`'s API docs with autodoc (parameter table and source link: docs/conf.py)."
    o = _obj(full)
    if o is None: return None
    if inspect.isclass(o):
        lines = [f'.. autoclass:: {full}']
        if (ms := _members(o)): lines.append(f'   :members: {", ".join(ms)}')
    elif full.count('.') > 2 and inspect.isclass(_obj(full.rsplit('.', 1)[0])):
        lines = [f'.. auto{"property" if isinstance(inspect.getattr_static(_obj(full.rsplit(".", 1)[0]), full.rsplit(".", 1)[1]), property) else "method"}:: {full}']
    elif callable(o): lines = [f'.. autofunction:: {full}']
    else: lines = [f'.. autodata:: {full}']
    return nbformat.v4.new_markdown_cell('```{eval-rst}\n' + '\n'.join(lines) + '\n```', metadata={'posterlens_doc': full})

_re_fence = re.compile(r'^(```|~~~)')
_re_tick = re.compile(r'(?<![`{\w\[])`([A-Za-z_][\w.]*)(\([^`]*\))?`(?!`)')
_re_nblink = re.compile(r'\[([^\]\n]*)\]\((?:\./)?([\w-]+)\.(?:ipynb|html)(#[^)\s]*)?\)')

def linkify_md(src:str, syms:Symbols, mod:str|None, renames:dict[str,str], unbuilt:set[str]=frozenset()) -> str:
    """Backticked exported names become API links; links to notebooks (`00_core.ipynb`, `core.html`) go to
    their pages, and become plain text when that page exists but is not part of this (partial) build."""
    pages = set(renames.values())
    out, fenced = [], False
    for line in src.split('\n'):
        if _re_fence.match(line.strip()): fenced = not fenced
        if not fenced and not line.lstrip().startswith('#'):   # headings stay plain
            def tick(m):
                full = syms.resolve(m.group(1), mod)
                return f'{{py:obj}}`{m.group(1)}{m.group(2) or ""} <{full}>`' if full else m.group(0)
            def nblink(m):
                text, stem, frag = m.groups()
                new = renames.get(stem) or (stem if stem in pages else None)
                if new: return f'[{text}]({new}.ipynb{frag or ""})'
                return text if stem in unbuilt or page_name(Path(stem)) in unbuilt else m.group(0)
            line = _re_tick.sub(tick, line)
            line = _re_nblink.sub(nblink, line)
        out.append(line)
    return '\n'.join(out)

def default_exp(nb) -> str|None:
    for c in nb.cells:
        if c.cell_type == 'code':
            d, _ = split_directives(c.source)
            if 'default_exp' in d: return f'{LIB}.{d["default_exp"].split()[0]}'
    return None

_re_showdoc = re.compile(r'^\s*show_doc\(\s*([\w.]+)\s*\)\s*$')

def _is_check(n:ast.stmt) -> bool:
    "`assert`, a `test_*(...)` call, or a loop/with/if made of checks."
    if isinstance(n, ast.Assert): return True
    if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call):
        f = n.value.func
        return (f.id if isinstance(f, ast.Name) else getattr(f, 'attr', '')).startswith('test_')
    if isinstance(n, (ast.For, ast.With, ast.If)): return all(map(_is_check, n.body + getattr(n, 'orelse', [])))
    return False

def only_checks(src:str) -> bool:
    "Whether every statement of a code cell is a check (`assert`, `test_eq(...)`, loops of them)."
    try: tree = ast.parse(src)
    except SyntaxError: return False
    return bool(tree.body) and all(map(_is_check, tree.body))

_re_scaffold = re.compile(r'127\.0\.0\.1|\blocalhost\b|\bhttp\.server\b|\bFake[A-Z]\w*\(|\bserve_forever\b|\bmkdtemp\(|'
                          r'\bTemporaryDirectory\(|^\s*from fastcore\.test import', re.M)

def has_check(src:str) -> bool:
    "Whether a code cell checks anything (`assert`, `test_*(...)`) at any depth."
    try: tree = ast.parse(src)
    except SyntaxError: return False
    return any(isinstance(n, ast.Assert) or (isinstance(n, ast.Call) and
               (n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, 'attr', '')).startswith('test_'))
               for n in ast.walk(tree))

def check_cell(src:str, has_output:bool) -> bool:
    """Whether a code cell is a test whose code to collapse (its output stays in view): it checks something
    (`assert`, `test_eq(...)`, at any depth) or is test scaffolding (a temporary folder, a local test server or
    fake service, the test helpers' import). The cells that tell the story (no checks) stay open."""
    return only_checks(src) or has_check(src) or bool(_re_scaffold.search(src))

# --- outputs: readable and free of machine details
_re_ansi = re.compile(r'\x1B\[[0-?]*[ -/]*[@-~]')
_re_npscalar = re.compile(r'np\.(?:float|int|uint)\d*\(([-+\d.eE]+|nan|inf)\)')
_re_local = re.compile(r'(?:https?://)?(?:127\.0\.0\.1|\[::1\])(?::\d+)?')
LOCAL_URL = 'https://example.com'     # what a test server's address reads as: a reserved example domain
_TEXT_MIME = re.compile(r'^(text/|application/(json|javascript))')

class Scrubber:
    """Machine details in output text made relative or neutral: the project's and the build's folders become
    paths relative to them, a temporary folder disappears from its files' paths (`/tmp/tmpab12/dl/x.png` ->
    `dl/x.png`), a local server's URL becomes example.com, the home folder `~`; keys and tokens are scrubbed."""
    def __init__(self, paths:dict[str, str]):
        self.paths = sorted(((str(p).rstrip('/'), rep) for p, rep in paths.items()), key=lambda x: -len(x[0]))
        tmp = {re.escape(t.rstrip('/')) for t in {tempfile.gettempdir(), '/tmp', '/var/tmp'}}
        alt = '|'.join(sorted(tmp, key=len, reverse=True))
        self.re_tmp_file = re.compile(r'(?<![\w.~-])(?:' + alt + r')/[^/\s\'"<>`;,)\]]+/(?=[^\s\'"<>`;,)\]])')
        self.re_tmp = re.compile(r'(?<![\w.~-])(?:' + alt + r')(?:/[^/\s\'"<>`;,)\]]+|(?![\w.-]))/?')
    def __call__(self, text:str, markup=False) -> str:
        "`text` scrubbed (`markup`: HTML or markdown; kept for callers, the replacements need no escaping)."
        for p, rep in self.paths:          # `p/x` -> `rep` + `x`; `p` alone -> `rep` without its slash, or `.`
            text = re.sub(re.escape(p) + r'(/|(?![\w.-]))', lambda m: rep if m.group(1) else (rep.rstrip('/') or '.'), text)
        text = self.re_tmp_file.sub('', text)          # a file in a temporary folder: its path inside it
        text = self.re_tmp.sub('tmp/', text)            # the temporary folder itself
        text = _re_local.sub(LOCAL_URL, text)
        try:
            from posterlens.report import scrub
            text = scrub(text, home=None)          # keys and tokens (the home folder becomes ~)
        except ImportError: pass
        return text

# --- wide tables: the columns that carry a finding first, no NaN
FINDING_COLUMNS = ['factor', 'name', 'effect', 'effect_lo', 'effect_hi', 'interval', 'ci', '95% ci', 'q', 'p',
                   'significant', 'flag', 'direction']
_NAN = {'nan', '<na>', 'nat', 'none'}

def tidy_tables(markup:str, first:list[str]=FINDING_COLUMNS) -> str:
    """pandas HTML tables made readable in a page: the columns named in `first` (in that order) right after the
    index, empty cells instead of NaN, and long texts marked to wrap instead of widening the table."""
    if '<table' not in markup: return markup
    from bs4 import BeautifulSoup
    soup = BeautifulSoup(markup, 'html.parser')
    tables = soup.find_all('table')                 # pandas' own and Styler tables alike
    if not tables: return markup
    for t in tables:
        rows = t.find_all('tr')
        for td in t.find_all(['td']):
            if td.get_text(strip=True).lower() in _NAN: td.string = ''
            elif len(td.get_text(strip=True)) > 40: td['class'] = td.get('class', []) + ['wrap']
        if 'dataframe' not in (t.get('class') or []) and not t.get('id', '').startswith('T_'): continue
        head = t.thead.find_all('tr')[0] if t.thead else None
        if head is None or len(t.thead.find_all('tr')) != 1: continue          # a MultiIndex header: left as is
        names = [th.get_text(strip=True).lower() for th in head.find_all(['th', 'td'])]
        n_idx = len(t.tbody.find('tr').find_all('th')) if t.tbody and t.tbody.find('tr') else 0
        if any(len(r.find_all(['th', 'td'])) != len(names) for r in rows): continue   # spans: left as is
        cols = list(range(n_idx, len(names)))
        ranked = sorted((c for c in cols if names[c] in first), key=lambda c: first.index(names[c]))
        order = list(range(n_idx)) + ranked + [c for c in cols if c not in ranked]
        if order == list(range(len(names))): continue
        for r in rows:
            cells = r.find_all(['th', 'td'], recursive=False)
            for c in cells: c.extract()
            for k in order: r.append(cells[k])
    return str(soup)

_re_md_nan = re.compile(r'(?<=\|)\s*(?:nan|NaN|<NA>|None)\s*(?=\|)')

def clean_output(o, scrub:Scrubber|None=None):
    """Strip ANSI codes from streams and errors; repair numpy-2 scalar reprs in HTML (shap's text plot writes
    `rgba(np.float64(255.0), ...)`, which browsers ignore: shap issue #4146); scrub machine details."""
    scrub = scrub or (lambda t, markup=False: t)
    if o.get('output_type') == 'stream' and isinstance(o.get('text'), str): o['text'] = scrub(_re_ansi.sub('', o['text']))
    if o.get('output_type') == 'error':
        o['evalue'] = scrub(str(o.get('evalue', '')))
        o['traceback'] = [scrub(_re_ansi.sub('', t)) for t in o.get('traceback', [])]
    data = o.get('data', {})
    for mime, v in list(data.items()):
        if not _TEXT_MIME.match(mime) or mime == 'application/json': continue
        v = ''.join(v) if isinstance(v, list) else v
        if mime == 'text/html': v = tidy_tables(_re_npscalar.sub(r'\1', v))
        if mime == 'text/markdown': v = _re_md_nan.sub(' ', v)
        data[mime] = scrub(v, markup=mime in ('text/html', 'text/markdown'))

def _retitle(src:str, title:str, nb_file:str, mod:str|None) -> str:
    "The notebook's `# title` as the page's readable title, with where it comes from under the summary."
    lines = src.split('\n')
    if not lines or not lines[0].startswith('# '): return src
    lines[0] = f'# {title}'
    where = f'<p class="nb-origin">notebook <code>nbs/{nb_file}</code>' + (f' · module <code>{mod}</code>' if mod else '') + '</p>'
    k = 1
    while k < len(lines) and (not lines[k].strip() or lines[k].startswith('>')): k += 1
    return '\n'.join(lines[:k] + ([''] if lines[k-1].strip() else []) + [where, ''] + lines[k:]).rstrip('\n')

class Ctx:
    "What processing a page needs besides the notebook."
    def __init__(self, syms:Symbols, renames:dict[str,str], unbuilt:set[str]=frozenset(), scrub:Scrubber|None=None,
                 params:dict|None=None):
        self.syms, self.renames, self.unbuilt, self.scrub, self.params = syms, renames, unbuilt, scrub, params or {}

def _params_note(params:dict) -> str:
    v, o = params.get('variant'), params.get('overrides') or {}
    extra = f' with overrides `{json.dumps(o)}`' if o else ''
    return (f'This page was computed with the **`{v}`** variant{extra} (papermill parameters; what each setting means: '
            f'[settings reference]({SETTINGS_PAGE}.ipynb)); `nbdev-test` runs the same cells with the tiny `smoke` variant.')

def show_params(src:str, params:dict) -> str:
    "The parameters cell as the page ran it: each `name = value` line with papermill's value (comments kept)."
    def sub(m):
        k = m.group(2)
        if k not in params: return m.group(0)
        v = params[k]
        val = json.dumps(v) if isinstance(v, str) else repr(v)
        return f'{m.group(1)}{k} = {val}' + (f'{" " * max(1, len(m.group(3)) - len(val))}{m.group(4)}' if m.group(4) else '')
    return re.sub(r'^(\s*)(\w+)\s*=\s*([^#\n]*?\s*)(#.*)?$', sub, src, flags=re.M)

def process(nb, ctx:Ctx, nb_file:str='') -> nbformat.NotebookNode:
    "nbdev-style processing of an executed notebook for Sphinx/myst-nb."
    from posterlens.report import render_math
    nb = copy.deepcopy(nb)
    mod = default_exp(nb)
    docs = documented_names(nb)
    page = ctx.renames.get(Path(nb_file).stem, page_name(Path(nb_file))) if nb_file else None
    cells, first_md, params_hidden = [], True, False
    for i, c in enumerate(nb.cells):
        if c.cell_type == 'markdown':
            if first_md and page and page != 'index': c.source = _retitle(c.source, TITLES.get(page, c.source.split('\n')[0][2:]), nb_file, mod)
            first_md = False
            c.source = linkify_md(render_math(c.source), ctx.syms, mod, ctx.renames, ctx.unbuilt)
            cells.append(c); continue
        if c.cell_type != 'code': continue          # raw cells are not part of the story
        tags = set(c.metadata.get('tags', []))
        if 'injected-parameters' in tags:           # papermill's cell: say in words what the page ran with
            if ctx.params and not params_hidden: cells.append(nbformat.v4.new_markdown_cell(_params_note(ctx.params)))
            continue
        if 'parameters' in tags and ctx.params: c.source = show_params(c.source, ctx.params)
        d, src = split_directives(c.source)
        if 'parameters' in tags: params_hidden = 'hide' in d
        if {'hide', 'exporti', 'default_exp'} & set(d) or _off(d.get('include', 'true')) or 'remove-cell' in tags: continue
        targets = [a for full in (ctx.syms.resolve(n, mod) for n in docs.get(i, [])) if full
                   for a in [autodoc_cell(full)] if a is not None]
        if 'export' in d:                          # nbdev shows the API docs instead of the source
            cells.extend(targets); continue
        m = _re_showdoc.match(src)
        if m and '\n' not in src.strip():          # an explicit show_doc(X) cell
            full = ctx.syms.resolve(m.group(1), mod)
            if full and (a := autodoc_cell(full)): cells.append(a); continue
        if not src.strip() and not c.get('outputs'): continue
        c.source = src
        c.metadata.pop('papermill', None); c.metadata.pop('execution', None)
        if _off(d.get('echo', 'true')) or 'hide_input' in d: tags.add('remove-input')
        if _off(d.get('output', 'true')) or 'hide_output' in d: tags.add('remove-output')
        if 'remove-input' not in tags and check_cell(src, bool(c.get('outputs'))):   # tests stay one click away
            tags.add('hide-input')
            c.metadata['mystnb'] = {'code_prompt_show': 'Show the checks', 'code_prompt_hide': 'Hide the checks'}
            if not only_checks(src) and _re_scaffold.search(src):
                c.metadata['mystnb'] = {'code_prompt_show': 'Show the test set-up', 'code_prompt_hide': 'Hide the test set-up'}
        for o in c.get('outputs', []):
            clean_output(o, ctx.scrub)
            md_out = o.get('data', {}).get('text/markdown')
            if isinstance(md_out, str): o['data']['text/markdown'] = linkify_md(md_out, ctx.syms, mod, ctx.renames, ctx.unbuilt)
        if tags: c.metadata['tags'] = sorted(tags)
        cells.append(c)
        cells.extend(targets)
    nb.cells = cells
    nb.metadata.pop('papermill', None)
    set_source_map(nb)
    return nb

def set_source_map(nb):
    """Number the cells' lines consecutively for myst-nb. Without a `source_map` myst-nb puts cell i at line
    10,000*i, and myst pads every `eval-rst` block with that many blank lines: minutes per notebook."""
    starts, n = [], 0
    for c in nb.cells:
        starts.append(n)
        n += c.source.count('\n') + 2
    nb.metadata['source_map'] = starts

_re_img = re.compile(r'!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)|<img[^>]*\ssrc=["\']([^"\']+)["\']')

def image_refs(nb) -> list[str]:
    "Relative paths of the local images that the markdown cells of `nb` show."
    out = []
    for c in nb.cells:
        if c.cell_type != 'markdown': continue
        for m in _re_img.finditer(c.source):
            ref = (m.group(1) or m.group(2)).split('#')[0].split('?')[0]
            if re.match(r'^[a-z]+:', ref) or ref.startswith('/') or '..' in Path(ref).parts: continue
            if Path(ref).suffix.lower() in IMAGE_EXT: out.append(ref)
    return out

def write_if_changed(path:Path, text:str):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text: path.write_text(text)

def toctree(pages:list[str], nb_titles:dict[str,str], caption:str='Notebooks') -> str:
    "One group of the sidebar: `pages` in order, under readable titles."
    entries = [f'{TITLES.get(p) or nb_titles.get(p) or p} <{p}>' for p in pages]
    return f'```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n' + '\n'.join(entries) + '\n```'

def repository() -> str:
    "The repository's URL: `[project.urls] Repository` of pyproject.toml, the one place it is written."
    m = re.search(r'^\[project\.urls\][^\[]*?^Repository\s*=\s*"([^"]+)"', (ROOT/'pyproject.toml').read_text(), re.M | re.S)
    return m.group(1).rstrip('/') if m else ''

HOWTOS = DOCS/'howto'
HOWTO_ORDER = ['gemini', 'local-vlm', 'prompts']   # the sidebar's order; other pages in docs/howto/ follow by name

def howto_pages() -> list[Path]:
    "The how-to guides (docs/howto/*.md) in sidebar order."
    fs = sorted(HOWTOS.glob('*.md')) if HOWTOS.exists() else []
    return sorted(fs, key=lambda f: (HOWTO_ORDER.index(f.stem) if f.stem in HOWTO_ORDER else len(HOWTO_ORDER), f.stem))

def howto_text(f:Path) -> str:
    "A how-to page as the site shows it: `{{repository}}` filled in."
    return f.read_text().replace('{{repository}}', repository())

def settings_notebook() -> nbformat.NotebookNode:
    "The settings reference page, generated from the schema (docs/schema.py)."
    sys.path.insert(0, str(DOCS))
    try: from schema import settings_page
    finally: sys.path.remove(str(DOCS))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(settings_page())])
    set_source_map(nb)
    return nb

# ---------------------------------------------------------------------------------------------- build
_EXEC_ENV = {'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TQDM_DISABLE': '1', 'PYDEVD_DISABLE_FILE_VALIDATION': '1'}

def _code(nb_path:Path) -> str:
    return '\n'.join(c['source'] if isinstance(c['source'], str) else ''.join(c['source'])
                     for c in json.loads(nb_path.read_text())['cells'] if c['cell_type'] == 'code')

def stage_need(nb_path:Path, stages:list[str]) -> int:
    """How far along the pipeline a notebook's analysis reaches: the index in `stages` of the furthest stage it runs
    on its configuration (`run_stage(cfg, 'train')`; `run_stages(cfg)` or a stage named by a variable: the last
    one), -1 for none. Whatever it runs first runs every stage before it."""
    src, need = _code(nb_path), -1
    for m in re.finditer(r'\brun_stages?\(\s*cfg\b\s*(?:,\s*([^,)]*))?', src):
        arg = (m.group(1) or '').strip().strip('\'"')
        need = max(need, stages.index(arg) if arg in stages else len(stages) - 1)
    return need

def schedule(notebooks:list[Path], stages:list[str], jobs:int, run):
    """Call `run(notebook)` for every notebook, `jobs` at a time, so that no two compute the same stage: a notebook
    that reaches further along the pipeline than the ones finished so far (a *producer*) runs alone among
    producers, in notebook order; the others (stages already computed, or none) run beside it. The home page
    runs last: it quotes the others' results."""
    import threading
    need = {p: stage_need(p, stages) for p in notebooks if p.stem != 'index'}
    todo, done_level, producing, lock = list(need), -1, False, threading.Condition()
    def pick():
        nonlocal producing
        for p in todo:
            if need[p] <= done_level: todo.remove(p); return p, False
        first = next((p for p in todo if need[p] > done_level), None)
        if first is not None and not producing: todo.remove(first); producing = True; return first, True
        return None, False
    def worker():
        nonlocal done_level, producing
        while True:
            with lock:
                while True:
                    if not todo: return
                    p, prod = pick()
                    if p is not None: break
                    lock.wait()
            try: run(p)
            finally:
                with lock:
                    if prod: producing, done_level = False, max(done_level, need[p])
                    lock.notify_all()
    threads = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
    for t in threads: t.start()
    for t in threads: t.join()
    for p in notebooks:
        if p.stem == 'index': run(p)

def execute_all(notebooks:list[Path], proc:Path, cwd:Path, force=False, key_extra='', params=None, jobs=1) -> tuple[dict, list]:
    "Execute every notebook (`schedule`d `jobs` at a time); ({notebook: executed copy}, [failures])."
    _lib()
    from posterlens.pipeline import STAGES
    executed, failed = {}, []
    def run(p):                                    # run them all, so one build reports every failure
        extra = key_extra
        if p.stem == 'index':                      # the home page is fresh while every page it quotes is
            extra += hashlib.sha256(''.join(sorted((proc/'exec'/q.name).with_suffix('.key').read_text()
                                                   for q in executed if q.stem != 'index')).encode()).hexdigest()
        try: executed[p] = execute(p, proc/'exec'/p.name, cwd, force=force, key_extra=extra, params=params)
        except SystemExit as e: failed.append(str(e))
    with modified_env(**_EXEC_ENV): schedule(notebooks, list(STAGES), jobs, run)
    return {p: executed[p] for p in notebooks if p in executed}, failed

def build(notebooks:list[Path], proc:Path, out:Path, cwd:Path, force=False, strict=False,
          variant:str='default', overrides:dict|None=None, jobs:int=1) -> Path:
    "Execute, process and render `notebooks` into the static site `out`; returns `out`."
    t0 = time.time()
    notebooks = [Path(p).resolve() for p in notebooks]
    if not any(p.stem == 'index' for p in notebooks):
        raise SystemExit('[docs] the notebooks must include an index.ipynb (the home page)')
    site = proc/'site'
    lh = lib_hash()
    params = {'variant': variant, 'overrides': dict(overrides or {})}
    executed, failed = execute_all(notebooks, proc, cwd, force=force, key_extra=lh, params=params, jobs=jobs)
    if failed: raise SystemExit('\n\n'.join(failed) + f'\n[docs] {len(failed)} notebook(s) failed; no site built')
    t_exec = time.time()-t0
    renames = {p.stem: page_name(p) for p in notebooks}
    if len(set(renames.values())) != len(renames): raise SystemExit(f'[docs] two notebooks share a page name: {renames}')
    syms = Symbols()
    unbuilt = {page_name(p) for p in find_notebooks(ROOT/'nbs')} - set(renames.values())
    scrub = Scrubber({proc: '_proc/', out: '_docs/', ROOT: '', Path.home(): '~/'})
    written, pages, nb_titles = set(), [], {}
    for p, e in executed.items():
        enb = nbformat.read(e, as_version=4)
        ctx = Ctx(syms, renames, unbuilt, scrub, params if has_parameters(nbformat.read(p, as_version=4)) else None)
        nb = process(enb, ctx, p.name)
        name = renames[p.stem]
        first = next((c.source for c in enb.cells if c.cell_type == 'markdown'), '')
        if first.startswith('# '): nb_titles[name] = first.split('\n')[0][2:].strip()
        if name == 'index': index_nb = nb
        else:
            pages.append(name)
            write_if_changed(site/f'{name}.ipynb', nbformat.writes(nb)); written.add(f'{name}.ipynb')
    write_if_changed(site/f'{SETTINGS_PAGE}.ipynb', nbformat.writes(settings_notebook())); written.add(f'{SETTINGS_PAGE}.ipynb')
    howtos = []
    for f in howto_pages():
        name = f'howto-{f.stem}'
        write_if_changed(site/f'{name}.md', howto_text(f)); written.add(f'{name}.md'); howtos.append(name)
        nb_titles[name] = f.read_text().split('\n', 1)[0].lstrip('# ').strip()
    if howtos: index_nb.cells.append(nbformat.v4.new_markdown_cell(toctree(howtos, nb_titles, 'How-to guides')))
    index_nb.cells.append(nbformat.v4.new_markdown_cell(toctree([SETTINGS_PAGE], nb_titles, 'Reference')))
    if pages: index_nb.cells.append(nbformat.v4.new_markdown_cell(toctree(pages, nb_titles)))
    set_source_map(index_nb)
    write_if_changed(site/'index.ipynb', nbformat.writes(index_nb)); written.add('index.ipynb')
    for p in notebooks:                            # images that markdown cells refer to, by relative path
        for rel in image_refs(nbformat.read(p, as_version=4)):
            f, dst = p.parent/rel, site/rel
            if f.is_file():
                if not dst.exists() or dst.read_bytes() != f.read_bytes():
                    dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(f, dst)
                written.add(str(Path(rel)))
    for f in list(site.rglob('*')):                # pages of notebooks that are gone
        if f.is_file() and str(f.relative_to(site)) not in written: f.unlink()
    t1 = time.time()
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-c', str(DOCS), '-d', str(proc/'doctrees'), '-q',
           '--keep-going', str(site), str(out)]
    if strict: cmd.insert(-2, '-W')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
           'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    r = subprocess.run(cmd, cwd=ROOT, env=env)
    if r.returncode: raise SystemExit(f'[docs] sphinx-build failed ({r.returncode})')
    (out/'.nojekyll').touch()
    log(f'site: {out}/index.html  (execute {t_exec:.0f} s, render {time.time()-t1:.0f} s, total {time.time()-t0:.0f} s)')
    return out

def _override(s:str) -> tuple[str, object]:
    k, sep, v = s.partition('=')
    if not sep or not k.strip(): raise argparse.ArgumentTypeError(f'--set wants key=value, not {s!r}')
    try: v = ast.literal_eval(v)
    except (ValueError, SyntaxError): pass
    return k.strip(), v

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebooks', nargs='*', type=Path, help='notebooks to build (default: index + numbered ones in nbs/)')
    ap.add_argument('--nbs', type=Path, default=ROOT/'nbs', help='notebook folder (also the working directory of execution)')
    ap.add_argument('--proc', type=Path, default=ROOT/'_proc', help='build folder (executed and processed notebooks)')
    ap.add_argument('--out', type=Path, default=ROOT/'_docs', help='output folder of the static site')
    ap.add_argument('--variant', default='default', help='settings.ini variant the `## Analysis` sections run (default: default)')
    ap.add_argument('--set', dest='overrides', action='append', type=_override, default=[], metavar='KEY=VALUE',
                    help='override one setting of the variant (papermill `overrides`); repeatable')
    ap.add_argument('--force', action='store_true', help='re-execute every notebook')
    ap.add_argument('--strict', action='store_true', help='turn Sphinx warnings into errors')
    ap.add_argument('--jobs', type=int, default=int(os.environ.get('DOCS_JOBS', min(2, os.cpu_count() or 1))),
                    help='notebooks executed side by side, never two computing the same stage '
                         '(default: $DOCS_JOBS, else 2 or the number of CPUs if fewer)')
    a = ap.parse_args(argv)
    nbs = a.notebooks or find_notebooks(a.nbs)
    build(nbs, a.proc.resolve(), a.out.resolve(), a.nbs.resolve(), force=a.force, strict=a.strict,
          variant=a.variant, overrides=dict(a.overrides), jobs=a.jobs)

if __name__ == '__main__': main()
