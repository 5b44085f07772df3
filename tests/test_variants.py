"""`posterlens run --variant V --report` end to end for every captioning backend, each against a local fake that
speaks the real protocol: Gemini on the API-key route and on Vertex AI (OAuth2 credentials refreshed at a local
token endpoint that checks the service account's signed JWT), an OpenAI-compatible server, and a tiny random transformers model. 40 synthetic posters in an
IMDB-shaped CSV (Poster, Title, Rating, Genre, Year), a tiny text model so that training takes seconds."""
import json, os, re, subprocess, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_vertex import FakeVertex as FakeGemini  # noqa: E402  (FakeGemini + countTokens, as the real API serves)
from fake_openai import FakeOpenAI  # noqa: E402
from fake_gemini import synth_attributes  # noqa: E402
from test_vlm import GEMINI_ENV, tiny_git  # noqa: E402,F401  (the tiny GIT model fixture)

from posterlens.data import make_synth
from posterlens.model import tiny_text_model

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ('01_data', '02_caption', '02b_vlm', '03_model', '04_explain', '04c_verify', '05_report')
FAST = {'epochs': 1, 'folds': 2, 'fold_subset': [0], 'freeze_layers': 0, 'n_bootstrap': 100, 'explain_examples': 1,
        'token_max_evals': 60, 'max_segments': 5, 'max_length': 64, 'rpm': 6000, 'concurrency': 4, 'max_retries': 2,
        'pixel_baseline': False}   # the backends are what these tests vary; the pixel baseline has its own tests


@pytest.fixture(scope='session')
def imdb_csv(tmp_path_factory):
    "40 synthetic posters described by an IMDB-shaped CSV (local poster paths instead of URLs)."
    d = tmp_path_factory.mktemp('imdb')
    syn = pd.read_csv(make_synth(d/'synth', 40, seed=3))
    rng = np.random.default_rng(0)
    df = pd.DataFrame({'Poster': [str(d/'synth'/p) for p in syn.image], 'Title': syn.title, 'Rating': syn.target.round(1),
                       'Genre': rng.choice(['Drama', 'Comedy', 'Crime, Drama'], len(syn)), 'Year': rng.integers(1950, 2020, len(syn))})
    df.to_csv(d/'imdb.csv', index=False)
    return d/'imdb.csv'


@pytest.fixture(scope='session')
def tiny_bert(tmp_path_factory):
    return str(tiny_text_model(tmp_path_factory.mktemp('tiny-bert')))


class _Token(BaseHTTPRequestHandler):
    "An OAuth 2.0 token endpoint for service accounts (RFC 7523 JWT bearer grant), as google-auth calls oauth2.googleapis.com/token."
    key = None   # the service account's public key: the assertion must be signed with its private key
    def log_message(self, *a): pass
    def do_POST(self):
        from google.auth import jwt
        form = parse_qs(self.rfile.read(int(self.headers.get('Content-Length', 0))).decode())
        try:
            assert form.get('grant_type') == ['urn:ietf:params:oauth:grant-type:jwt-bearer']
            claims = jwt.decode(form['assertion'][0], certs=self.key, audience='https://oauth2.googleapis.com/token')
            assert claims['iss'] == 'posterlens-test@proj-1.iam.gserviceaccount.com'
            code, body = 200, {'access_token': 'ya29.test-access', 'expires_in': 3599, 'token_type': 'Bearer'}
        except Exception as e:
            code, body = 400, {'error': 'invalid_grant', 'error_description': f'Invalid JWT: {e}'}
        raw = json.dumps(body).encode()
        self.send_response(code); self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(raw))); self.end_headers(); self.wfile.write(raw)


@pytest.fixture
def service_account(tmp_path):
    "A service-account key file (as the Cloud console downloads it) whose token_uri is a local token endpoint."
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    srv = ThreadingHTTPServer(('127.0.0.1', 0), type('Token', (_Token,), {}))
    srv.RequestHandlerClass.key = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    srv.RequestHandlerClass.token_uri = f'http://127.0.0.1:{srv.server_address[1]}/token'
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    f = tmp_path/'sa.json'
    f.write_text(json.dumps({'type': 'service_account', 'project_id': 'proj-1', 'private_key_id': 'k1', 'private_key': pem,
                             'client_email': 'posterlens-test@proj-1.iam.gserviceaccount.com', 'client_id': '1',
                             'token_uri': srv.RequestHandlerClass.token_uri}))
    yield f
    srv.shutdown()


@pytest.fixture(scope='session')
def planted(imdb_csv):
    "{image sha256: planted attributes} of the IMDB-shaped CSV's posters: the fakes answer yes/no questions from them."
    return synth_attributes(imdb_csv.parent/'synth')


def caption_requests(fake) -> list:
    return [r for r in fake.requests if r.get('kind', 'caption') == 'caption']


def check_verify(tmp, variant, fake, env, **overrides):
    "The verify stage asked every held-out image once (plus the text-only requests: names, their checks, questions); a second run sends nothing."
    f = pd.read_parquet(Path(tmp)/'runs'/variant/'verify'/'findings.parquet')
    s = json.loads((Path(tmp)/'runs'/variant/'verify'/'summary.json').read_text())
    asked = [r for r in fake.requests if r.get('kind') == 'structured']
    # one per held-out image, one that writes the questions, one that names the concepts and one per name's fidelity check
    assert len(f) and s['predicates'] == len(f) and len(asked) == s['rows'] + 1 + s['naming_requests_sent'], (len(asked), s)
    assert s['naming_requests_sent'] == 1 + (f.name_source == 'model').sum() and (f.name_source == 'model').any(), s
    assert f.name_f1[f.name_source == 'model'].notna().all()
    assert (f.answered + f.failed == s['rows']).all() and f.answered.sum() > 0
    page = (Path(tmp)/'reports'/variant/'04c_verify.html').read_text()
    assert 'verified on the images' in page
    n = len(fake.requests)
    sets = {**FAST, 'runs_dir': f'{tmp}/runs', 'cache_dir': f'{tmp}/cache', 'reports_dir': f'{tmp}/reports', **overrides}
    cmd = [sys.executable, '-m', 'posterlens.cli', 'run', '--variant', variant, '-q']
    for k, v in sets.items(): cmd += ['--set', f'{k}={v!r}' if isinstance(v, str) else f'{k}={v}']
    base = {k: v for k, v in os.environ.items() if k not in GEMINI_ENV}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**base, **env}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(fake.requests) == n, fake.requests[n:]


def run_report(variant, tmp, env, **overrides):
    "`posterlens run --variant V --report` in a subprocess; (exit code, stdout, stderr)."
    sets = {**FAST, 'runs_dir': f'{tmp}/runs', 'cache_dir': f'{tmp}/cache', 'reports_dir': f'{tmp}/reports', **overrides}
    cmd = [sys.executable, '-m', 'posterlens.cli', 'run', '--variant', variant, '--report', '-q']
    for k, v in sets.items(): cmd += ['--set', f'{k}={v!r}' if isinstance(v, str) else f'{k}={v}']
    base = {k: v for k, v in os.environ.items() if k not in GEMINI_ENV}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**base, **env}, timeout=1500)
    return r.returncode, r.stdout, r.stderr


def check_reports(tmp, variant, captioner, secret=None):
    "Every stage's report was written, shows this variant's analysis, runs no test and leaks no secret."
    rep = Path(tmp)/'reports'/variant
    for n in REPORTS: assert (rep/f'{n}.html').stat().st_size > 5_000, n
    caps = pd.read_parquet(Path(tmp)/'runs'/variant/'caption'/'captions.parquet')
    assert len(caps) == 40 and caps.status.isin(['ok', 'truncated']).all() and (caps.backend == captioner).all(), caps.status.value_counts()
    for n in REPORTS:
        nb = json.loads((rep/f'{n}.ipynb').read_text())
        code = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
        assert not [c for c in code if re.search(r'^\s*(test_\w+\(|assert\b|#\|\s*export)', c, re.M)], n
        assert not [o for c in nb['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'error'], n
        page = (rep/f'{n}.html').read_text()
        if secret: assert secret not in page and secret not in (rep/f'{n}.ipynb').read_text(), n
    assert captioner in (rep/'02b_vlm.html').read_text()
    return rep


@pytest.mark.slow
def test_gemini_api_key_variant(tmp_path, imdb_csv, tiny_bert, planted):
    "Free-form captions (several wordings, filler, any order) with concepts as factors, through the real client and the reports."
    with FakeGemini(attributes=planted, flip=0.1, captions='freeform') as g:
        env = {'GEMINI_API_KEY': 'AIzaSyTEST-not-a-real-key-0123456789abcdef', 'GOOGLE_GEMINI_BASE_URL': g.url}
        kw = dict(dataset=str(imdb_csv), text_model=tiny_bert, factor_units='concepts')
        rc, out, err = run_report('imdb-gemini', tmp_path, env, **kw)
        assert rc == 0, err[-3000:]
        assert {r['route'] for r in g.requests} == {'apikey'} and g.duplicates() == 0
        check_verify(tmp_path, 'imdb-gemini', g, env, **kw)
    rep = check_reports(tmp_path, 'imdb-gemini', 'gemini', secret=env['GEMINI_API_KEY'])
    f = pd.read_parquet(tmp_path/'runs'/'imdb-gemini'/'explain'/'factors.parquet')
    assert {'name', 'sentences'} <= set(f.columns) and len(f), f.columns     # concepts, each with its segments
    caps = set(pd.read_parquet(tmp_path/'runs'/'imdb-gemini'/'caption'/'captions.parquet').caption)
    assert all(any(s in c for c in caps) for ss in f.sentences for s in ss)  # every member is a segment of some caption
    assert ' concepts, chosen by each fold' in (rep/'04_explain.html').read_text()
    assert 'groups of description segments that say the same thing' in (tmp_path/'reports'/'index.html').read_text()


@pytest.mark.slow
def test_gemini_vertex_variant(tmp_path, imdb_csv, tiny_bert, service_account, planted):
    with FakeGemini(attributes=planted) as g:
        env = {'GOOGLE_GENAI_USE_VERTEXAI': 'true', 'GOOGLE_CLOUD_PROJECT': 'proj-1', 'GOOGLE_CLOUD_LOCATION': 'us-central1',
               'GOOGLE_VERTEX_BASE_URL': g.url, 'GOOGLE_APPLICATION_CREDENTIALS': str(service_account)}
        rc, out, err = run_report('imdb-gemini', tmp_path, env, dataset=str(imdb_csv), text_model=tiny_bert)
        assert rc == 0, err[-3000:]
        assert {(r['route'], r['project'], r['location']) for r in g.requests} == {('vertex', 'proj-1', 'us-central1')}
        check_verify(tmp_path, 'imdb-gemini', g, env, dataset=str(imdb_csv), text_model=tiny_bert)
    check_reports(tmp_path, 'imdb-gemini', 'gemini', secret='ya29.test-access')


@pytest.mark.slow
def test_openai_variant(tmp_path, tiny_bert):
    synth = make_synth(tmp_path/'cache'/'synth'/'n40-s0', 40, 0).parent       # the run finds these posters in its cache
    with FakeOpenAI(attributes=synth_attributes(synth), rate_refusal=0.05, rate_not_json=0.05) as f:
        env = {'OPENAI_API_KEY': 'sk-test-0123456789abcdefghij'}
        rc, out, err = run_report('local-openai', tmp_path, env, openai_base_url=f.url + '/v1', synth_n=40, text_model=tiny_bert)
        assert rc == 0, err[-3000:]
        assert len(caption_requests(f)) == 40
        check_verify(tmp_path, 'local-openai', f, env, openai_base_url=f.url + '/v1', synth_n=40, text_model=tiny_bert)
    check_reports(tmp_path, 'local-openai', 'openai', secret='sk-test-0123456789abcdefghij')


@pytest.mark.slow
def test_transformers_variant(tmp_path, tiny_bert, tiny_git):
    rc, out, err = run_report('local-transformers', tmp_path, {'HF_HUB_OFFLINE': '1'}, caption_model=str(tiny_git),
                              max_output_tokens=8, synth_n=40, text_model=tiny_bert)
    assert rc == 0, err[-3000:]
    check_reports(tmp_path, 'local-transformers', 'transformers')


def test_vertex_refused_service_account_is_one_line(tmp_path, imdb_csv, service_account):
    "A service-account key that the token endpoint refuses (a key rotated away) stops the run at once, with one line."
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    info = json.loads(service_account.read_text())
    info['private_key'] = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    service_account.write_text(json.dumps(info))
    with FakeGemini() as g:
        env = {'GOOGLE_GENAI_USE_VERTEXAI': 'true', 'GOOGLE_CLOUD_PROJECT': 'proj-1', 'GOOGLE_CLOUD_LOCATION': 'us-central1',
               'GOOGLE_VERTEX_BASE_URL': g.url, 'GOOGLE_APPLICATION_CREDENTIALS': str(service_account)}
        base = {k: v for k, v in os.environ.items() if k not in GEMINI_ENV}
        r = subprocess.run([sys.executable, '-m', 'posterlens.cli', 'caption', '--variant', 'imdb-gemini', '-q',
                            '--set', f'dataset={imdb_csv}', '--set', f'runs_dir={tmp_path}/runs', '--set', f'cache_dir={tmp_path}/cache'],
                           capture_output=True, text=True, cwd=ROOT, env={**base, **env}, timeout=300)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert 'GOOGLE_APPLICATION_CREDENTIALS' in r.stderr and 'refused' in r.stderr, r.stderr
        assert g.requests == []
