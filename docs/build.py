"""Build the posterlens documentation site from the notebooks (`make docs`).

1. execute   every notebook (nbs/index.ipynb + nbs/NN_*.ipynb) with papermill and its default
             (`smoke`) parameters into _proc/exec/; an executed copy is reused while the notebook,
             the library (posterlens/), settings.ini and prompts/ are unchanged.
2. process   nbdev-style into _proc/site/: directive lines removed, `hide`/`exporti` cells dropped,
             `export` cells replaced by their API docs (signature, docstring, docments), pages named
             like nbdev's (00_core.ipynb -> core.html), one API reference page per module (api/NAME).
3. render    Sphinx + myst-nb (no execution) with docs/conf.py into _docs/: a static site that opens
             offline (no external JS/CSS).

    python docs/build.py                       # all notebooks in nbs/ -> _docs/
    python docs/build.py nbs/index.ipynb nbs/00_core.ipynb --out /tmp/site --proc /tmp/proc
    python docs/build.py --force               # re-execute every notebook

This script only uses the standard library, nbformat, papermill and Sphinx: it never imports posterlens.
"""
from __future__ import annotations
import argparse, ast, copy, hashlib, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT/'docs'
LIB = 'posterlens'
EXEC_VERSION = '1'            # bump to invalidate every cached execution
IMAGE_EXT = {'.png', '.jpg', '.jpeg', '.gif', '.svg', '.webp'}
_re_num = re.compile(r'^\d+[a-zA-Z0-9]*_')

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

# ---------------------------------------------------------------------------------------------- 1. execute
def _lib_files() -> list[Path]:
    fs = sorted((ROOT/LIB).rglob('*.py'))
    fs += [ROOT/'settings.ini'] if (ROOT/'settings.ini').exists() else []
    fs += sorted(p for p in (ROOT/'prompts').rglob('*') if p.is_file()) if (ROOT/'prompts').exists() else []
    return fs

def exec_key(nb:Path, lib_hash:str) -> str:
    "Identity of an execution: the notebook's cells (not their outputs) plus the library's files."
    cells = [(c['cell_type'], ''.join(c['source'])) for c in json.loads(nb.read_text())['cells']]
    return hashlib.sha256(json.dumps([EXEC_VERSION, lib_hash, cells]).encode()).hexdigest()

def lib_hash() -> str:
    h = hashlib.sha256()
    for f in _lib_files(): h.update(str(f.relative_to(ROOT)).encode() + b'\0' + f.read_bytes() + b'\0')
    return h.hexdigest()

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

def execute(nb_path:Path, out:Path, cwd:Path, force=False, key_extra='') -> Path:
    "Execute `nb_path` with papermill (default parameters) into `out`, unless a fresh copy is there."
    key = exec_key(nb_path, key_extra)
    stamp = out.with_suffix('.key')
    if not force and out.exists() and stamp.exists() and stamp.read_text() == key:
        log(f'{nb_path.name}: executed copy is fresh')
        return out
    import papermill as pm
    nb = nbformat.read(nb_path, as_version=4)
    skipped = _skip_for_exec(nb, tst_flags())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_in, tmp_out = out.with_suffix('.in.ipynb'), out.with_suffix('.run.ipynb')
    nbformat.write(nb, tmp_in)
    t0 = time.time()
    log(f'{nb_path.name}: executing ...')
    env = {'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TQDM_DISABLE': '1', 'PYDEVD_DISABLE_FILE_VALIDATION': '1'}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pm.execute_notebook(str(tmp_in), str(tmp_out), cwd=str(cwd), kernel_name='python3', progress_bar=False,
                            log_output=False, request_save_on_cell_execute=False)
    except Exception as e:
        failed = out.with_suffix('.failed.ipynb')
        if tmp_out.exists(): os.replace(tmp_out, failed)
        raise SystemExit(f'[docs] {nb_path.name} failed to execute (executed copy: {failed}):\n{e}') from None
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
        tmp_in.unlink(missing_ok=True)
    res = nbformat.read(tmp_out, as_version=4)
    for i in skipped:   # back to (unexecuted) code cells
        c = res.cells[i]
        res.cells[i] = nbformat.v4.new_code_cell(c.source, metadata={k: v for k, v in c.metadata.items() if k != 'papermill'})
    nbformat.write(res, tmp_out)
    os.replace(tmp_out, out)
    stamp.write_text(key)
    log(f'{nb_path.name}: executed in {time.time()-t0:.1f} s')
    return out

# ---------------------------------------------------------------------------------------------- 2. process
def _modidx() -> dict:
    "posterlens/_modidx.py's symbol table (read, not imported)."
    p = ROOT/LIB/'_modidx.py'
    if not p.exists(): return {}
    tree = ast.parse(p.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == 'd':
            return ast.literal_eval(node.value).get('syms', {})
    return {}

def _module_all(mod:str) -> list[str]:
    "A module's `__all__`, read from its source."
    p = ROOT/Path(*mod.split('.')).with_suffix('.py')
    if not p.exists(): return []
    for node in ast.parse(p.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == '__all__':
            try: return list(ast.literal_eval(node.value))
            except ValueError: return []
    return []

class Symbols:
    "Which public names the library exports, and where."
    def __init__(self):
        self.syms = _modidx()
        self.full = {}                                  # short name -> full dotted name
        for mod in self.syms:
            for nm in _module_all(mod): self.full.setdefault(nm, f'{mod}.{nm}')
    def resolve(self, name:str, mod:str|None=None) -> str|None:
        "`name` (or `Class.method`) as a full dotted name if the library exports it."
        if name.startswith(LIB + '.'):
            m, _, nm = name.rpartition('.')
            if m in self.syms and nm in _module_all(m): return name
            m2, _, cls = m.rpartition('.')
            return name if m2 in self.syms and cls in _module_all(m2) else None
        head, _, tail = name.partition('.')
        if mod and head in _module_all(mod): full = f'{mod}.{head}'
        else: full = self.full.get(head)
        if not full: return None
        return f'{full}.{tail}' if tail else full

def _decorator_names(node):
    out = []
    for d in node.decorator_list:
        d = d.func if isinstance(d, ast.Call) else d
        out.append(d.attr if isinstance(d, ast.Attribute) else getattr(d, 'id', ''))
    return out

def _patched_class(node):
    "The class of a fastcore `@patch`ed function (annotation of its first argument)."
    if not node.args.args: return None
    a = node.args.args[0].annotation
    if isinstance(a, ast.Name): return a.id
    if isinstance(a, ast.Tuple) and a.elts and isinstance(a.elts[0], ast.Name): return a.elts[0].id
    if isinstance(a, ast.BinOp) and isinstance(a.left, ast.Name): return a.left.id
    if isinstance(a, ast.Constant) and isinstance(a.value, str): return a.value.split('|')[0].strip()
    return None

def doc_targets(src:str) -> list[tuple[str, str, list[str]]]:
    "(kind, name, members) for each public def/class of an exported cell, like nbdev's `add_show_docs`."
    try: tree = ast.parse(src)
    except SyntaxError: return []
    out = []
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            decs = _decorator_names(n)
            if 'patch' in decs or 'patch_to' in decs:
                cls = _patched_class(n)
                if cls and not n.name.startswith('_'): out.append(('method', f'{cls}.{n.name}', []))
            elif not n.name.startswith('_'): out.append(('function', n.name, []))
        elif isinstance(n, ast.ClassDef) and not n.name.startswith('_'):
            members = [m.name for m in n.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and not m.name.startswith('_')]
            out.append(('class', n.name, members))
    return out

def autodoc_cell(kind:str, full:str, members:list[str]) -> nbformat.NotebookNode:
    "A markdown cell rendering `full`'s API docs with autodoc (not indexed: the API reference page is)."
    lines = [f'.. auto{kind}:: {full}', '   :no-index:']
    if kind == 'class' and members: lines.append(f'   :members: {", ".join(members)}')
    return nbformat.v4.new_markdown_cell('```{eval-rst}\n' + '\n'.join(lines) + '\n```',
                                         metadata={'posterlens_doc': full})

_re_fence = re.compile(r'^(```|~~~)')
_re_tick = re.compile(r'(?<![`{\w\[])`([A-Za-z_][\w.]*)(\([^`]*\))?`(?!`)')
_re_nblink = re.compile(r'\[([^\]\n]*)\]\((?:\./)?([\w-]+)\.(?:ipynb|html)(#[^)\s]*)?\)')

# inline TeX ($...$) as HTML text: the site loads no MathJax (it would come from a CDN)
_TEX = {'phi': 'φ', 'varphi': 'φ', 'alpha': 'α', 'beta': 'β', 'gamma': 'γ', 'delta': 'δ', 'epsilon': 'ε',
        'lambda': 'λ', 'mu': 'μ', 'sigma': 'σ', 'rho': 'ρ', 'theta': 'θ', 'pi': 'π', 'tau': 'τ', 'Delta': 'Δ',
        'emptyset': '∅', 'varnothing': '∅', 'sum': '∑', 'prod': '∏', 'times': '×', 'cdot': '·', 'pm': '±',
        'le': '≤', 'leq': '≤', 'ge': '≥', 'geq': '≥', 'ne': '≠', 'neq': '≠', 'approx': '≈', 'infty': '∞',
        'in': '∈', 'notin': '∉', 'subseteq': '⊆', 'subset': '⊂', 'setminus': '∖', 'cup': '∪', 'cap': '∩',
        'ldots': '…', 'dots': '…', 'cdots': '⋯', 'to': '→', 'mid': '|', 'sim': '~', 'log': 'log', 'exp': 'exp',
        'min': 'min', 'max': 'max', 'quad': ' ', ',': '\u2009', ';': ' ', '!': '', '%': '%', 'ni': '∋',
        '{': '\x00', '}': '\x01'}
_re_math = re.compile(r'(?<![\\$])\$(?=\S)([^$\n]+?)(?<=\S)\$(?!\d)')

def tex_inline(tex:str) -> str|None:
    "Simple inline TeX as HTML (Greek, operators, \\bar, \\text, sub/superscripts); None if beyond that."
    arg = r'(?:\{([^{}]*)\}|(\\[A-Za-z]+|\S))'
    t = re.sub(r'\\(?:text|mathrm|mathit|operatorname)\{([^{}]*)\}', r'\1', tex)
    t = re.sub(r'\\not\s*\\(in|ni)\b', lambda m: {'in': '∉', 'ni': '∌'}[m.group(1)], t)
    t = re.sub(r'\\frac\{([^{}]*)\}\{([^{}]*)\}', lambda m: '/'.join(x if re.fullmatch(r'[\w.!]+', x) else f'({x})'
                                                                for x in m.groups()), t)
    t = re.sub(r'\\(bar|overline|hat|tilde)\s*' + arg, lambda m: (m.group(2) or m.group(3)) +
               {'bar': '\u0304', 'overline': '\u0304', 'hat': '\u0302', 'tilde': '\u0303'}[m.group(1)], t)
    t = re.sub(r'\\([A-Za-z]+|[,;!{}%])', lambda m: _TEX.get(m.group(1), m.group(0)), t)
    if '\\' in t: return None
    t = t.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')
    t = re.sub(r'([_^])' + arg, lambda m: f'<{"sub" if m.group(1) == "_" else "sup"}>{m.group(2) or m.group(3)}'
                                          f'</{"sub" if m.group(1) == "_" else "sup"}>', t)
    if re.search(r'[{}]', t): return None
    return '<span class="math">' + t.replace('\x00', '{').replace('\x01', '}') + '</span>'

def _outside_code(line:str, f) -> str:
    "Apply `f` to the parts of a markdown line that are not `code spans`."
    parts = re.split(r'(`+[^`]*`+)', line)
    return ''.join(p if i % 2 else f(p) for i, p in enumerate(parts))

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
            line = _outside_code(line, lambda p: _re_math.sub(lambda m: tex_inline(m.group(1)) or m.group(0), p))
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

_re_ansi = re.compile(r'\x1B\[[0-?]*[ -/]*[@-~]')
_re_npscalar = re.compile(r'np\.(?:float|int|uint)\d*\(([-+\d.eE]+|nan|inf)\)')

def clean_output(o):
    """Strip ANSI codes from streams; repair numpy-2 scalar reprs in HTML (shap's text plot writes
    `rgba(np.float64(255.0), ...)`, which browsers ignore: shap issue #4146)."""
    if o.get('output_type') == 'stream' and isinstance(o.get('text'), str): o['text'] = _re_ansi.sub('', o['text'])
    data = o.get('data', {})
    if 'text/html' in data:
        h = data['text/html']
        data['text/html'] = _re_npscalar.sub(r'\1', ''.join(h) if isinstance(h, list) else h)

def process(nb, syms:Symbols, renames:dict[str,str], unbuilt:set[str]=frozenset()) -> nbformat.NotebookNode:
    "nbdev-style processing of an executed notebook for Sphinx/myst-nb."
    nb = copy.deepcopy(nb)
    mod = default_exp(nb)
    cells = []
    for c in nb.cells:
        if c.cell_type == 'markdown':
            c.source = linkify_md(c.source, syms, mod, renames, unbuilt)
            cells.append(c); continue
        if c.cell_type != 'code': continue          # raw cells are not part of the story
        d, src = split_directives(c.source)
        tags = set(c.metadata.get('tags', []))
        if {'hide', 'exporti', 'default_exp'} & set(d) or _off(d.get('include', 'true')) or 'remove-cell' in tags: continue
        targets = []
        if {'export', 'exports'} & set(d):
            for kind, name, members in doc_targets(src):
                full = syms.resolve(name, mod)
                if full: targets.append(autodoc_cell(kind, full, members))
            if 'export' in d:                      # nbdev shows the API docs instead of the source
                cells.extend(targets); continue
        m = _re_showdoc.match(src)
        if m and '\n' not in src.strip():          # an explicit show_doc(X) cell
            full = syms.resolve(m.group(1), mod)
            if full:
                last = m.group(1).split('.')[-1]
                kind = 'method' if '.' in m.group(1) else 'class' if last[:1].isupper() else 'function'
                cells.append(autodoc_cell(kind, full, [])); continue
        if not src.strip() and not c.get('outputs'): continue
        c.source = src
        c.metadata.pop('papermill', None); c.metadata.pop('execution', None)
        if _off(d.get('echo', 'true')) or 'hide_input' in d: tags.add('remove-input')
        if _off(d.get('output', 'true')) or 'hide_output' in d: tags.add('remove-output')
        for o in c.get('outputs', []): clean_output(o)
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

def api_page(mod:str, page:str|None) -> str:
    "MyST source of the API reference page of `mod`."
    short = mod.split('.', 1)[1]
    back = f'\nNarrative and examples: [{short}](../{page}.ipynb).\n' if page else ''
    return (f'# {mod}\n{back}\n```{{eval-rst}}\n.. automodule:: {mod}\n   :members:\n   :undoc-members:\n'
            f'   :member-order: bysource\n```\n')

def write_if_changed(path:Path, text:str):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text: path.write_text(text)

# ---------------------------------------------------------------------------------------------- build
def build(notebooks:list[Path], proc:Path, out:Path, cwd:Path, force=False, strict=False) -> Path:
    "Execute, process and render `notebooks` into the static site `out`; returns `out`."
    t0 = time.time()
    notebooks = [Path(p).resolve() for p in notebooks]
    if not any(p.stem == 'index' for p in notebooks):
        raise SystemExit('[docs] the notebooks must include an index.ipynb (the home page)')
    site = proc/'site'
    lh = lib_hash()
    executed, failed = {}, []
    for p in notebooks:                            # run them all, so one build reports every failure
        try: executed[p] = execute(p, proc/'exec'/p.name, cwd, force=force, key_extra=lh)
        except SystemExit as e: failed.append(str(e))
    if failed: raise SystemExit('\n\n'.join(failed) + f'\n[docs] {len(failed)} notebook(s) failed; no site built')
    t_exec = time.time()-t0
    renames = {p.stem: page_name(p) for p in notebooks}
    if len(set(renames.values())) != len(renames): raise SystemExit(f'[docs] two notebooks share a page name: {renames}')
    syms = Symbols()
    unbuilt = {page_name(p) for p in find_notebooks(ROOT/'nbs')} - set(renames.values())
    written, pages, mods = set(), [], []
    for p, e in executed.items():
        nb = process(nbformat.read(e, as_version=4), syms, renames, unbuilt)
        name = renames[p.stem]
        mod = default_exp(nbformat.read(p, as_version=4))
        if name == 'index': index_nb = nb
        else:
            pages.append(name)
            if mod and mod not in [m for m, _ in mods]: mods.append((mod, name))
            write_if_changed(site/f'{name}.ipynb', nbformat.writes(nb)); written.add(f'{name}.ipynb')
    for mod, name in mods:
        write_if_changed(site/'api'/f'{mod.split(".", 1)[1]}.md', api_page(mod, name))
        written.add(f'api/{mod.split(".", 1)[1]}.md')
    toc = []
    if pages: toc.append('```{toctree}\n:caption: Notebooks\n:maxdepth: 1\n\n' + '\n'.join(pages) + '\n```')
    if mods: toc.append('```{toctree}\n:caption: API reference\n:maxdepth: 1\n\n' +
                        '\n'.join(f'api/{m.split(".", 1)[1]}' for m, _ in mods) + '\n```')
    index_nb.cells += [nbformat.v4.new_markdown_cell(t) for t in toc]
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

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebooks', nargs='*', type=Path, help='notebooks to build (default: index + numbered ones in nbs/)')
    ap.add_argument('--nbs', type=Path, default=ROOT/'nbs', help='notebook folder (also the working directory of execution)')
    ap.add_argument('--proc', type=Path, default=ROOT/'_proc', help='build folder (executed and processed notebooks)')
    ap.add_argument('--out', type=Path, default=ROOT/'_docs', help='output folder of the static site')
    ap.add_argument('--force', action='store_true', help='re-execute every notebook')
    ap.add_argument('--strict', action='store_true', help='turn Sphinx warnings into errors')
    a = ap.parse_args(argv)
    nbs = a.notebooks or find_notebooks(a.nbs)
    build(nbs, a.proc.resolve(), a.out.resolve(), a.nbs.resolve(), force=a.force, strict=a.strict)

if __name__ == '__main__': main()
