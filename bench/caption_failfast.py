"""How fast `posterlens caption` stops when the service refuses us or is not there, as a new user would meet it.

Runs the real command line (`python -m posterlens.cli caption`, default settings: concurrency 5, rpm 60,
max_retries 6) in a throw-away project on N synthetic posters, against the local fakes in tests/ answering as the
real services do, and prints for each case the exit status, the seconds until the command exited, the requests
the server received, the caption files written to the cache and the error line:

- Gemini API key route, wrong key: HTTP 400 INVALID_ARGUMENT, ErrorInfo reason API_KEY_INVALID;
- Gemini API, the API not enabled in the key's project: 403 PERMISSION_DENIED, reason SERVICE_DISABLED;
- Vertex AI, a revoked access token from GOOGLE_APPLICATION_CREDENTIALS: 401 UNAUTHENTICATED;
- Vertex AI, GOOGLE_APPLICATION_CREDENTIALS naming a missing file;
- Vertex AI, no permission in the project: 403 PERMISSION_DENIED, reason IAM_PERMISSION_DENIED;
- OpenAI-compatible server, wrong key: 401 invalid_api_key;
- nothing listening at the Gemini base URL (GOOGLE_GEMINI_BASE_URL) or at openai_base_url;
- a host name that does not resolve (openai_base_url).

Targets: a credential error exits non-zero in under 10 s after at most `concurrency` requests; an unreachable
service exits non-zero in under 30 s; nothing is recorded in the cache in any case.

Usage: .venv/bin/python bench/caption_failfast.py [--n 299] [--smoke]
"""
from __future__ import annotations
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))
from fake_gemini import FakeGemini  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402
from _results import write_result  # noqa: E402

CLEAN = ('GEMINI_API_KEY', 'GOOGLE_API_KEY', 'GOOGLE_GENAI_USE_VERTEXAI', 'GOOGLE_GENAI_USE_ENTERPRISE', 'GOOGLE_CLOUD_PROJECT',
         'GOOGLE_CLOUD_LOCATION', 'GOOGLE_GEMINI_BASE_URL', 'GOOGLE_VERTEX_BASE_URL', 'GOOGLE_APPLICATION_CREDENTIALS',
         'OPENAI_API_KEY', 'OPENAI_BASE_URL')


def closed_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def cli(project:Path, args:list, env:dict) -> tuple[int, float, str]:
    e = {k: v for k, v in os.environ.items() if k not in CLEAN} | {'PYTHONPATH': str(ROOT)} | env
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, '-m', 'posterlens.cli', *args], cwd=project, env=e, capture_output=True, text=True)
    return p.returncode, time.perf_counter() - t0, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=299, help='synthetic posters to caption')
    ap.add_argument('--smoke', action='store_true', help='3 posters, 3 of the cases (local servers only), no time targets: seconds')
    a = ap.parse_args(argv)
    if a.smoke: a.n = 3
    with tempfile.TemporaryDirectory() as d:
        project = Path(d)
        shutil.copy(ROOT/'settings.ini', project/'settings.ini'); shutil.copytree(ROOT/'prompts', project/'prompts')
        base = ['--variant', 'default', '--set', f'synth_n={a.n}']
        rc, secs, _ = cli(project, ['data', *base, '-q'], {})
        print(f'data stage: {a.n} synthetic posters ready (exit {rc}, {secs:.1f} s)')
        rc, secs, _ = cli(project, ['data', *base, '-q'], {})
        print(f'start-up baseline: `posterlens data` with nothing to do exits {rc} after {secs:.1f} s\n')
        adc = project/'adc.json'
        adc.write_text(json.dumps({'type': 'authorized_user', 'client_id': 'c', 'client_secret': 's', 'refresh_token': 'r',
                                   'token': 'revoked-token', 'expiry': '2099-01-01T00:00:00Z'}))
        vertex = {'GOOGLE_GENAI_USE_VERTEXAI': 'true', 'GOOGLE_CLOUD_PROJECT': 'proj-1', 'GOOGLE_CLOUD_LOCATION': 'us-central1',
                  'GOOGLE_APPLICATION_CREDENTIALS': str(adc)}
        port = closed_port()
        cases = [  # name, fake (or None), env given the fake's URL, extra settings, kind
            ('Gemini API, wrong key (400 API_KEY_INVALID)', lambda: FakeGemini(api_keys={'right'}),
             lambda u: {'GEMINI_API_KEY': 'wrong', 'GOOGLE_GEMINI_BASE_URL': u}, ['captioner=gemini'], 'credentials'),
            ('Gemini API, API disabled (403 SERVICE_DISABLED)', lambda: FakeGemini(service_disabled=True),
             lambda u: {'GEMINI_API_KEY': 'k', 'GOOGLE_GEMINI_BASE_URL': u}, ['captioner=gemini'], 'credentials'),
            ('Vertex AI, revoked token (401 UNAUTHENTICATED)', lambda: FakeGemini(tokens={'good'}),
             lambda u: {**vertex, 'GOOGLE_VERTEX_BASE_URL': u}, ['captioner=gemini'], 'credentials'),
            ('Vertex AI, credentials file missing', lambda: FakeGemini(),
             lambda u: {**vertex, 'GOOGLE_VERTEX_BASE_URL': u, 'GOOGLE_APPLICATION_CREDENTIALS': str(project/'gone.json')},
             ['captioner=gemini'], 'credentials'),
            ('Vertex AI, no permission (403 IAM_PERMISSION_DENIED)', lambda: FakeGemini(denied_projects={'proj-1'}),
             lambda u: {**vertex, 'GOOGLE_VERTEX_BASE_URL': u}, ['captioner=gemini'], 'credentials'),
            ('OpenAI-compatible, wrong key (401 invalid_api_key)', lambda: FakeOpenAI(api_keys={'sk-right'}),
             lambda u: {'OPENAI_API_KEY': 'sk-wrong'}, ['captioner=openai', 'caption_model=fake-vlm', 'openai_base_url={url}/v1'], 'credentials'),
            ('Gemini API, closed port (GOOGLE_GEMINI_BASE_URL)', None,
             lambda u: {'GEMINI_API_KEY': 'k', 'GOOGLE_GEMINI_BASE_URL': f'http://127.0.0.1:{port}'}, ['captioner=gemini'], 'unreachable'),
            ('OpenAI-compatible, closed port (openai_base_url)', None, lambda u: {},
             ['captioner=openai', 'caption_model=m', f'openai_base_url=http://127.0.0.1:{port}/v1'], 'unreachable'),
            ('OpenAI-compatible, unknown host (openai_base_url)', None, lambda u: {},
             ['captioner=openai', 'caption_model=m', 'openai_base_url=http://no-such-host.invalid/v1'], 'unreachable'),
        ]
        if a.smoke: cases = [cases[0], cases[5], cases[6]]
        ok, figs = True, []
        for name, fake, env, sets, kind in cases:
            cache = project/'.cache'/'captions'
            shutil.rmtree(cache, ignore_errors=True)
            srv = fake().start() if fake else None
            try:
                url = srv.url if srv else ''
                args = ['caption', *base, '-q'] + [x for s in sets for x in ('--set', s.format(url=url))]
                rc, secs, err = cli(project, args, env(url))
                sent = len(srv.requests) if srv else 0
            finally:
                if srv: srv.stop()
            files = len(list(cache.glob('*/*.json'))) if cache.exists() else 0
            good = rc != 0 and files == 0 and (a.smoke or (secs < 10 and sent <= 5 if kind == 'credentials' else secs < 30))
            ok &= good
            figs.append({'case': name, 'kind': kind, 'exit': rc, 'seconds': secs, 'requests': sent if srv else None,
                         'cache_files': files, 'ok': bool(good), 'error': err})
            print(f'{name}: exit {rc} after {secs:.1f} s, {sent if srv else "-"} requests received, {files} cache files '
                  f'[{"ok" if good else "FAIL"}]\n    {err}')
    print('PASS' if ok else 'FAIL')
    worst = lambda k: max((f['seconds'] for f in figs if f['kind'] == k), default=float('nan'))
    write_result('caption_failfast', {'n': a.n, 'cases': figs, 'pass': bool(ok)},
                 [('`posterlens caption`, refused credentials: slowest exit, s (target < 10)', f"{worst('credentials'):.1f}"),
                  ('`posterlens caption`, unreachable service: slowest exit, s (target < 30)', f"{worst('unreachable'):.1f}"),
                  ('failure cases that exit non-zero quickly with nothing cached', f"{sum(f['ok'] for f in figs)} of {len(figs)}")],
                 smoke=a.smoke)
    return 0 if ok else 1


if __name__ == '__main__': sys.exit(main())
