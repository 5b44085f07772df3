"""The verify stage's clients against the local fakes: structured yes/no answers on Gemini (API key, Vertex AI, batch)
and an OpenAI-compatible server, answered from synthetic posters' planted attributes; every malformed-answer kind
counted and never read as "no"; the cache; credential and unreachable stops."""
import hashlib, json, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_gemini import FakeGemini, planted_answer  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402
from test_vlm import GEMINI_ENV  # noqa: E402

from fastcore.basics import AttrDict
from posterlens.caption import Backoff, CaptionCache
from posterlens.core import PosterlensError
from posterlens.data import ATTRIBUTES, make_synth
from posterlens.verify import (ANSWER_STATUSES, GeminiVerifier, OpenAIVerifier, answer_matrix, ask_images, make_verifier,
                               read_concepts, write_questions)

QUESTIONS = {'p01': 'Is the poster dark and dimly lit?', 'p02': 'Do cool blue tones dominate the image?',
             'p03': 'Is the image in black and white?', 'p04': 'Is the poster busy and cluttered?',
             'p05': 'Is the title set in large bold text?', 'p06': 'Is there a dog in the picture?'}
PLANTED = {'p01': 'dark', 'p02': 'cool', 'p03': 'bw', 'p04': 'cluttered', 'p05': 'big_title'}

FAST = Backoff(initial=0.01, max=0.1, jitter=0.01)   # retries without the real waits


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in GEMINI_ENV: monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope='session')
def posters(tmp_path_factory):
    "24 synthetic posters: (table with image paths, {image sha256: planted attributes})."
    d = tmp_path_factory.mktemp('synth')
    syn = pd.read_csv(make_synth(d, 24, seed=5))
    syn['path'] = [str(d/p) for p in syn.image]
    attrs = {hashlib.sha256(Path(p).read_bytes()).hexdigest(): {a: int(r[a]) for a in ATTRIBUTES} for p, (_, r) in zip(syn.path, syn.iterrows())}
    return syn, attrs


def preds(qs=QUESTIONS) -> pd.DataFrame:
    return pd.DataFrame({'pid': list(qs), 'predicate': list(qs.values()), 'concept': list(qs)})


def ask(v, syn, cache, **kw):
    return ask_images(v, syn.path, syn.id, preds(), cache, **{'concurrency': 4, 'max_retries': 3, 'progress': False, 'wait': FAST, **kw})


def test_fake_reads_several_wordings():
    a = {'dark': 1, 'cool': 0, 'bw': 0, 'cluttered': 1, 'big_title': 0}
    assert planted_answer('Is the poster dark and dimly lit?', a) is True
    assert planted_answer('Is the image bright and high-key?', a) is False
    assert planted_answer('Do warm red tones dominate?', a) is True
    assert planted_answer('Is the layout clean and minimal?', a) is False
    assert planted_answer('Is the title set in large bold text?', a) is False
    assert planted_answer('Is there a dog?', a) is None


def test_gemini_answers_from_planted_attributes(monkeypatch, posters, tmp_path):
    syn, attrs = posters
    with FakeGemini(attributes=attrs) as g:
        monkeypatch.setenv('GEMINI_API_KEY', 'test-key'); monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', g.url)
        v = make_verifier(AttrDict(captioner='gemini', caption_model='gemini-2.5-flash', max_output_tokens=400, thinking_budget=0))
        assert isinstance(v, GeminiVerifier)
        cache = CaptionCache(tmp_path/'cache')
        answers, requests = ask(v, syn, cache)
        assert len(g.requests) == len(syn)                          # one request per image, all questions in it
        body = g.bodies[-1]
        gc = body['generationConfig']
        assert gc['responseMimeType'] == 'application/json'
        sch = gc['responseSchema']
        assert sch['type'] == 'OBJECT' and sch['required'] == list(QUESTIONS)
        assert {k: (p['type'], p['description']) for k, p in sch['properties'].items()} == {k: ('BOOLEAN', q) for k, q in QUESTIONS.items()}
        A = answer_matrix(answers, syn.id, list(QUESTIONS))
        for pid, attr in PLANTED.items(): assert A[pid].tolist() == syn[attr].astype(float).tolist(), pid
        assert set(answers.status) <= {'yes', 'no'} and requests.tokens_in.gt(0).all()
        again, req2 = ask(make_verifier(AttrDict(captioner='gemini', caption_model='gemini-2.5-flash', max_output_tokens=400,
                                                 thinking_budget=0)), syn, cache)
        assert len(g.requests) == len(syn) and req2.cached.all()    # the second run sends nothing
        pd.testing.assert_frame_equal(again, answers)


def test_gemini_vertex_route(monkeypatch, posters, tmp_path):
    from google.oauth2.credentials import Credentials
    syn, attrs = posters
    with FakeGemini(attributes=attrs) as g:
        for k, val in {'GOOGLE_GENAI_USE_VERTEXAI': 'true', 'GOOGLE_CLOUD_PROJECT': 'proj-1', 'GOOGLE_CLOUD_LOCATION': 'us-central1',
                       'GOOGLE_VERTEX_BASE_URL': g.url}.items(): monkeypatch.setenv(k, val)
        v = GeminiVerifier(credentials=Credentials(token='test-token'), temperature=0.0)
        answers, _ = ask(v, syn.head(6), CaptionCache(tmp_path/'cache'))
        assert {r['route'] for r in g.requests} == {'vertex'}
        A = answer_matrix(answers, syn.id.head(6), list(QUESTIONS))
        assert A.p01.tolist() == syn.dark.head(6).astype(float).tolist()


def test_flipped_answers(monkeypatch, posters, tmp_path):
    syn, attrs = posters
    with FakeGemini(attributes=attrs, flip=0.25, seed=1) as g:
        monkeypatch.setenv('GEMINI_API_KEY', 'k'); monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', g.url)
        answers, _ = ask(GeminiVerifier(temperature=0.0), syn, CaptionCache(tmp_path/'cache'))
    A = answer_matrix(answers, syn.id, list(QUESTIONS))
    wrong = sum(int((A[p].to_numpy() != syn[a].to_numpy()).sum()) for p, a in PLANTED.items())
    assert 0 < wrong < 0.5*len(syn)*len(PLANTED)


def test_gemini_malformed_answers_counted(monkeypatch, posters, tmp_path):
    "Blocked, prose, a missing property and truncation are recorded per image and predicate, never as 'no'."
    syn, attrs = posters
    kw = dict(attributes=attrs, rate_block=0.15, rate_not_json=0.15, rate_missing=0.15, rate_maxtokens=0.1, rate_refusal=0.1, seed=3)
    with FakeGemini(**kw) as g:
        monkeypatch.setenv('GEMINI_API_KEY', 'k'); monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', g.url)
        answers, requests = ask(GeminiVerifier(temperature=0.0), syn, CaptionCache(tmp_path/'cache'))
        fate = {}
        for i, p in zip(syn.id, syn.path):
            sha = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            o, m = g.outcome(sha, transient=False), g.malformed(sha)
            fate[str(i)] = ('blocked' if o in ('block', 'prompt_block') else 'truncated' if o == 'maxtokens' else
                            'not_json' if m in ('not_json', 'refusal') else 'missing' if m == 'missing' else 'ok')
    got = answers.groupby('id').status.agg(set).to_dict()
    for i, f in fate.items():
        if f == 'ok': assert got[i] <= {'yes', 'no'}, (i, got[i])
        elif f == 'missing': assert got[i] - {'yes', 'no'} == {'missing'} and (answers[(answers.id == i)].status == 'missing').sum() == 1
        else: assert got[i] == {f}, (i, f, got[i])
    assert set(fate.values()) >= {'ok', 'blocked', 'not_json', 'missing', 'truncated'}, fate
    bad = answers[~answers.status.isin(['yes', 'no'])]
    assert bad.answer.isna().all() and answer_matrix(answers, syn.id, list(QUESTIONS)).isna().sum().sum() == len(bad)


def test_openai_structured_and_refusal(monkeypatch, posters, tmp_path):
    syn, attrs = posters
    with FakeOpenAI(attributes=attrs, rate_refusal=0.2, rate_block=0.1, seed=2) as o:
        v = make_verifier(AttrDict(captioner='openai', caption_model='qwen2.5vl:7b', openai_base_url=f'{o.url}/v1'))
        assert isinstance(v, OpenAIVerifier)
        answers, _ = ask(v, syn, CaptionCache(tmp_path/'cache'))
        rf = o.bodies[-1]['response_format']
        assert rf['type'] == 'json_schema' and rf['json_schema']['strict'] is True
        assert rf['json_schema']['schema']['additionalProperties'] is False
        assert rf['json_schema']['schema']['properties']['p01'] == {'type': 'boolean', 'description': QUESTIONS['p01']}
        refused = {str(i) for i, p in zip(syn.id, syn.path)
                   if o.malformed(hashlib.sha256(Path(p).read_bytes()).hexdigest()) == 'refusal'
                   and o.outcome(hashlib.sha256(Path(p).read_bytes()).hexdigest(), transient=False) != 'block'}
    assert refused and set(answers[answers.status == 'refusal'].id) == refused
    assert (answers.status == 'blocked').any()
    ok = answers[answers.status.isin(['yes', 'no'])]
    A = answer_matrix(ok, syn.id, list(QUESTIONS))
    m = A.p04.notna()
    assert A.p04[m].tolist() == syn.cluttered[m.to_numpy()].astype(float).tolist()


def test_openai_strict_schema_is_checked_like_the_real_service(posters):
    import openai
    with FakeOpenAI() as o:
        c = openai.OpenAI(base_url=f'{o.url}/v1', api_key='x', max_retries=0)
        with pytest.raises(openai.BadRequestError, match='additionalProperties'):
            c.chat.completions.create(model='m', messages=[{'role': 'user', 'content': [{'type': 'text', 'text': 'q'}]}],
                                      response_format={'type': 'json_schema', 'json_schema': {'name': 'a', 'strict': True, 'schema': {
                                          'type': 'object', 'properties': {'p01': {'type': 'boolean'}}, 'required': ['p01']}}})


def test_bad_key_and_unreachable_stop_at_once(monkeypatch, posters, tmp_path):
    syn, attrs = posters
    with FakeGemini(attributes=attrs, api_keys={'good'}) as g:
        monkeypatch.setenv('GEMINI_API_KEY', 'bad'); monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', g.url)
        with pytest.raises(PosterlensError, match='refused the credentials from GEMINI_API_KEY'):
            ask(GeminiVerifier(temperature=0.0), syn, CaptionCache(tmp_path/'c1'))
        assert len(g.requests) <= 4                                  # the in-flight ones, no retries
    v = make_verifier(AttrDict(captioner='openai', caption_model='m', openai_base_url='http://127.0.0.1:9/v1'))
    with pytest.raises(PosterlensError, match='cannot reach http://127.0.0.1:9/v1'):
        ask(v, syn, CaptionCache(tmp_path/'c2'))
    concepts = read_concepts(pd.DataFrame({'name': ['dark'], 'sentences': [['It is dark.']], 'effect': [0.5]}))
    with pytest.raises(PosterlensError, match='cannot reach http://127.0.0.1:9/v1'):     # also the request that writes the questions
        write_questions(v, concepts, CaptionCache(tmp_path/'c3'), wait=FAST)


def test_language_model_writes_the_questions(monkeypatch, tmp_path):
    concepts = read_concepts(pd.DataFrame({'name': ['dark low key', 'warm red tone'], 'sentences': [['The image is dark.'], ['Warm red tones.']],
                                           'effect': [0.5, -0.2], 'q': [0.01, 0.3], 'significant': [True, False]}))
    with FakeGemini() as g:
        monkeypatch.setenv('GEMINI_API_KEY', 'k'); monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', g.url)
        cache = CaptionCache(tmp_path/'cache')
        got, note = write_questions(GeminiVerifier(temperature=0.0), concepts, cache, wait=FAST)
        assert got == {'dark low key': 'Is the image dark low key? (as in: The image is dark)',
                       'warm red tone': 'Is the image warm red tone? (as in: Warm red tones)'}, got
        sch = g.bodies[-1]['generationConfig']['responseSchema']
        assert {p['type'] for p in sch['properties'].values()} == {'STRING'}
        n = len(g.requests)
        assert write_questions(GeminiVerifier(temperature=0.0), concepts, cache, wait=FAST)[0] == got and len(g.requests) == n


def test_gemini_batch_mode(monkeypatch, posters, tmp_path):
    syn, attrs = posters
    with FakeGemini(attributes=attrs) as g:
        monkeypatch.setenv('GEMINI_API_KEY', 'k'); monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', g.url)
        v = GeminiVerifier(temperature=0.0, batch=True)
        answers, requests = ask(v, syn.head(8), CaptionCache(tmp_path/'cache'), workdir=tmp_path/'batch')
        assert g.batches and {r['route'] for r in g.requests} == {'batch'}     # no live request: the job answered all
        A = answer_matrix(answers, syn.id.head(8), list(QUESTIONS))
        assert A.p03.tolist() == syn.bw.head(8).astype(float).tolist()


@pytest.mark.parametrize('shape', ['factor', 'name'])
def test_stage_verify_end_to_end(monkeypatch, posters, tmp_path, shape):
    "The stage on both shapes of the factor table, with a gold-label CSV: findings, DSL columns, counts and the cache."
    from posterlens.core import load_settings
    from posterlens.verify import FINDINGS_COLUMNS, stage_verify
    syn, attrs = posters
    sent = {'dark': 'The image is dark and low-key.', 'cluttered': 'The layout is busy and cluttered.', 'face': 'A face looks out.'}
    if shape == 'factor':
        factors = pd.DataFrame({'factor': list(sent), 'phrases': [['dark'], ['cluttered'], ['face']], 'example': list(sent.values()),
                                'effect': [0.5, -0.6, 0.1], 'effect_lo': [0.2, -0.9, -0.2], 'effect_hi': [0.8, -0.3, 0.4],
                                'q': [0.01, 0.01, 0.6], 'significant': [True, True, False]})
    else:
        factors = pd.DataFrame({'name': list(sent), 'sentences': [[s] for s in sent.values()], 'effect': [0.5, -0.6, 0.1],
                                'effect_lo': [0.2, -0.9, -0.2], 'effect_hi': [0.8, -0.3, 0.4], 'p': [0.001, 0.001, 0.5],
                                'q': [0.01, 0.01, 0.6], 'significant': [True, True, False], 'contrast': ['', '', '']})
    caps = [' '.join([sent['dark'] if r.dark else 'The image is bright.', sent['cluttered'] if r.cluttered else 'It is clean.'])
            for r in syn.itertuples()]
    df = pd.DataFrame({'id': syn.id, 'caption': caps, 'target': syn.target})
    gold = tmp_path/'gold.csv'
    rng = np.random.default_rng(0)
    pick = syn[rng.random(len(syn)) < 0.9]
    pd.DataFrame({'id': list(pick.id) + ['nope'], 'predicate': ['dark'] * len(pick) + ['dark'],
                  'answer': ['yes' if d else 'no' for d in pick.dark] + ['yes']}).to_csv(gold, index=False)
    with FakeGemini(attributes=attrs, rate_not_json=0.1) as g:
        monkeypatch.setenv('GEMINI_API_KEY', 'k'); monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', g.url)
        cfg = load_settings('smoke', {'runs_dir': str(tmp_path/'runs'), 'cache_dir': str(tmp_path/'cache'), 'captioner': 'gemini',
                                      'caption_model': 'gemini-2.5-flash', 'folds': 2, 'fold_subset': 'all', 'verify_gold': str(gold),
                                      'rpm': 6000})
        f = stage_verify(cfg, df, syn.set_index('id').path, factors, [0, 1], tmp_path/'out', progress=False, wait=FAST)
        n_req = len(g.requests)
        f2 = stage_verify(cfg, df, syn.set_index('id').path, factors, [0, 1], tmp_path/'out2', progress=False, wait=FAST)
        assert len(g.requests) == n_req                                   # the second run is served by the cache
    pd.testing.assert_frame_equal(f, f2)
    assert list(f.columns) == FINDINGS_COLUMNS and len(f) == 3
    assert n_req == len(syn) + 1 + 1 + 3          # one per image, one that wrote the questions, one that named the concepts, one per name's check
    names = pd.read_parquet(tmp_path/'out'/'names.parquet').set_index('concept')
    assert names.loc['dark', 'name'] == 'a dark, dimly lit image' and names.loc['cluttered', 'name'] == 'a busy, cluttered layout'
    assert (names.name_source == 'model').all() and (names.loc[['dark', 'cluttered'], 'name_f1'] == 1.0).all()
    assert f.set_index('concept').loc['dark', 'name'] == 'a dark, dimly lit image'
    from posterlens.verify import findings_sentences
    assert 'a dark, dimly lit image' in ' '.join(findings_sentences(f))
    s = json.loads((tmp_path/'out'/'summary.json').read_text())
    bad = s['answers']['not_json']
    assert bad > 0 and bad % 3 == 0 and (f.n_not_json == bad // 3).all() and (f.answered + f.failed == len(syn)).all()
    dark = f.set_index('concept').loc['dark']
    assert dark.fidelity > 0.9 and dark.gold_n >= 10 and dark.dsl_lo < dark.dsl_effect < dark.dsl_hi
    assert 'unknown id' in s['gold'] and '1 with an unknown id' in s['gold']
    assert set(pd.read_parquet(tmp_path/'out'/'answers.parquet').status) >= {'yes', 'no', 'not_json'}


def test_names_and_their_fidelity_from_the_model(monkeypatch, tmp_path):
    "The fake's model names each concept from its sentences; its labels of a random sample score the names; a bad answer keeps the own names."
    from posterlens.verify import GeminiVerifier, name_concepts, NAMES_COLUMNS
    import fake_gemini as fg
    words = {s: ws for s, ws in zip(('dark', 'bright'), fg.FREEFORM['dark'])}
    concepts = pd.DataFrame({'concept': [words['dark'][0], words['bright'][0], 'The framing is vertical.'],
                             'sentences': [list(words['dark'][:3]), list(words['bright'][:3]), ['The framing is vertical.']]})
    sentences = [*words['dark'], *words['bright'], *fg.FREEFORM_FILLER]
    with FakeGemini() as g:
        monkeypatch.setenv('GEMINI_API_KEY', 'k'); monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', g.url)
        v = GeminiVerifier(temperature=0.0)
        names, note, sent = name_concepts(v, concepts, sentences, CaptionCache(tmp_path/'c'), wait=FAST)
        assert sent == 4 and len(g.requests) == 4 and list(names.columns) == NAMES_COLUMNS
        assert names.name.tolist() == ['a dark, dimly lit image', 'a bright, well-lit image', 'the framing is vertical']
        # the dark concept's members are 3 of the 4 dark wordings: the fake also says yes to the 4th when it is drawn
        dark = names.iloc[0]
        assert dark.labelled == min(24, len(sentences)) and 0.7 <= dark.name_f1 <= 1 and dark.name_r > 0.3
        assert '3 of 3 concepts named' in note
        # a blocked naming answer: the concepts keep their own sentences as names, no check is asked
        g.queue = ['prompt_block']
        n2, note2, sent2 = name_concepts(v, concepts, sentences[:-1], CaptionCache(tmp_path/'c2'), wait=FAST)
        assert sent2 == 1 and (n2.name == concepts.concept).all() and (n2.name_source == 'segment').all() and n2.name_f1.isna().all()
        assert 'named no concept' in note2
