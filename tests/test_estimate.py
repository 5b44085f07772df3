"""The cost and time estimate before paying: the real google-genai client counts the prompt with the free countTokens
call of a local fake (tests/fake_vertex.py) and no generateContent request reaches it, on both routes."""
import io, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
from fastcore.basics import AttrDict
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from fake_vertex import FakeVertex, count_tokens  # noqa: E402

from posterlens.caption import CaptionCache, CaptionResult, estimate_captioning, estimate_lines
from posterlens.vlm import GeminiCaptioner

ROOT = Path(__file__).resolve().parents[1]
PROMPT = 'Describe this movie poster in a few plain sentences: colours, faces, text, composition.'
ENV = ('GEMINI_API_KEY', 'GOOGLE_API_KEY', 'GOOGLE_GENAI_USE_VERTEXAI', 'GOOGLE_GENAI_USE_ENTERPRISE', 'GOOGLE_CLOUD_PROJECT',
       'GOOGLE_CLOUD_LOCATION', 'GOOGLE_GEMINI_BASE_URL', 'GOOGLE_VERTEX_BASE_URL', 'GOOGLE_GENAI_API_VERSION',
       'GOOGLE_APPLICATION_CREDENTIALS')


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in ENV: monkeypatch.delenv(k, raising=False)


def posters(d:Path, sizes) -> pd.DataFrame:
    d.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(sizes): Image.new('RGB', s, (40*i % 256, 90, 20)).save(d/f'{i}.jpg')
    return pd.DataFrame({'id': [str(i) for i in range(len(sizes))], 'image_path': [str(d/f'{i}.jpg') for i in range(len(sizes))]})


@pytest.mark.parametrize('route', ['gemini-api', 'vertex'])
def test_estimate_makes_no_paid_request(tmp_path, monkeypatch, route):
    sizes = [(182, 268)] * 5 + [(1000, 1500)]                  # 258 tokens each; 2 x 2 tiles of 768 px = 1032
    table = posters(tmp_path/'img', sizes)
    with FakeVertex() as f:                                     # a fresh fake: every request it gets is recorded
        if route == 'vertex':
            from google.oauth2.credentials import Credentials
            for k, v in {'GOOGLE_GENAI_USE_VERTEXAI': 'true', 'GOOGLE_CLOUD_PROJECT': 'proj-1', 'GOOGLE_CLOUD_LOCATION': 'us-central1',
                         'GOOGLE_VERTEX_BASE_URL': f.url}.items(): monkeypatch.setenv(k, v)
            cap = GeminiCaptioner(credentials=Credentials(token='test-token'), thinking_budget=0, max_output_tokens=300)
        else:
            monkeypatch.setenv('GEMINI_API_KEY', 'test-key'); monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', f.url)
            cap = GeminiCaptioner(thinking_budget=0, max_output_tokens=300)
        cache = CaptionCache(tmp_path/'cache')
        paid = [(0, 40), (1, 60)]                                 # two posters answered earlier, 40 and 60 output tokens
        for i, t in paid: cache.put(cache.key(Path(table.image_path[i]).read_bytes(), PROMPT, cap), CaptionResult('Old.', 'ok', '', 300, t, cap.model))
        cache.put(cache.key(Path(table.image_path[2]).read_bytes(), PROMPT, cap), CaptionResult('', 'failed', 'timeout'))
        est = estimate_captioning(AttrDict(rpm=120, max_output_tokens=300), table, cap, cache, PROMPT)
        assert f.requests == [] and not f.batches and f.jobs_created == 0       # no generateContent, no batch job
        assert [c['route'] for c in f.count_calls] == ['vertex' if route == 'vertex' else 'apikey']
    n_prompt = count_tokens({'contents': [{'parts': [{'text': PROMPT}]}]})
    assert est['prompt_tokens'] == n_prompt > 0
    assert (est['n_images'], est['n_cached'], est['n_todo'], est['n_retry']) == (6, 2, 4, 1)
    assert est['image_tokens'] == 3*258 + 4*258
    assert est['tokens_in'] == est['image_tokens'] + 4*n_prompt
    assert (est['tokens_out_max'], est['typical_out'], est['tokens_out_typical']) == (4*300, 50.0, 200)
    # the published list prices of gemini-2.5-flash (https://ai.google.dev/gemini-api/docs/pricing, paid tier):
    # $0.30 per 1M input tokens, $2.50 per 1M output tokens; batch mode at half price
    assert est['usd_online'] == pytest.approx((est['tokens_in']*0.30 + 200*2.50)/1e6)
    assert est['usd_online_max'] == pytest.approx((est['tokens_in']*0.30 + 1200*2.50)/1e6)
    assert est['usd_batch_max'] == pytest.approx((est['tokens_in']*0.30 + 1200*2.50)/1e6/2)
    assert est['seconds'] == pytest.approx(2.0)
    lines = estimate_lines(est)
    assert lines[0] == 'caption estimate (gemini gemini-2.5-flash): 6 images, 2 already cached, 4 to caption (1 failed before)'
    assert any('online ~$' in l and 'batch ~$' in l for l in lines)


def test_estimate_of_a_fully_cached_table_counts_nothing(tmp_path, monkeypatch):
    table = posters(tmp_path/'img', [(100, 100)] * 2)
    with FakeVertex() as f:
        monkeypatch.setenv('GEMINI_API_KEY', 'test-key'); monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', f.url)
        cap, cache = GeminiCaptioner(), CaptionCache(tmp_path/'cache')
        for p in table.image_path: cache.put(cache.key(Path(p).read_bytes(), PROMPT, cap), CaptionResult('Old.', 'ok', '', 300, 10, cap.model))
        est = estimate_captioning(AttrDict(rpm=60), table, cap, cache, PROMPT)
        assert f.requests == [] and f.count_calls == [] and est['n_todo'] == 0
    assert estimate_lines(est) == ['caption estimate (gemini gemini-2.5-flash): 2 images, 2 already cached, 0 to caption; nothing to pay']


# -- the command line ------------------------------------------------------------------------------------------------

def test_cli_caption_estimate(tmp_path):
    "`posterlens caption --estimate`: the estimate on stdout, exit 0, only the free countTokens call, no caption written."
    from posterlens.cli import make_parser
    try: make_parser().parse_args(['caption', '--estimate'])
    except SystemExit: pytest.fail('posterlens caption has no --estimate flag')      # a failure, never a skip
    table = posters(tmp_path/'img', [(182, 268)] * 3)
    csv = tmp_path/'posters.csv'
    pd.DataFrame({'image': table.image_path, 'target': [5.0, 6.0, 7.0]}).to_csv(csv, index=False)
    with FakeVertex() as f:
        env = {k: v for k, v in __import__('os').environ.items() if k not in ENV}
        env.update(GEMINI_API_KEY='test-key', GOOGLE_GEMINI_BASE_URL=f.url)
        r = subprocess.run([sys.executable, '-m', 'posterlens.cli', 'caption', '--variant', 'smoke', '--estimate',
                            '--set', f'dataset={csv}', '--set', 'captioner=gemini', '--set', 'caption_model=gemini-2.5-flash',
                            '--set', f'runs_dir={tmp_path}/runs', '--set', f'cache_dir={tmp_path}/cache'],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        assert 'caption estimate (gemini gemini-2.5-flash): 3 images, 0 already cached, 3 to caption' in r.stdout
        assert f.requests == [] and len(f.count_calls) == 1            # the free count only
        assert not (tmp_path/'runs'/'smoke'/'caption'/'captions.parquet').exists()
