"""The settings schema (`posterlens.core.Settings`) as a reader sees it: readable types and ranges, which stage's
identity each key is part of, and the settings reference page of the site. Used by docs/build.py (the page) and
docs/conf.py (the `Settings` entry of the API page), so both read the same way."""
from __future__ import annotations
import html, re, types, typing
from typing import Literal, Union

_NAMES = {str: 'text', int: 'integer', float: 'number', bool: 'True/False', type(None): 'empty'}
_OPS = {'ge': '≥', 'gt': '>', 'le': '≤', 'lt': '<'}

def readable_type(t) -> str:
    "A type annotation in words: `Optional[str]` -> 'text or empty', `list[int]` -> 'list of integers'."
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Annotated: return readable_type(args[0])
    if origin is Literal: return 'one of ' + ', '.join(f'`{a}`' for a in args) if len(args) > 1 else f'`{args[0]}`'
    if origin in (Union, types.UnionType):
        parts = [readable_type(a) for a in args if a is not type(None)]
        return ' or '.join(parts) + (' or empty' if type(None) in args else '')
    if origin in (list, tuple, set):
        inner = readable_type(args[0]) if args else 'values'
        return 'list of ' + {'text': 'texts', 'integer': 'integers', 'number': 'numbers'}.get(inner, inner)
    if t in _NAMES: return _NAMES[t]
    return getattr(t, '__name__', str(t).replace('typing.', ''))

def readable_range(field) -> str:
    "A pydantic field's bounds in words: '1 to 1000', '> 0', '≥ 0'."
    b = {op: getattr(m, op) for m in field.metadata for op in _OPS if getattr(m, op, None) is not None}
    lo = next(((op, b[op]) for op in ('ge', 'gt') if op in b), None)
    hi = next(((op, b[op]) for op in ('le', 'lt') if op in b), None)
    fmt = lambda v: f'{v:,}' if isinstance(v, int) and abs(v) >= 10_000 else str(v)
    if lo and hi and lo[0] == 'ge' and hi[0] == 'le': return f'{fmt(lo[1])} to {fmt(hi[1])}'
    return ', '.join(f'{_OPS[op]} {fmt(v)}' for op, v in (x for x in (lo, hi) if x))

def readable_default(v) -> str:
    "A default as it would be written in settings.ini (None: empty)."
    if v is None: return '(empty)'
    return str(v)

def stage_of_keys() -> dict[str, list[str]]:
    "{setting: names of the declared stages (posterlens.pipeline.STAGES) whose identity includes it}."
    from posterlens.pipeline import STAGES
    out = {}
    for name, st in STAGES.items():
        for k in st.keys: out.setdefault(k, []).append(name)
    return out

def fields():
    "The schema's fields, in declaration order."
    from posterlens.core import Settings
    return Settings.model_fields

def setting_anchor(key:str) -> str: return f'setting-{key.replace("_", "-")}'

def _md_code(s:str) -> str:
    "Markdown backticks in a help text as HTML <code> (the page's tables are HTML)."
    return re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(s, quote=False).replace('&#x27;', "'"))

def settings_page() -> str:
    """Markdown of the settings reference: every key of the schema with its help, type, range, default and the
    stages whose results depend on it, grouped by stage in pipeline order."""
    from posterlens.pipeline import STAGES
    fs, owners = fields(), stage_of_keys()
    groups: dict[str, list[str]] = {'run': [], **{name: [] for name in STAGES}}
    cur = 'run'                      # a key of no stage goes with the stage of the keys declared before it
    for k in fs:
        if k in owners: cur = owners[k][0]
        groups[owners[k][0] if k in owners else cur].append(k)
    out = ['# Settings reference', '',
           '> Every key of `settings.ini`: what it means, its type and range, its default and the stage it belongs to.', '',
           'posterlens finds `settings.ini` by walking up from the current folder (the first folder at or above it '
           'that has one is the project; relative paths in it are relative to that folder). `[analysis]` holds the '
           'defaults below, each `[variant:NAME]` section overrides some of them (and may `extends = OTHER`), and '
           '`--set key=value` on the command line or the papermill `overrides` parameter override single keys for one '
           'run. `posterlens settings --variant NAME` prints the values a variant resolves to.', '',
           'A stage reruns when one of *its* keys changes (they are part of its identity, `stage.json`); the keys of a '
           'later stage never invalidate an earlier one, so trying another text model reuses the paid-for captions.', '']
    heads = {'run': ('Run-wide', 'Where things go: these change no result.')}
    for name, st in STAGES.items(): heads[name] = (f'Stage `{name}`', st.help[0].upper() + st.help[1:] + '.')
    for g, keys in groups.items():
        if not keys: continue
        title, lead = heads[g]
        out += [f'## {title}', '', lead, '', '<table class="settings-ref">',
                '<thead><tr><th>setting</th><th>meaning</th><th>type</th><th>default</th></tr></thead><tbody>']
        for k in keys:
            f = fs[k]
            rng = readable_range(f)
            also = [s for s in owners.get(k, [])[1:]]
            extra = (f' <span class="also">(also part of {", ".join(also)})</span>' if also else
                     '' if k in owners or g == 'run' else ' <span class="also">(how, not what: changing it reruns nothing)</span>')
            out.append(f'<tr id="{setting_anchor(k)}"><td><code>{k}</code></td><td>{_md_code(f.description or "")}{extra}</td>'
                       f'<td>{_md_code(readable_type(f.annotation))}{"<br>" + html.escape(rng) if rng else ""}</td>'
                       f'<td><code>{html.escape(readable_default(f.default))}</code></td></tr>')
        out += ['</tbody></table>', '']
    return '\n'.join(out)
