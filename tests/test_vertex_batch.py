"""Vertex AI batch prediction against local fakes: the real google-genai client talks to tests/fake_vertex.py,
the real google-cloud-storage client to a Cloud Storage emulator (PyPI gcp-storage-emulator) started here, and the
fake batch job reads its input from and writes its output to that emulator. All offline."""
import hashlib, io, json, os, signal, socket, subprocess, sys, textwrap, time
from pathlib import Path

import httpx
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from fake_gemini import caption_for  # noqa: E402
from fake_vertex import FakeVertex  # noqa: E402

from posterlens.core import PosterlensError, read_json, write_json
from posterlens.caption import CaptionCache, caption_images
from posterlens.vlm import GeminiCaptioner

ROOT = Path(__file__).resolve().parents[1]
PROMPT = 'Describe this poster.'
BUCKET = 'posterlens-test'
ENV = ('GEMINI_API_KEY', 'GOOGLE_API_KEY', 'GOOGLE_GENAI_USE_VERTEXAI', 'GOOGLE_GENAI_USE_ENTERPRISE', 'GOOGLE_CLOUD_PROJECT',
       'GOOGLE_CLOUD_LOCATION', 'GOOGLE_GEMINI_BASE_URL', 'GOOGLE_VERTEX_BASE_URL', 'GOOGLE_GENAI_API_VERSION',
       'GOOGLE_APPLICATION_CREDENTIALS', 'STORAGE_EMULATOR_HOST')


def png(i:int, size=16) -> bytes:
    b = io.BytesIO()
    Image.new('RGB', (size, size), ((i * 37) % 256, (i * 91) % 256, (i * 13 + 50) % 256)).save(b, 'PNG')
    return b.getvalue()

def sha(b:bytes) -> str: return hashlib.sha256(b).hexdigest()

def files(imgs, d:Path) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    out = [d/f'{i:03d}.png' for i in range(len(imgs))]
    for p, b in zip(out, imgs): p.write_bytes(b)
    return out


@pytest.fixture(scope='session')
def gcs():
    "A Cloud Storage emulator (gcp-storage-emulator, in memory) on a free local port, with the test bucket."
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, '-m', 'gcp_storage_emulator', 'start', '--host', '127.0.0.1', '--port', str(port),
                          '--in-memory', '--default-bucket', BUCKET, '-q'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(200):
            try:
                if httpx.get(url + '/').status_code == 200: break
            except httpx.TransportError: time.sleep(0.05)
        else: raise RuntimeError('the Cloud Storage emulator did not start')
        yield url
    finally: p.terminate(); p.wait()

@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in ENV: monkeypatch.delenv(k, raising=False)

@pytest.fixture
def vertex(monkeypatch, gcs):
    "Vertex AI route variables; returns a function pointing the SDK at a fake."
    for k, v in {'GOOGLE_GENAI_USE_VERTEXAI': 'true', 'GOOGLE_CLOUD_PROJECT': 'proj-1', 'GOOGLE_CLOUD_LOCATION': 'us-central1',
                 'STORAGE_EMULATOR_HOST': gcs}.items(): monkeypatch.setenv(k, v)
    return lambda fake: monkeypatch.setenv('GOOGLE_VERTEX_BASE_URL', fake.url)

def captioner(prefix:str|None, **kw) -> GeminiCaptioner:
    from google.oauth2.credentials import Credentials
    return GeminiCaptioner(credentials=Credentials(token='test-token'), batch=True,       # stands in for application default credentials
                           **{'gcs_bucket': None if prefix is None else f'gs://{BUCKET}/{prefix}', **kw})

def blobs(prefix:str) -> list[str]:
    from google.cloud import storage
    return sorted(b.name for b in storage.Client(project='p').list_blobs(BUCKET, prefix=prefix))


def test_partially_blocked_job_statuses_as_online(tmp_path, vertex):
    "A job that succeeds with blocked, prompt-blocked, truncated and refused rows: the same statuses and reasons as online."
    imgs = [png(i) for i in range(7)]
    script = {sha(imgs[0]): ['block'], sha(imgs[1]): ['prompt_block'], sha(imgs[2]): ['maxtokens'], sha(imgs[3]): ['400']}
    items = files(imgs, tmp_path/'imgs')
    with FakeVertex(script=dict(script)) as f:
        vertex(f)
        cap, cache = captioner('t1'), CaptionCache(tmp_path/'cache')
        rows = cap.caption_batch(items, PROMPT, cache, tmp_path/'batch', poll_s=0.01)
        assert f.jobs_created == 1 and not (tmp_path/'batch'/'batch.json').exists()
        assert {r['route'] for r in f.requests} == {'vertex-batch'} and len(f.requests) == 7   # no online request was made
        job = next(iter(f.jobs.values()))
        assert job['name'].startswith('projects/proj-1/locations/us-central1/batchPredictionJobs/')
        assert job['model'] == 'publishers/google/models/gemini-2.5-flash'
        # the request file was staged in the bucket, one {"request": body} line per image; the answers came back there
        names = blobs('t1/')
        src = next(n for n in names if n.endswith('.jsonl') and '/out/' not in n)
        assert any(n.endswith('/predictions.jsonl') and '/prediction-model-' in n for n in names)
        from google.cloud import storage
        lines = [json.loads(l) for l in storage.Client(project='p').bucket(BUCKET).blob(src).download_as_text().splitlines()]
        assert lines[0] == {'request': cap.request(imgs[0], 'image/png', PROMPT)}
        n = len(f.requests)
        again = caption_images(cap, items, PROMPT, cache, progress=False)     # the live runner finds the answers cached:
        assert [r['image'] for r in f.requests[n:]] == [sha(imgs[3])]          # only the failed image is asked again
        assert [r['text'] for r in again[:3] + again[4:]] == [r['text'] for r in rows[:3] + rows[4:]] and again[3]['status'] == 'ok'
    with FakeVertex(script=dict(script)) as f:                             # the same images, online, through a fresh cache
        vertex(f)
        online = caption_images(captioner(None, max_output_tokens=1000), items, PROMPT, CaptionCache(tmp_path/'online'), progress=False)
        assert {r['route'] for r in f.requests} == {'vertex'}
    key = lambda r: (r['status'], r['reason'], r['text'], r['tokens_in'], r['tokens_out'], r['model'])
    assert [key(r) for r in rows] == [key(r) for r in online]
    assert [r['status'] for r in rows] == ['blocked', 'blocked', 'truncated', 'failed', 'ok', 'ok', 'ok']
    assert rows[3]['reason'] == 'Gemini 400 INVALID_ARGUMENT: Unable to process input image.'
    assert rows[4]['text'] == caption_for(sha(imgs[4])) and not rows[4]['cached']


def test_failed_job_then_rerun(tmp_path, vertex):
    imgs = [png(i) for i in range(4)]
    items = files(imgs, tmp_path/'imgs')
    with FakeVertex(job_fates=['fail', 'succeed']) as f:
        vertex(f)
        cap, cache = captioner('t2'), CaptionCache(tmp_path/'cache')
        rows = cap.caption_batch(items, PROMPT, cache, tmp_path/'batch', poll_s=0.01)
        assert f.jobs_created == 1 and [r['status'] for r in rows] == ['failed'] * 4
        assert all('JOB_STATE_FAILED' in r['reason'] and 'Internal error' in r['reason'] for r in rows)
        assert not f.requests                                        # nothing was answered (nor billed)
        rows = cap.caption_batch(items, PROMPT, cache, tmp_path/'batch', poll_s=0.01)      # failed images go in a new job
        assert f.jobs_created == 2 and [r['status'] for r in rows] == ['ok'] * 4
        assert [r['text'] for r in rows] == [caption_for(sha(b)) for b in imgs]
        cap.caption_batch(items, PROMPT, cache, tmp_path/'batch', poll_s=0.01)
        assert f.jobs_created == 2 and f.duplicates() == 0


def test_vertex_batch_needs_a_bucket(tmp_path, vertex):
    items = files([png(1)], tmp_path/'imgs')
    with FakeVertex() as f:
        vertex(f)
        with pytest.raises(PosterlensError, match='gcs_bucket'):
            captioner(None).caption_batch(items, PROMPT, CaptionCache(tmp_path/'cache'), tmp_path/'batch', poll_s=0.01)
        assert f.jobs_created == 0


def test_interrupted_between_create_and_record(tmp_path, vertex):
    "batch.json names the job before it is created: a run killed right after creating it finds the job instead of paying again."
    imgs = [png(i) for i in range(3)]
    items = files(imgs, tmp_path/'imgs')
    with FakeVertex() as f:
        vertex(f)
        cap, cache = captioner('t3'), CaptionCache(tmp_path/'cache')
        first = cap.caption_batch(items, PROMPT, cache, tmp_path/'batch', wait=False)    # submits, polls once
        assert first == [None] * 3 and f.jobs_created == 1
        state = read_json(tmp_path/'batch'/'batch.json')
        write_json({**state, 'job': None}, tmp_path/'batch'/'batch.json')                # as if killed before recording the name
        rows = cap.caption_batch(items, PROMPT, cache, tmp_path/'batch', poll_s=0.01)
        assert f.jobs_created == 1 and [r['text'] for r in rows] == [caption_for(sha(b)) for b in imgs]
        # a marker whose job was never created: submitted now, once
        cache2 = CaptionCache(tmp_path/'cache2')
        write_json({**state, 'job': None, 'display_name': 'posterlens-never-created'}, tmp_path/'b2'/'batch.json')
        rows = cap.caption_batch(items, PROMPT, cache2, tmp_path/'b2', poll_s=0.01)
        assert f.jobs_created == 2 and all(r['status'] == 'ok' for r in rows)


CHILD = textwrap.dedent('''
    import sys
    from pathlib import Path
    from google.oauth2.credentials import Credentials
    from posterlens.caption import CaptionCache
    from posterlens.vlm import GeminiCaptioner
    cache_dir, img_dir, workdir, bucket = sys.argv[1:5]
    cap = GeminiCaptioner(credentials=Credentials(token='test-token'), batch=True, gcs_bucket=bucket)
    cap.caption_batch(sorted(Path(img_dir).glob('*.png')), 'Describe this poster.', CaptionCache(cache_dir), workdir, poll_s=0.05)
''')

def test_kill_during_polling_then_resume(tmp_path, vertex):
    imgs = [png(i) for i in range(12)]
    items = files(imgs, tmp_path/'imgs')
    (tmp_path/'child.py').write_text(CHILD)
    with FakeVertex(job_polls=10**9) as f:                                  # the job runs until we let it finish
        vertex(f)
        p = subprocess.Popen([sys.executable, str(tmp_path/'child.py'), str(tmp_path/'cache'), str(tmp_path/'imgs'),
                              str(tmp_path/'batch'), f'gs://{BUCKET}/t4'], env=os.environ.copy(), cwd=ROOT)
        t0 = time.time()
        while time.time() - t0 < 120 and p.poll() is None and not any(j['polls'] >= 3 for j in f.jobs.values()): time.sleep(0.02)
        p.send_signal(signal.SIGKILL); p.wait()
        assert f.jobs_created == 1 and next(iter(f.jobs.values()))['polls'] >= 3, 'the child was not killed while polling'
        assert read_json(tmp_path/'batch'/'batch.json')['job'] == next(iter(f.jobs.values()))['name']
        assert not f.requests                                               # killed before any answer
        f.job_polls = 1                                                     # the job finishes at the next poll
        cap, cache = captioner('t4'), CaptionCache(tmp_path/'cache')
        rows = cap.caption_batch(items, PROMPT, cache, tmp_path/'batch', poll_s=0.01)
        assert f.jobs_created == 1                                          # zero new batch jobs: the rerun attached
        assert [r['status'] for r in rows] == ['ok'] * 12
        assert [r['text'] for r in rows] == [caption_for(sha(b)) for b in imgs]
        assert f.duplicates() == 0 and not (tmp_path/'batch'/'batch.json').exists()


def test_missing_bucket_is_a_clear_error(tmp_path, vertex):
    items = files([png(1)], tmp_path/'imgs')
    with FakeVertex() as f:
        vertex(f)
        with pytest.raises(PosterlensError, match='could not be submitted.*gcs_bucket'):
            captioner(None, gcs_bucket='gs://no-such-bucket/x').caption_batch(items, PROMPT, CaptionCache(tmp_path/'cache'),
                          tmp_path/'batch', poll_s=0.01)
        assert f.jobs_created == 0 and not (tmp_path/'batch'/'batch.json').exists()     # nothing to resume: no job exists
