"""The documentation site (`make docs` = docs/build.py): notebook processing, the built pages, and the site
as a browser shows it (headless Chromium, served from 127.0.0.1).

The default suite builds a small site (nbs/index + nbs/00_core + a fixture notebook with a SHAP text plot,
a matplotlib figure and a markdown image) into a temporary folder; the `slow` test builds the full site
into _docs/ (cached executions make it quick after `make docs`)."""
import functools, html.parser, http.server, importlib.util, re, shutil, subprocess, sys, threading, time
import urllib.error, urllib.parse, urllib.request
from pathlib import Path

import pytest

pytest.importorskip('sphinx', reason='docs extras not installed: pip install -e ".[docs]"')
pytest.importorskip('myst_nb', reason='docs extras not installed: pip install -e ".[docs]"')
nbformat = pytest.importorskip('nbformat')

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location('docs_build', ROOT/'docs'/'build.py')
B = importlib.util.module_from_spec(spec); spec.loader.exec_module(B)

CHROMIUM, CHROMEDRIVER = shutil.which('chromium'), shutil.which('chromedriver')
try: import selenium  # noqa: F401
except ImportError: selenium = None
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER and selenium),
    reason='headless Chromium tests need `apt-get install chromium chromium-driver` and selenium (.[docs])')

# ------------------------------------------------------------------------------------------ processing units
def test_page_names_follow_nbdev():
    assert [B.page_name(Path(p)) for p in ['00_core.ipynb', '02b_vlm.ipynb', 'index.ipynb', '06_cli.ipynb']] == \
           ['core', 'vlm', 'index', 'cli']

def test_split_directives():
    d, src = B.split_directives('#| export\n#| echo: false\nx = 1  # not a directive\ny = 2 #| hide_line\n#| z')
    assert d == {'export': '', 'echo': 'false'}
    assert src == 'x = 1  # not a directive\n#| z'
    assert B.split_directives('#|default_exp core')[0] == {'default_exp': 'core'}

def test_doc_targets_like_nbdev():
    src = ('@patch\ndef predict(self:TextRegressor, x): ...\n'
           'class Foo:\n    "doc"\n    def bar(self): ...\n    def _private(self): ...\n'
           'def _helper(): ...\ndef stage(cfg): ...\nCONST = 3\n')
    assert B.doc_targets(src) == [('method', 'TextRegressor.predict', []), ('class', 'Foo', ['bar']),
                                  ('function', 'stage', [])]
    assert B.doc_targets('%time x = 1') == []            # magics: nothing to document

def test_linkify_markdown():
    syms = B.Symbols()
    ren = {'00_core': 'core'}
    out = B.linkify_md('Use `load_settings` and `cfg.x`; see [core](00_core.ipynb), [m](model.html).\n'
                       '```\n`load_settings`\n```', syms, 'posterlens.core', ren, unbuilt={'model'})
    assert '{py:obj}`load_settings <posterlens.core.load_settings>`' in out
    assert '`cfg.x`' in out and '[core](core.ipynb)' in out
    assert 'see [core](core.ipynb), m.' in out             # a page left out of a partial build: plain text
    assert out.endswith('```\n`load_settings`\n```')       # code blocks untouched
    assert '[x](nowhere.html)' in B.linkify_md('[x](nowhere.html)', syms, None, ren)   # broken stays visible
    assert B.linkify_md('## `load_settings`', syms, None, ren) == '## `load_settings`'   # headings stay plain

def test_inline_tex_without_mathjax():
    md = lambda t: B.linkify_md(t, B.Symbols(), None, {})
    assert md('on all $2^k$ sub-texts') == 'on all <span class="math">2<sup>k</sup></span> sub-texts'
    assert md(r'$\sum_i \phi_i = v(\text{all}) - v(\emptyset)$') == \
        '<span class="math">∑<sub>i</sub> φ<sub>i</sub> = v(all) - v(∅)</span>'
    assert md(r'$\bar f$') == '<span class="math">f\u0304</span>'
    assert md('costs $5 and $10') == 'costs $5 and $10'                    # money is not math
    assert md(r'$\frac{|S|!}{k!}\,[v(S\cup\{i\})]$') == '<span class="math">(|S|!)/k!\u2009[v(S∪{i})]</span>'
    assert md(r'$\sqrt{x}$') == r'$\sqrt{x}$'                          # beyond the simple subset: left as is
    assert md('`$x$` and $x$') == '`$x$` and <span class="math">x</span>'  # code spans untouched

def test_clean_output_repairs_shap_colours():
    o = {'output_type': 'display_data', 'data': {'text/html': 'background: rgba(np.float64(255.0), np.float64(13.0), '
                                                              'np.float64(87.0), np.float64(0.5)); x=np.int64(-3)'}}
    B.clean_output(o)
    assert o['data']['text/html'] == 'background: rgba(255.0, 13.0, 87.0, 0.5); x=-3'

def test_exec_key_ignores_outputs_not_sources(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1+1')])
    p = tmp_path/'a.ipynb'; nbformat.write(nb, p)
    k = B.exec_key(p, 'lib')
    nb.cells[0].outputs = [nbformat.v4.new_output('execute_result', {'text/plain': '2'}, execution_count=1)]
    nbformat.write(nb, p)
    assert B.exec_key(p, 'lib') == k
    assert B.exec_key(p, 'lib2') != k
    nb.cells[0].source = '1+2'; nbformat.write(nb, p)
    assert B.exec_key(p, 'lib') != k

# ------------------------------------------------------------------------------------------ a small site
SHAP_SRC = '''ex = shap.Explanation(values=np.array([0.6, -0.7, 0.4]), base_values=6.0,
    data=np.array(['The image is dark. ', 'The composition is busy and cluttered. ', 'Cool blue tones dominate.'], dtype=object))
shap.plots.text(ex)'''

def make_fixture(d:Path) -> Path:
    "A notebook page with what the stage notebooks show: a SHAP text plot, a figure, a markdown image."
    from PIL import Image, ImageDraw
    (d/'images').mkdir(parents=True)
    im = Image.new('RGB', (120, 180), (20, 30, 80)); ImageDraw.Draw(im).rectangle([10, 130, 110, 170], fill=(240, 200, 40))
    im.save(d/'images'/'poster.png')
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [
        nbformat.v4.new_markdown_cell('# plots\n\n> A fixture page.\n\nSee [core](00_core.ipynb) and `load_settings`.\n\n'
                                      '![a poster](images/poster.png)'),
        nbformat.v4.new_code_cell('#| hide\nimport numpy as np, shap, matplotlib.pyplot as plt\nHIDDEN_MARKER = 1'),
        nbformat.v4.new_code_cell(SHAP_SRC),
        nbformat.v4.new_code_cell("fig, ax = plt.subplots(figsize=(4, 3))\nax.barh(['dark', 'cluttered'], [0.6, -0.7])\nplt.show()"),
        nbformat.v4.new_code_cell('#| echo: false\nprint("ECHO" + "LESS output")'),
        nbformat.v4.new_code_cell('#| eval: false\nraise RuntimeError("NEVER" + "RUN")'),
    ]
    p = d/'90_plots.ipynb'; nbformat.write(nb, p)
    return p

def run_build(args, timeout=900):
    r = subprocess.run([sys.executable, str(ROOT/'docs'/'build.py'), *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f'docs build failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}'
    return r

@pytest.fixture(scope='module')
def mini_site(tmp_path_factory):
    d = tmp_path_factory.mktemp('docs')
    fx = make_fixture(d/'nbs')
    run_build([ROOT/'nbs'/'index.ipynb', ROOT/'nbs'/'00_core.ipynb', fx, '--proc', d/'proc', '--out', d/'site'])
    return d/'site'

def page(site, name): return (site/name).read_text()

def test_site_has_nbdev_named_pages_and_api(mini_site):
    for p in ['index.html', 'core.html', 'plots.html', 'api/core.html', '_images']: assert (mini_site/p).exists(), p
    assert not (mini_site/'00_core.html').exists()
    assert (mini_site/'.nojekyll').exists()

def test_narrative_shows_api_docs_and_hides_directives(mini_site):
    import posterlens.core as core
    core_html = page(mini_site, 'core.html')
    for nm in core.__all__:                                # every exported name is documented in its notebook
        assert re.search(rf'<span class="sig-name descname"><span class="pre">{nm}</span>', core_html), nm
    assert 'The run configuration of' in core_html        # docstring
    assert 'single keys to override on top' in core_html  # docments comment
    assert 'test_eq' in core_html                          # the tests stay as examples
    for s in ['#| export', '#| hide', 'default_exp', 'def load_settings']: assert s not in core_html, s
    plots = page(mini_site, 'plots.html')
    assert 'HIDDEN_MARKER' not in plots                    # `#| hide` cell dropped
    assert 'ECHOLESS output' in plots and 'ECHO" + "LESS' not in plots   # echo: false keeps only the output
    assert 'NEVER' in plots and 'RuntimeError: NEVERRUN' not in plots    # eval: false shown, not executed
    assert 'np.float64' not in plots

def test_api_reference_page(mini_site):
    import posterlens.core as core
    api = page(mini_site, 'api/core.html')
    for nm in core.__all__: assert f'id="posterlens.core.{nm}"' in api, nm
    assert 'where to start looking (default: cwd)' in api  # docments of find_root
    assert 'href="../core.html"' in api                    # back to the narrative
    assert '_atomic' not in api                            # private helpers are not API

def test_links_to_api_and_pages(mini_site):
    plots = page(mini_site, 'plots.html')
    assert 'href="api/core.html#posterlens.core.load_settings"' in plots
    assert 'href="core.html"' in plots

class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(); self.refs = []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ('script', 'img', 'iframe') and a.get('src'): self.refs.append((tag, a['src']))
        if tag == 'link' and a.get('href'): self.refs.append((tag, a['href']))

def external_assets(site:Path) -> list[str]:
    "Scripts, stylesheets, images or frames that a page would load from another host."
    bad = []
    for f in site.rglob('*.html'):
        p = _Refs(); p.feed(f.read_text())
        bad += [f'{f.relative_to(site)}: {t} {u}' for t, u in p.refs if re.match(r'^(https?:)?//', u)]
    return bad

def test_site_needs_no_network(mini_site):
    assert external_assets(mini_site) == []

# ------------------------------------------------------------------------------------------ in the browser
@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
              '--disable-background-networking', '--disable-component-update', '--disable-sync',
              '--disable-dev-shm-usage', '--window-size=1280,1600',
              f'--user-data-dir={tmp_path_factory.mktemp("chromium")}']: o.add_argument(a)
    o.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
    d.set_page_load_timeout(60)
    yield d
    d.quit()

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass

def serve(site:Path):
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f'http://127.0.0.1:{srv.server_port}/'

def status(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r: return r.status
    except urllib.error.HTTPError as e: return e.code

PAGE_JS = '''return {
  ready: document.readyState,
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  badImgs: Array.from(document.querySelectorAll('img')).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  nImgs: document.querySelectorAll('img').length,
  resources: performance.getEntriesByType('resource').map(r => r.name),
  text: document.body.innerText.length };'''

def check_site(site:Path, driver) -> dict:
    """Crawl the site from index.html in the browser: every page loads without console errors, every
    internal link (and #fragment) resolves, every image decodes, nothing is fetched from another host.
    Returns {page url: info}."""
    srv, base = serve(site)
    try:
        on_disk = {base + str(f.relative_to(site)) for f in site.rglob('*.html')}
        special = {base + p for p in ('genindex.html', 'py-modindex.html', 'search.html')}  # header/search form
        todo, seen, info, frag_links, problems = [base + 'index.html'], set(), {}, [], []
        while todo or (on_disk - seen):
            if not todo:                                      # the navigation is exhausted: load the rest
                missed = sorted(on_disk - seen - special)
                problems += [f'not reachable from the navigation: {u}' for u in missed]
                todo = sorted(on_disk - seen)
            url = todo.pop()
            if url in seen: continue
            seen.add(url)
            driver.get_log('browser')                         # drop earlier messages
            driver.get(url)
            for _ in range(50):
                if driver.execute_script('return document.readyState') == 'complete': break
                time.sleep(0.1)
            r = driver.execute_script(PAGE_JS)
            info[url] = r
            errs = [m['message'] for m in driver.get_log('browser') if m['level'] == 'SEVERE']
            problems += [f'{url}: console error {e}' for e in errs]
            problems += [f'{url}: image did not load {s}' for s in r['badImgs']]
            problems += [f'{url}: fetched from another host {u}' for u in r['resources'] if not u.startswith(base)]
            if r['text'] < 20: problems.append(f'{url}: page is empty')
            for link in r['links']:
                if not link.startswith(base): continue         # external links are not followed
                target, _, frag = link.partition('#')
                if frag: frag_links.append((url, target, urllib.parse.unquote(frag)))
                if target.endswith('.html') or target.endswith('/'):
                    if target not in seen: todo.append(target)
                elif status(target) != 200: problems.append(f'{url}: broken link {link}')
        for src, target, frag in frag_links:
            if target not in info: problems.append(f'{src}: link to a page that did not load {target}')
            elif frag not in info[target]['ids']: problems.append(f'{src}: no #{frag} on {target}')
        problems += [f'linked but missing: {u}' for u in sorted(seen - on_disk) if not u.endswith('/')]
        assert not problems, '\n'.join(problems[:40])
        return info
    finally: srv.shutdown()

SHAP_JS = '''const toks = Array.from(document.querySelectorAll('[id^="_tp_"]'));
const rects = Array.from(document.querySelectorAll('svg rect')).filter(r => r.closest('.cell_output'));
return {tokens: toks.length,
  coloured: toks.filter(t => { const c = getComputedStyle(t).backgroundColor; return c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent'; }).length,
  visible: toks.filter(t => t.textContent.trim() === '' || t.getBoundingClientRect().width > 0).length,  // [CLS]/[SEP] are ''
  bars: rects.length,
  colouredBars: rects.filter(r => { const f = getComputedStyle(r).fill; return f !== 'rgb(0, 0, 0)' && f !== 'none'; }).length};'''

def check_shap(driver, url) -> dict:
    "The SHAP text plot of a page rendered: token highlights with a real colour, coloured force-plot bars."
    driver.get(url)
    r = driver.execute_script(SHAP_JS)
    assert r['tokens'] > 0, f'{url}: no SHAP text plot'
    assert r['visible'] == r['tokens'] and r['coloured'] == r['tokens'], f'{url}: SHAP tokens not highlighted {r}'
    assert r['bars'] > 0 and r['colouredBars'] == r['bars'], f'{url}: SHAP force plot bars not coloured {r}'
    return r

def screenshot_stats(png:bytes) -> tuple[float, float]:
    "(grey-level standard deviation, share of non-white pixels) of a screenshot."
    import io
    import numpy as np
    from PIL import Image
    a = np.asarray(Image.open(io.BytesIO(png)).convert('L'), dtype=float)
    return float(a.std()), float((a < 235).mean())

def colour_pixels(png:bytes):
    "Counts of SHAP-red and SHAP-blue pixels in a screenshot."
    import io
    import numpy as np
    from PIL import Image
    a = np.asarray(Image.open(io.BytesIO(png)).convert('RGB')).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return int(((r > 200) & (g < 80) & (b > 40) & (b < 140)).sum()), int(((b > 200) & (r < 80) & (g > 100)).sum())

@needs_browser
def test_small_site_in_browser(mini_site, browser, tmp_path):
    info = check_site(mini_site, browser)
    pages = {u.rsplit('/', 1)[-1] for u in info}
    assert {'index.html', 'core.html', 'plots.html', 'search.html', 'genindex.html'} <= pages
    plots = next(u for u in info if u.endswith('/plots.html'))
    assert info[plots]['nImgs'] >= 2                        # the markdown image and the matplotlib figure
    srv, base = serve(mini_site)
    try:
        check_shap(browser, base + 'plots.html')
        png = browser.get_screenshot_as_png()
        (tmp_path/'plots.png').write_bytes(png)
        sd, ink = screenshot_stats(png)
        assert sd > 20 and ink > 0.03, f'the page screenshot looks blank (sd={sd:.1f}, ink={ink:.3f})'
        from selenium.webdriver.common.by import By
        out = browser.find_element(By.CSS_SELECTOR, '[id^="_tp_"]').find_element(By.XPATH, './ancestor::div[contains(@class, "cell_output")]')
        red, blue = colour_pixels(out.screenshot_as_png)
        assert red > 200 and blue > 200, f'SHAP plot lacks its red/blue colouring (red={red}, blue={blue})'
    finally: srv.shutdown()

# ------------------------------------------------------------------------------------------ the full site
@pytest.mark.slow
@needs_browser
def test_full_site(browser):
    "`make docs`' site (every notebook, smoke parameters) passes the same browser checks."
    run_build([])
    site = ROOT/'_docs'
    nbs = B.find_notebooks(ROOT/'nbs')
    for nb in nbs: assert (site/f'{B.page_name(nb)}.html').exists(), nb.name
    assert external_assets(site) == []
    info = check_site(site, browser)
    srv, base = serve(site)
    try:
        for nb in nbs:                                        # notebooks that draw SHAP text plots show them
            if 'shap.plots.text' in nb.read_text() or '_tp_' in (site/f'{B.page_name(nb)}.html').read_text():
                check_shap(browser, base + f'{B.page_name(nb)}.html')
        browser.get(base + 'core.html')
        sd, ink = screenshot_stats(browser.get_screenshot_as_png())
        assert sd > 20 and ink > 0.03
    finally: srv.shutdown()
    assert len(info) >= len(nbs)
