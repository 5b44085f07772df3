# Sphinx configuration of the posterlens documentation site; run through `make docs` (docs/build.py),
# which writes the processed notebooks into _proc/site and renders them with this file.
import inspect, os, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import posterlens

project = 'posterlens'
author = 'posterlens developers'
copyright = 'posterlens developers'
release = version = posterlens.__version__

extensions = ['myst_nb', 'sphinx.ext.autodoc', 'sphinx.ext.linkcode']   # linkcode: [source] links to the repository's lines
root_doc = 'index'
exclude_patterns = ['_build', '**.ipynb_checkpoints', 'jupyter_execute']

# --- HTML: a static site that opens offline (furo ships its CSS/JS; nothing from a CDN)
html_theme = 'furo'
html_title = f'posterlens {release}'
html_static_path = [str(ROOT/'docs'/'_static')]
html_css_files = ['custom.css']
html_favicon = str(ROOT/'docs'/'_static'/'favicon.svg')
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
# The repository: `[project.urls] Repository` in pyproject.toml, the one place it is written; it feeds the navbar
# icon, the "report an issue" link of every page and the source links of the API entries.
_pyproject = (ROOT/'pyproject.toml').read_text()          # (read as text: tomllib is Python 3.11+)
REPOSITORY = re.search(r'^\[project\.urls\][^\[]*?^Repository\s*=\s*"([^"]+)"', _pyproject, re.M | re.S).group(1).rstrip('/')
BRANCH = (re.search(r'^\[tool\.nbdev\][^\[]*?^branch\s*=\s*"([^"]+)"', _pyproject, re.M | re.S) or [None, 'main'])[1]
html_theme_options = {'navigation_with_keys': True, 'top_of_page_buttons': [],
                      'footer_icons': [{'name': 'GitHub', 'url': REPOSITORY, 'class': '',
                                        'html': '<svg stroke="currentColor" fill="currentColor" stroke-width="0" viewBox="0 0 16 16"><path fill-rule="evenodd" d="M8 0C3.58 0 0 3.58 0 8c0 3.54 2.29 6.53 5.47 7.59.4.07.55-.17.55-.38 0-.19-.01-.82-.01-1.49-2.01.37-2.53-.49-2.69-.94-.09-.23-.48-.94-.82-1.13-.28-.15-.68-.52-.01-.53.63-.01 1.08.58 1.23.82.72 1.21 1.87.87 2.33.66.07-.52.28-.87.51-1.07-1.78-.2-3.64-.89-3.64-3.95 0-.87.31-1.59.82-2.15-.08-.2-.36-1.02.08-2.12 0 0 .67-.21 2.2.82.64-.18 1.32-.27 2-.27.68 0 1.36.09 2 .27 1.53-1.04 2.2-.82 2.2-.82.44 1.1.16 1.92.08 2.12.51.56.82 1.27.82 2.15 0 3.07-1.87 3.75-3.65 3.95.29.25.54.69.54 1.17 0 .85-.01 1.53-.01 1.82 0 .21.15.46.55.38A8.013 8.013 0 0016 8c0-4.42-3.58-8-8-8z"></path></svg>'}]}
html_context = {'repository': REPOSITORY}
html_sidebars = {'**': ['sidebar/brand.html', 'sidebar/search.html', 'sidebar/scroll-start.html', 'sidebar/navigation.html',
                        'sidebar/repo.html', 'sidebar/scroll-end.html']}

def linkcode_resolve(domain, info):
    "The [source] link of an API entry: its lines in the repository (the exported module nbdev wrote from the notebook)."
    if domain != 'py' or not info.get('module'): return None
    import importlib
    try:
        obj = importlib.import_module(info['module'])
        for part in info['fullname'].split('.'): obj = getattr(obj, part)
        obj = inspect.unwrap(getattr(obj, 'fget', obj))
        src, start = inspect.getsourcelines(obj)
        path = Path(inspect.getsourcefile(obj)).resolve().relative_to(ROOT)
    except Exception: return None
    return f'{REPOSITORY}/blob/{BRANCH}/{path}#L{start}-L{start + len(src) - 1}'
templates_path = [str(ROOT/'docs'/'_templates')]

# --- notebooks: already executed by docs/build.py
nb_execution_mode = 'off'
nb_output_stderr = 'remove'               # progress bars and warnings are not part of the story
nb_merge_streams = True
nb_render_markdown_format = 'myst'        # display(Markdown(...)) tables render
nb_ipywidgets_js = {}                     # no require.js / widget manager from a CDN
nb_mime_priority_overrides = [('html', 'application/vnd.jupyter.widget-view+json', None),
                              ('html', 'application/vnd.jupyter.widget-state+json', None)]
myst_enable_extensions = ['colon_fence', 'deflist']
myst_heading_anchors = 3
suppress_warnings = ['mystnb.unknown_mime_type', 'myst.header']

# --- API docs: signatures, one-line docstrings, and a parameter table (type, default, details) built from
# fastcore's docments, like nbdev's show_doc; viewcode links each entry to its highlighted source
autodoc_typehints = 'none'               # the types are in the parameter table
python_maximum_signature_line_length = 90
autodoc_member_order = 'bysource'
autodoc_default_options = {'exclude-members': '__weakref__, __dict__, __module__'}
autodoc_preserve_defaults = True
add_module_names = False
python_display_short_literal_types = True

_re_tick = re.compile(r'(?<![`:\w])`([^`\n]+)`(?![`_])')
_re_mdlink = re.compile(r'\[([^\]\n]+)\]\((https?://[^)\s]+)\)')

_re_code = re.compile(r'(``[^`]+``|:[\w:]+:`[^`]+`|`[^`]+ <[^>]+>`__)')

def md2rst(s:str) -> str:
    "The markdown of an nbdev docstring or docment as reST: `code`, [text](url), literal | and name_."
    s = _re_mdlink.sub(lambda m: f'`{m.group(1)} <{m.group(2)}>`__', s)
    def tick(m):
        t = m.group(1)
        if re.fullmatch(r'[A-Za-z_][\w.]*', t) and _exported(t): return f':py:obj:`{t}`'
        return f'``{t}``'
    s = _re_tick.sub(tick, s)
    # outside code: `|x|` is a substitution and `name_` a link target in reST, neither is meant here
    parts = _re_code.split(s)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r'(\w)_(?=\W|$)', r'\1\\_', parts[i].replace('|', '\\|'))
    return ''.join(parts)

def _exported(name:str) -> bool:
    head = name.split('.')[0]
    for mod in list(sys.modules):
        if mod == 'posterlens' or mod.startswith('posterlens.'):
            if head in getattr(sys.modules[mod], '__all__', ()): return True
    return False

def _literal(s:str) -> str:
    "Text as a reST inline literal (empty stays empty)."
    s = ' '.join(str(s).split())
    return f'``{s}``' if s else ''

def _anno(a) -> str:
    if a is inspect.Parameter.empty: return ''
    return a if isinstance(a, str) else inspect.formatannotation(a)

def _default(d) -> str:
    if d is inspect.Parameter.empty: return ''
    r = getattr(d, '__name__', None) if callable(d) else None
    r = r or repr(d)
    return r if len(r) <= 40 else r[:37] + '...'

def documented_callable(what:str, obj):
    "The function whose parameters document `obj` (a class's own Python `__init__`), or None."
    if what in ('function', 'method'): return obj if callable(obj) else None
    if what == 'class' and inspect.isfunction(getattr(obj, '__init__', None)): return obj
    return None

sys.path.insert(0, str(ROOT/'docs'))
import schema   # readable types and ranges of the settings schema, shared with the settings reference page

def model_rows(cls) -> list[list[str]]:
    "[name, type, default, details] of each field of a pydantic model, as the settings reference writes them."
    rows = []
    for nm, f in cls.model_fields.items():
        rng = schema.readable_range(f)
        typ = ' '.join(f'{schema.readable_type(f.annotation)}{", " + rng if rng else ""}'.replace('`', '').split())
        rows.append([_literal(nm), _literal(typ), _literal(schema.readable_default(f.default)), md2rst(' '.join((f.description or '').split()))])
    return rows

def param_rows(obj) -> tuple[list[list[str]], list[str]|None]:
    "(one [name, type, default, details] row per parameter, the returns row or None) of `obj`."
    if _is_schema(obj):                                                # a pydantic schema
        return model_rows(obj), None
    from fastcore.docments import docments
    sig = inspect.signature(obj)
    try: dm = docments(obj, full=True, args_kwargs=True)
    except Exception: dm = {}
    rows = []
    for nm, p in sig.parameters.items():
        if nm in ('self', 'cls'): continue
        star = '*' if p.kind == p.VAR_POSITIONAL else '**' if p.kind == p.VAR_KEYWORD else ''
        doc = (dm.get(nm) or {}).get('docment') or ''
        rows.append([_literal(star + nm), _literal(_anno(p.annotation)), _literal(_default(p.default)), md2rst(' '.join(doc.split()))])
    ret = (dm.get('return') or {}).get('docment') or ''
    ra = _anno(sig.return_annotation) if not inspect.isclass(obj) else ''
    return rows, (['**Returns**', _literal(ra), '', md2rst(' '.join(ret.split()))] if (ra or ret) else None)

def param_table(obj) -> list[str]:
    "reST lines of `obj`'s parameter table (nbdev's show_doc columns: type, default, details)."
    try: rows, ret = param_rows(obj)
    except (TypeError, ValueError): return []
    if not rows and not ret: return []
    out = ['.. list-table::', '   :header-rows: 1', '   :class: params', '']
    for r in [['Parameter', 'Type', 'Default', 'Details']] + rows + ([ret] if ret else []):
        out += [f'   * - {r[0] or chr(160)}'] + [f'     - {c or chr(160)}' for c in r[1:]]
    return out + ['']

def process_docstring(app, what, name, obj, options, lines):
    "Markdown docstrings to reST, then the parameter table."
    if what == 'module':                   # nbdev's 'Docs: <url>' line points at the published site itself
        lines[:] = [l for l in lines if not l.startswith('Docs: ')]
    lines[:] = [md2rst(l) for l in lines]
    target = documented_callable(what, obj)
    if target is None: return
    tbl = param_table(target)
    if _is_schema(obj) and (ROOT/'docs'/'schema.py').exists():
        lines += ['', 'Every key grouped by the stage it belongs to, with what changing it reruns: the :doc:`settings reference </settings>`.']
    if tbl:
        if lines and lines[-1].strip(): lines.append('')
        lines.extend(tbl)

def _is_schema(obj) -> bool: return inspect.isclass(obj) and hasattr(obj, 'model_fields') and hasattr(obj, 'model_validate')

def process_signature(app, what, name, obj, options, signature, return_annotation):
    "A pydantic schema's signature is every field: one line, `(**values)`, and the table below lists them."
    if what == 'class' and _is_schema(obj): return '(**values)', None

def setup(app):
    app.connect('autodoc-process-docstring', process_docstring)
    app.connect('autodoc-process-signature', process_signature)
