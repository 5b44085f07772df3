"""A local fake of the Gemini REST API, for offline tests of `posterlens.vlm`.

It speaks the wire format the real `google-genai` SDK sends and reads, on both routes:

- API key (Gemini Developer API):  POST /{version}/models/{model}:generateContent   (header x-goog-api-key)
- Vertex AI:  POST /{version}/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent
  (header Authorization: Bearer ...)
- Batch mode (Developer API): POST /{version}/models/{model}:batchGenerateContent (inlined requests or a
  JSONL file), GET /{version}/batches/{id}, the resumable upload POST /upload/{version}/files and
  GET /{version}/files/{id}:download?alt=media.

Switches (probabilities per request unless said otherwise) make it misbehave like the real service:
`rate429` (RESOURCE_EXHAUSTED with a RetryInfo and a Retry-After hint), `rate500`, `rate503`, `rate_hang`
(sleeps `hang_s` before answering, so the client's timeout fires), `rate_block` (per image, stable across
retries: finishReason SAFETY), `rate_prompt_block` (per image: promptFeedback.blockReason), `rate_maxtokens`
(per image: partial text, finishReason MAX_TOKENS). `script` forces the outcomes of the next requests for an
image: `{image_sha256: ['429', '500', 'ok']}`; `queue` forces the next outcomes of any request.

Credentials are checked as the real service checks them, before anything else: with `api_keys` set, any other
API key is answered HTTP 400 INVALID_ARGUMENT with the ErrorInfo reason API_KEY_INVALID ("API key not valid.
Please pass a valid API key."); a request without any credentials gets 403 PERMISSION_DENIED; with `tokens` set,
any other Vertex AI bearer token gets 401 UNAUTHENTICATED (reason ACCESS_TOKEN_TYPE_UNSUPPORTED); projects in
`denied_projects` get Vertex AI's 403 PERMISSION_DENIED (reason IAM_PERMISSION_DENIED on
aiplatform.endpoints.predict); `service_disabled` answers 403 PERMISSION_DENIED with reason SERVICE_DISABLED.
`rpm_limit` enforces a quota of that many accepted requests in any sliding `rpm_window` seconds (60): a request
over it is refused with 429 RESOURCE_EXHAUSTED (QuotaFailure, and a RetryInfo until the window has room).

Structured answers (the verify stage): a request with `generationConfig.responseSchema` (and `responseMimeType`
application/json, else 400 INVALID_ARGUMENT as the real API answers) gets a JSON object with one value per schema
property. Boolean properties are yes/no questions (their `description`) about a synthetic poster: `attributes`
({image sha256: {'dark': 1, 'cool': 0, ...}}) gives the planted answer of the first attribute word in the question
(`ATTRIBUTE_WORDS`, several wordings each), other questions get a stable coin; `flip` flips that share of the answers
(per image and question); captions of those posters say each attribute in one sentence (`planted_caption`), or,
with `captions='freeform'`, as a vision-language model would: in one of several wordings or not at all, with filler
sentences, in any order (`freeform_caption`).
Per image, `rate_not_json` answers prose instead of JSON, `rate_missing` leaves out the last
property, `rate_refusal` declines in prose (OpenAI: `message.refusal`). Text-only requests: string properties get a
question written from the item's text, or, when the instruction asks for short names, a name for each group of
sentences (the attribute side most of them speak of, `NAMES`); boolean properties under an instruction that quotes a
name are sentences labelled as saying that name or not (`label`).

Server-side bookkeeping (`requests`, `ok_by_image`, `duplicates()`) lets tests and the benchmark check what
was really sent and answered. Run standalone: `python tests/fake_gemini.py --port 8765 --rate429 0.2`
(GET /_stats returns the bookkeeping as JSON).
"""
from __future__ import annotations
import argparse, base64, hashlib, itertools, json, random, re, threading, time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

OUTCOMES = ('ok', '429', '500', '503', 'hang', 'block', 'prompt_block', 'maxtokens', '400')   # plus 'auth' and 'quota' (recorded)

_GEN = re.compile(r'^/(?P<ver>v1[a-z0-9]*)/(?:projects/(?P<proj>[^/]+)/locations/(?P<loc>[^/]+)/)?(?P<pub>publishers/google/)?'
                  r'models/(?P<model>[^/:]+):(?P<method>generateContent|batchGenerateContent)$')
_BATCH = re.compile(r'^/(?P<ver>v1[a-z0-9]*)/batches/(?P<id>[^/:]+)$')
_UPLOAD_START = re.compile(r'^/upload/(?P<ver>v1[a-z0-9]*)/files$')
_UPLOAD_SESSION = re.compile(r'^/upload/session/(?P<id>[^/]+)$')
_DOWNLOAD = re.compile(r'^/(?P<ver>v1[a-z0-9]*)/files/(?P<id>[^/:]+):download$')


def caption_for(image_sha:str) -> str:
    "The caption the fake answers for an image (deterministic, so tests can check it; its sentences vary with the image)."
    tone = 'The image is dark and low-key.' if int(image_sha[0], 16) < 8 else 'The image is bright and high-key.'
    colour = 'Cool blue tones dominate.' if int(image_sha[1], 16) < 8 else 'Warm red tones dominate.'
    return f"A fake caption for image {image_sha[:12]}. {tone} {colour}"


# -- structured answers to yes/no questions about synthetic posters (the verify stage)
ATTRIBUTE_WORDS = {   # planted attribute: (words that ask whether it is present, words that ask whether it is absent)
    'bw': (('black and white', 'black-and-white', 'monochrome', 'monochromatic', 'grayscale', 'greyscale', 'desaturated'),
           ('colour', 'color', 'colourful', 'colorful', 'vivid colours', 'vivid colors')),
    'dark': (('dark', 'dim', 'dimly', 'low-key', 'low key', 'shadowy', 'gloomy', 'night'),
             ('bright', 'high-key', 'high key', 'well lit', 'well-lit', 'light background', 'pale')),
    'cool': (('cool', 'blue', 'bluish', 'cold', 'teal', 'cyan'), ('warm', 'red', 'reddish', 'orange', 'amber')),
    'cluttered': (('cluttered', 'busy', 'crowded', 'clutter', 'many small', 'many shapes', 'many objects'),
                  ('clean', 'minimal', 'minimalist', 'sparse', 'uncluttered', 'simple', 'single subject')),
    'big_title': (('large title', 'big title', 'large bold', 'bold title', 'large text', 'big text', 'large lettering', 'huge',
                   'dominant title', 'dominates the poster', 'large, bold', 'large bold text'),
                  ('small text', 'small title', 'tiny', 'small lettering', 'subtle title', 'small')),
}

def _word_at(text:str, word:str) -> int:
    "Position of `word` as a whole word (or phrase) in `text`; -1 when absent."
    m = re.search(r'(?<![a-z])' + re.escape(word) + r'(?![a-z])', text)
    return m.start() if m else -1

def worded_side(text:str, # a question or sentence
                attrs=None # the attributes to consider (default: all of ATTRIBUTE_WORDS)
               ) -> tuple[str, bool]|None:
    "The (attribute, present) with the most of its words in `text`, the earliest on a tie (None: no attribute's words)."
    q, best = text.lower(), None
    for attr in (ATTRIBUTE_WORDS if attrs is None else attrs):
        yes, no = ATTRIBUTE_WORDS[attr]
        for words, present in ((yes, True), (no, False)):
            hits = [x for x in (_word_at(q, w) for w in words) if x >= 0]
            if hits and (best is None or (len(hits), -min(hits)) > best[0]): best = ((len(hits), -min(hits)), attr, present)
    return None if best is None else best[1:]

def planted_answer(question:str, # a yes/no question about an image
                   attributes:dict # the image's planted attributes, e.g. {'dark': 1, 'cool': 0, ...}
                  ) -> bool|None:
    "The true answer for a synthetic poster: the attribute (and side) with the most words in the question, the earliest on a tie (None: no attribute is asked about)."
    best = worded_side(question, [a for a in ATTRIBUTE_WORDS if a in attributes])
    if best is None: return None
    attr, present = best
    return bool(attributes[attr]) == present

def request_kind(body:dict) -> str:
    "'structured' for a request with an answer schema (Gemini responseSchema, OpenAI json_schema), else 'caption'."
    if (body.get('generationConfig') or body.get('generation_config') or {}).get('responseSchema'): return 'structured'
    return 'structured' if (body.get('response_format') or {}).get('type') == 'json_schema' else 'caption'

def synth_attributes(folder) -> dict:
    "{image sha256: planted attributes} of the synthetic posters in `folder` (posters.csv and images/, see `make_synth`)."
    import csv
    from pathlib import Path
    folder, out = Path(folder), {}
    with open(folder/'posters.csv', newline='') as f:
        for r in csv.DictReader(f):
            sha = hashlib.sha256((folder/r['image']).read_bytes()).hexdigest()
            out[sha] = {a: int(r[a]) for a in ATTRIBUTE_WORDS if a in r}
    return out

def _unit(*parts) -> float:
    return int(hashlib.sha256('|'.join(map(str, parts)).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

PLANTED_SENTENCES = {   # what the fake captioner writes about a planted attribute: (present, absent)
    'dark': ('The image is dark and low-key.', 'The image is bright and high-key.'),
    'cool': ('Cool blue tones dominate.', 'Warm red tones dominate.'),
    'bw': ('It is in black and white.', 'It is in full colour.'),
    'cluttered': ('The layout is busy and cluttered.', 'The layout is clean and minimal.'),
    'big_title': ('The title is set in large bold text.', 'The title is in small text.'),
}

def planted_caption(image_sha:str, attributes:dict) -> str:
    "The caption the fake answers for a synthetic poster whose planted attributes it knows: one sentence per attribute."
    return ' '.join([f'A fake caption for image {image_sha[:12]}.'] +
                    [PLANTED_SENTENCES[a][0 if v else 1] for a, v in attributes.items() if a in PLANTED_SENTENCES])

FREEFORM = {   # what the fake writes with captions='freeform': each attribute's (present, absent) side in several wordings
    'dark': (('The poster is steeped in shadow.', 'A dim, night-time mood hangs over it.', 'Lighting is low and moody.',
              'Dark tones swallow most of the frame.'),
             ('The poster is flooded with light.', 'A sunny, daytime mood fills it.', 'Lighting is high and airy.',
              'Pale, bright tones cover most of the frame.')),
    'cool': (('Blue and teal dominate the palette.', 'The colours feel cold and wintry.', 'An icy, bluish tint covers the scene.',
              'Cool greens and blues prevail.'),
             ('Orange and red dominate the palette.', 'The colours feel hot and summery.', 'A golden, amber tint covers the scene.',
              'Warm reds and yellows prevail.')),
    'bw': (('The picture has no colour, only greys.', 'It is a monochrome image.', 'Everything is in black and white.',
            'The photo is grayscale.'), ()),
    'cluttered': (('Many objects crowd the frame.', 'The layout is busy and chaotic.', 'Detail fills every corner.',
                   'It looks cluttered and dense.'),
                  ('One subject stands in a lot of empty space.', 'The layout is sparse and simple.', 'Little else competes for attention.',
                   'It looks clean and uncrowded.')),
    'big_title': (('A huge title spans the poster.', 'The lettering is large and bold.', 'Big block type shouts the name.',
                   'The title takes up much of the space.'),
                  ('The title is small and discreet.', 'Only fine print appears.', 'The lettering is tiny.',
                   'Text plays a minor part.')),
}
FREEFORM_FILLER = ('It has a cinematic quality.', 'The texture looks a little grainy.', 'The mood is hard to pin down.',
                   'It would stand out on a shelf.', 'The framing is vertical.', 'There is a hint of mystery.',
                   'It looks like a recent release.', 'The edges are slightly soft.')

def freeform_caption(image_sha:str, attributes:dict) -> str:
    "A caption as a vision-language model writes one: each attribute in one of several wordings (or left unsaid), filler, any order (stable per image)."
    rng = random.Random(image_sha)
    parts = []
    for a, v in attributes.items():
        ways = FREEFORM.get(a, ((), ()))[0 if v else 1]
        if a == 'cool' and attributes.get('bw'): continue              # a black-and-white poster has no palette to speak of
        if ways and rng.random() >= 0.15: parts.append(rng.choice(ways))
    parts += rng.sample(FREEFORM_FILLER, rng.randint(1, 3))
    rng.shuffle(parts)
    return ' '.join(parts)

def written_question(item:str) -> str:
    "The question the fake's 'language model' writes for a concept item 'name (e.g. sentence; sentence)'."
    name = item.split(' (e.g.')[0].strip()
    ex = item.split(' (e.g.', 1)[1].split(';')[0].strip(' )') if ' (e.g.' in item else ''
    return f'Is the image {name}?' + (f' (as in: {ex})' if ex else '')


NAMES = {   # the name the fake's "language model" writes for a group of sentences about one side of an attribute
    ('dark', True): 'a dark, dimly lit image', ('dark', False): 'a bright, well-lit image',
    ('cool', True): 'cool blue colours', ('cool', False): 'warm red and orange colours',
    ('bw', True): 'black and white', ('bw', False): 'full colour',
    ('cluttered', True): 'a busy, cluttered layout', ('cluttered', False): 'a clean, minimal layout',
    ('big_title', True): 'a large, bold title', ('big_title', False): 'small text'}

def said_side(text:str) -> tuple[str, bool]|None:
    "The (attribute, present) a sentence speaks of, as the fake reads it: its own wordings, else the attribute words; None: none."
    for a, sides in FREEFORM.items():
        for present, ways in zip((True, False), sides):
            if text in ways: return a, present
    for a, sides in PLANTED_SENTENCES.items():
        if text in sides: return a, text == sides[0]
    return worded_side(text)

def _content(text:str) -> set:
    return {w for w in re.findall(r'[a-z]+', text.lower()) if len(w) > 3}

def written_name(item:str) -> str:
    "The name the fake writes for a naming item 'with: a | b; without: c | d': the side most 'with' sentences speak of, else the first sentence."
    with_ = item.split('; without:')[0].removeprefix('with:').strip().split(' | ')
    sides = Counter(s for s in map(said_side, with_) if s is not None)
    if sides and 2*sides.most_common(1)[0][1] > len(with_): return NAMES[sides.most_common(1)[0][0]]
    return with_[0].rstrip('.').lower()

def label(name:str, sentence:str) -> bool:
    "Whether the fake reads `sentence` as saying `name`: the same attribute side, else most of the name's content words."
    a, b = said_side(name), said_side(sentence)
    if a is not None: return a == b
    words = _content(name)
    return bool(words) and 2*len(words & _content(sentence)) >= len(words)


def _error(code, status, message, details=None):
    return {'error': {'code': code, 'message': message, 'status': status, **({'details': details} if details else {})}}


def _info(reason, domain='googleapis.com', **metadata):
    return {'@type': 'type.googleapis.com/google.rpc.ErrorInfo', 'reason': reason, 'domain': domain, 'metadata': metadata}


def bad_api_key(service='generativelanguage.googleapis.com'):
    "The real answer to a wrong or expired API key: 400 INVALID_ARGUMENT, ErrorInfo API_KEY_INVALID."
    msg = 'API key not valid. Please pass a valid API key.'
    return 400, _error(400, 'INVALID_ARGUMENT', msg, [_info('API_KEY_INVALID', service=service),
                       {'@type': 'type.googleapis.com/google.rpc.LocalizedMessage', 'locale': 'en-US', 'message': msg}])


def unauthenticated(method='google.cloud.aiplatform.v1beta1.PredictionService.GenerateContent'):
    "Vertex AI's answer to an invalid or expired access token: 401 UNAUTHENTICATED."
    return 401, _error(401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login '
                       'cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
                       [_info('ACCESS_TOKEN_TYPE_UNSUPPORTED', service='aiplatform.googleapis.com', method=method)])


def iam_denied(project, location, model):
    "Vertex AI's answer when the account lacks aiplatform.endpoints.predict on the project: 403 PERMISSION_DENIED."
    res = f'projects/{project}/locations/{location}/publishers/google/models/{model}'
    return 403, _error(403, 'PERMISSION_DENIED', f"Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/{res}' "
                       '(or it may not exist).', [_info('IAM_PERMISSION_DENIED', 'aiplatform.googleapis.com',
                                                        permission='aiplatform.endpoints.predict', resource=res)])


def service_disabled(vertex, project='123456789'):
    "The answer when the API is not enabled in the caller's project: 403 PERMISSION_DENIED, reason SERVICE_DISABLED."
    name, svc = ('Vertex AI API', 'aiplatform.googleapis.com') if vertex else ('Generative Language API', 'generativelanguage.googleapis.com')
    return 403, _error(403, 'PERMISSION_DENIED', f'{name} has not been used in project {project} before or it is disabled. Enable it by '
                       f'visiting https://console.developers.google.com/apis/api/{svc}/overview?project={project} then retry.',
                       [_info('SERVICE_DISABLED', service=svc, consumer=f'projects/{project}')])


class FakeServer:
    "Misbehaviour switches, lifecycle and server-side bookkeeping shared by the fake APIs (context manager)."
    def __init__(self, rate429=0., rate500=0., rate503=0., rate_hang=0., rate_block=0., rate_prompt_block=0.,
                 rate_maxtokens=0., hang_s=3., latency=0., retry_after:float|None=0.05, seed=0,
                 script:dict|None=None, queue:list|None=None, api_keys=None, tokens=None, denied_projects=(),
                 service_disabled=False, rpm_limit:int|None=None, rpm_window:float=60.0, host='127.0.0.1', port=0,
                 attributes:dict|None=None, flip:float=0., rate_not_json:float=0., rate_missing:float=0., rate_refusal:float=0.,
                 captions:str='plain'):
        self.rate429, self.rate500, self.rate503, self.rate_hang = rate429, rate500, rate503, rate_hang
        self.rate_block, self.rate_prompt_block, self.rate_maxtokens = rate_block, rate_prompt_block, rate_maxtokens
        self.hang_s, self.latency, self.retry_after, self.seed = hang_s, latency, retry_after, seed
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.queue = list(queue or [])
        self.api_keys = None if api_keys is None else set(api_keys)     # None: any key is valid
        self.tokens = None if tokens is None else set(tokens)           # None: any bearer token is valid
        self.denied_projects, self.service_disabled = set(denied_projects), service_disabled
        self.rpm_limit, self.rpm_window, self._accepted = rpm_limit, rpm_window, []
        # structured yes/no answers: planted attributes per image sha256, share of flipped answers (per image and question),
        # and per-image shares of answers that are not JSON, lack their last property, or (OpenAI) are refusals
        self.attributes, self.flip = dict(attributes or {}), flip
        self.captions = {'plain': planted_caption, 'freeform': freeform_caption}[captions]   # how captions of known posters read
        self.rate_not_json, self.rate_missing, self.rate_refusal = rate_not_json, rate_missing, rate_refusal
        self._rng, self._lock = random.Random(seed), threading.Lock()
        self.requests: list[dict] = []          # one row per caption request: t, route, model, image, outcome
        self.ok_by_image: Counter = Counter()   # image sha256 -> number of successful (ok/maxtokens) caption answers
        self.bodies: list[dict] = []            # the last request bodies (for tests inspecting what was sent)
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = None

    def _handler(self): raise NotImplementedError

    # -- lifecycle
    @property
    def url(self) -> str: return f'http://{self._server.server_address[0]}:{self._server.server_address[1]}'
    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
        self._thread.start(); return self
    def stop(self):
        self._server.shutdown(); self._server.server_close()
    def __enter__(self): return self.start()
    def __exit__(self, *a): self.stop()

    # -- bookkeeping
    def record(self, route, model, sha, outcome, body=None, **extra):
        "Log one request (and count a successful caption per image: structured answers, the verify stage's, are not captions); `kind` says which."
        if body is not None: extra.setdefault('kind', request_kind(body))
        with self._lock:
            self.requests.append({'t': time.time(), 'route': route, 'model': model, 'image': sha, 'outcome': outcome, **extra})
            if body is not None: self.bodies = (self.bodies + [body])[-50:]
            if outcome in ('ok', 'maxtokens') and extra.get('kind', 'caption') == 'caption': self.ok_by_image[sha] += 1
    def quota(self) -> float|None:
        "None when a request may be served now (it is counted), else the seconds until the sliding window has room."
        if not self.rpm_limit: return None
        with self._lock:
            now = time.monotonic()
            self._accepted = [t for t in self._accepted if t > now - self.rpm_window]
            if len(self._accepted) >= self.rpm_limit: return self._accepted[0] + self.rpm_window - now
            self._accepted.append(now)
        return None
    def busiest_window(self, outcomes=None) -> int:
        "The most requests (with `outcomes`, default all) that arrived within any `rpm_window` seconds."
        ts = sorted(r['t'] for r in self.requests if outcomes is None or r['outcome'] in outcomes)
        j = best = 0
        for i, t in enumerate(ts):
            while t - ts[j] >= self.rpm_window: j += 1
            best = max(best, i - j + 1)
        return best
    def duplicates(self) -> int:
        "Successful caption answers beyond the first for the same image (paid twice)."
        return sum(n - 1 for n in self.ok_by_image.values() if n > 1)
    def stats(self) -> dict:
        c = Counter(r['outcome'] for r in self.requests)
        return {'requests': len(self.requests), 'outcomes': dict(c), 'images_ok': len(self.ok_by_image),
                'duplicates': self.duplicates()}

    # -- structured answers
    def malformed(self, sha) -> str|None:
        "This image's stable malformed-answer fate: 'refusal', 'not_json', 'missing' or None."
        for name, rate in (('refusal', self.rate_refusal), ('not_json', self.rate_not_json), ('missing', self.rate_missing)):
            if rate and self._per_image(sha, name) < rate: return name
        return None
    def structured(self, sha:str, props:dict, kind:str='BOOLEAN', prompt:str='') -> str:
        "The JSON text answering `props` ({id: description}): booleans from the image's planted attributes, or text-only answers."
        if kind.upper() == 'STRING':
            if 'write a short name' in prompt: return json.dumps({k: written_name(str(d)) for k, d in props.items()})
            return json.dumps({k: written_question(str(d)) for k, d in props.items()})
        m = re.search(r'has this property, else false: "(.*?)"\.', prompt)
        if m: return json.dumps({k: label(m.group(1), str(d)) for k, d in props.items()})   # labelling sentences against a name
        attrs, out = self.attributes.get(sha, {}), {}
        for k, q in props.items():
            a = planted_answer(str(q), attrs)
            if a is None: a = _unit(self.seed, 'coin', sha, q) < 0.1 + 0.6*_unit('prevalence', q)   # not a planted attribute
            if self.flip and _unit(self.seed, 'flip', sha, q) < self.flip: a = not a
            out[k] = bool(a)
        fate = self.malformed(sha)
        if fate == 'not_json': return 'Here are my answers: ' + ', '.join(f"{k} {'yes' if v else 'no'}" for k, v in out.items())
        if fate == 'missing' and out: out.pop(list(out)[-1])
        return json.dumps(out)

    # -- behaviour
    def _per_image(self, sha, salt) -> float:
        return int(hashlib.sha256(f'{self.seed}|{salt}|{sha}'.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    def outcome(self, sha, transient=True) -> str:
        "What to answer for this image now: scripted, queued, a random transient error, or its stable fate."
        with self._lock:
            if self.script.get(sha): return self.script[sha].pop(0)
            if self.queue: return self.queue.pop(0)
            r = self._rng.random()
        if transient:
            for name, p in (('hang', self.rate_hang), ('429', self.rate429), ('500', self.rate500), ('503', self.rate503)):
                if r < p: return name
                r -= p
        if self._per_image(sha, 'prompt_block') < self.rate_prompt_block: return 'prompt_block'
        if self._per_image(sha, 'block') < self.rate_block: return 'block'
        if self._per_image(sha, 'maxtokens') < self.rate_maxtokens: return 'maxtokens'
        return 'ok'


class JSONHandler(BaseHTTPRequestHandler):
    "Keep-alive JSON request handler."
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def setup(self):
        super().setup()   # headers and body go out as two writes: without TCP_NODELAY each answer waits for a delayed ACK (~40 ms)
        import socket
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def send(self, code, body, headers=None, raw:bytes|None=None):
        data = raw if raw is not None else json.dumps(body).encode()
        try:
            self.send_response(code)
            self.send_header('Content-Type', 'application/octet-stream' if raw is not None else 'application/json; charset=UTF-8')
            self.send_header('Content-Length', str(len(data)))
            for k, v in (headers or {}).items(): self.send_header(k, v)
            self.end_headers(); self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError): pass
    def body(self) -> bytes:
        n = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(n) if n else b''


def quota_exceeded(wait):
    "The real answer to a request over the per-minute quota: 429 RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo."
    det = [{'@type': 'type.googleapis.com/google.rpc.QuotaFailure', 'violations': [
               {'quotaMetric': 'generativelanguage.googleapis.com/generate_content_requests',
                'quotaId': 'GenerateRequestsPerMinutePerProjectPerModel'}]},
           {'@type': 'type.googleapis.com/google.rpc.RetryInfo', 'retryDelay': f'{max(1, round(wait))}s'}]
    return 429, _error(429, 'RESOURCE_EXHAUSTED', 'You exceeded your current quota, please check your plan and billing details. For more '
                       'information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.', det)


class FakeGemini(FakeServer):
    "A threaded HTTP server answering like Gemini; `with FakeGemini(rate429=0.2) as g:` then point the SDK at `g.url`."
    def __init__(self, *args, batch_polls=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_polls, self.batches, self.files, self.uploads = batch_polls, {}, {}, {}

    def stats(self) -> dict: return {**super().stats(), 'batches': len(self.batches)}

    def answer(self, req:dict, model:str, transient=True) -> tuple[int, dict, dict, str, str]:
        "(http status, JSON body, extra headers, outcome, image sha) for one GenerateContentRequest body."
        try:
            parts = req['contents'][0]['parts']
            gc = req.get('generationConfig') or {}
            schema = gc.get('responseSchema')
            prompt = ' '.join(p.get('text', '') for p in parts)
            img = next((p['inlineData'] for p in parts if 'inlineData' in p), None)
            if img is None and schema is None: raise StopIteration('no inlineData part')
            data = prompt.encode() if img is None else base64.b64decode(img['data'].replace('-', '+').replace('_', '/'), validate=True)  # the SDK sends url-safe base64
            assert img is None or (img.get('mimeType') or img['mime_type']).startswith('image/')  # protobuf JSON accepts both spellings
        except (KeyError, IndexError, StopIteration, ValueError, AssertionError, TypeError) as e:
            return 400, _error(400, 'INVALID_ARGUMENT', f'Invalid request: {type(e).__name__} {e}'), {}, '400', ''
        if schema is not None:   # the real API's checks of a response schema
            if gc.get('responseMimeType') != 'application/json':
                return 400, _error(400, 'INVALID_ARGUMENT', 'Only JSON MIME type (application/json) is supported for response schema, '
                                   f"but got {gc.get('responseMimeType')!r}."), {}, '400', ''
            if str(schema.get('type', '')).upper() != 'OBJECT' or not schema.get('properties') or \
               any(str(v.get('type', '')).upper() not in ('BOOLEAN', 'STRING') for v in schema['properties'].values()):
                return 400, _error(400, 'INVALID_ARGUMENT', '* GenerateContentRequest.generation_config.response_schema: unsupported schema'), {}, '400', ''
        sha = hashlib.sha256(data).hexdigest()
        out = self.outcome(sha, transient)
        usage_in = 258 + len(prompt.split())
        if out == '429':
            ra = self.retry_after
            det = [{'@type': 'type.googleapis.com/google.rpc.QuotaFailure', 'violations': [{'quotaMetric': 'generate_content_requests'}]}]
            if ra is not None: det.append({'@type': 'type.googleapis.com/google.rpc.RetryInfo', 'retryDelay': f'{ra}s'})
            return 429, _error(429, 'RESOURCE_EXHAUSTED', 'Resource has been exhausted (e.g. check quota).', det), \
                ({'Retry-After': f'{ra}'} if ra is not None else {}), out, sha
        if out == '500': return 500, _error(500, 'INTERNAL', 'An internal error has occurred.'), {}, out, sha
        if out == '503': return 503, _error(503, 'UNAVAILABLE', 'The model is overloaded. Please try again later.'), {}, out, sha
        if out == '400': return 400, _error(400, 'INVALID_ARGUMENT', 'Unable to process input image.'), {}, out, sha
        version = model
        if out == 'prompt_block':
            return 200, {'promptFeedback': {'blockReason': 'PROHIBITED_CONTENT'},
                         'usageMetadata': {'promptTokenCount': usage_in, 'totalTokenCount': usage_in}, 'modelVersion': version}, {}, out, sha
        if out == 'block':
            return 200, {'candidates': [{'finishReason': 'SAFETY', 'index': 0, 'safetyRatings': [
                         {'category': 'HARM_CATEGORY_DANGEROUS_CONTENT', 'probability': 'HIGH', 'blocked': True},
                         {'category': 'HARM_CATEGORY_HARASSMENT', 'probability': 'NEGLIGIBLE'}]}],
                         'usageMetadata': {'promptTokenCount': usage_in, 'totalTokenCount': usage_in}, 'modelVersion': version}, {}, out, sha
        if schema is not None:
            kinds = {str(v.get('type', '')).upper() for v in schema['properties'].values()}
            text = self.structured(sha, {k: v.get('description', '') for k, v in schema['properties'].items()}, kinds.pop(), prompt)
            if self.malformed(sha) == 'refusal':   # Gemini has no refusal field: a model that declines writes prose
                text = "I'm sorry, but I can't help with answering questions about this image."
        else: text = self.captions(sha, self.attributes[sha]) if sha in self.attributes else caption_for(sha)
        if out == 'maxtokens': text = text[:30]
        n_out = len(text.split())
        cand = {'content': {'parts': [{'text': text}], 'role': 'model'}, 'index': 0,
                'finishReason': 'MAX_TOKENS' if out == 'maxtokens' else 'STOP'}
        return 200, {'candidates': [cand], 'modelVersion': version, 'responseId': f'r{next(self._ids)}',
                     'usageMetadata': {'promptTokenCount': usage_in, 'candidatesTokenCount': n_out, 'thoughtsTokenCount': 7,
                                       'totalTokenCount': usage_in + n_out + 7}}, {}, out, sha

    # -- batch mode
    def _run_batch(self, bid):
        b = self.batches[bid]
        if b['source'] == 'inline': reqs = [(r.get('metadata', {}), r['request']) for r in b['requests']]
        else:
            lines = self.files[b['file']]['data'].decode().splitlines()
            reqs = [({'key': j['key']}, j['request']) for j in map(json.loads, filter(None, lines))]
        outs = []
        for meta, req in reqs:
            code, body, _, out, sha = self.answer(req, b['model'], transient=False)
            self.record('batch', b['model'], sha, out, kind=request_kind(req))
            outs.append((meta, {'response': body} if code == 200 else {'error': body['error']}))
        if b['source'] == 'inline':
            b['output'] = {'inlinedResponses': {'inlinedResponses': [{**o, 'metadata': m} for m, o in outs]}}
        else:
            fid = f'batchout{bid}'
            data = '\n'.join(json.dumps({'key': m.get('key'), **o}) for m, o in outs).encode()
            self.files[fid] = {'data': data, 'mimeType': 'application/jsonl'}
            b['output'] = {'responsesFile': f'files/{fid}'}

    def _batch_json(self, bid):
        b = self.batches[bid]
        meta = {'@type': 'type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch',
                'model': f"models/{b['model']}", 'displayName': b['displayName'], 'name': f'batches/{bid}',
                'createTime': b['createTime'], 'state': b['state']}
        if b['state'] == 'BATCH_STATE_SUCCEEDED': meta.update(output=b['output'], endTime=b['createTime'])
        return {'name': f'batches/{bid}', 'metadata': meta, 'done': b['state'] == 'BATCH_STATE_SUCCEEDED'}

    # -- HTTP
    def _handler(self):
        fake = self
        class H(JSONHandler):
            def _auth(self, vertex):
                if vertex: return self.headers.get('Authorization', '').startswith('Bearer ') or bool(self.headers.get('x-goog-api-key'))
                return bool(self.headers.get('x-goog-api-key')) or 'key=' in (urlparse(self.path).query or '')
            def _refusal(self, m):
                "(code, body) when the credentials, project or API are refused, as the real service answers; else None."
                vertex = m['pub'] is not None
                key = self.headers.get('x-goog-api-key') or dict(q.split('=', 1) for q in (urlparse(self.path).query or '').split('&') if '=' in q).get('key')
                bearer = self.headers.get('Authorization', '')[len('Bearer '):] if self.headers.get('Authorization', '').startswith('Bearer ') else None
                if key is not None and bearer is None and fake.api_keys is not None and key not in fake.api_keys:
                    return bad_api_key('aiplatform.googleapis.com' if vertex else 'generativelanguage.googleapis.com')
                if vertex and bearer is not None and fake.tokens is not None and bearer not in fake.tokens: return unauthenticated()
                if fake.service_disabled: return service_disabled(vertex)
                if vertex and m['proj'] in fake.denied_projects: return iam_denied(m['proj'], m['loc'], m['model'])
                return None
            def do_GET(self):
                p = urlparse(self.path).path
                if p == '/_stats': return self.send(200, fake.stats())
                if m := _BATCH.match(p):
                    bid = m['id']
                    if bid not in fake.batches: return self.send(404, _error(404, 'NOT_FOUND', f'batch {bid} not found'))
                    b = fake.batches[bid]
                    b['polls'] += 1
                    if b['state'] != 'BATCH_STATE_SUCCEEDED':
                        if b['polls'] >= fake.batch_polls: fake._run_batch(bid); b['state'] = 'BATCH_STATE_SUCCEEDED'
                        else: b['state'] = 'BATCH_STATE_RUNNING'
                    return self.send(200, fake._batch_json(bid))
                if m := _DOWNLOAD.match(p):
                    f = fake.files.get(m['id'])
                    if f is None: return self.send(404, _error(404, 'NOT_FOUND', 'file not found'))
                    return self.send(200, None, raw=f['data'])
                self.send(404, _error(404, 'NOT_FOUND', f'no route {p}'))
            def do_POST(self):
                p = urlparse(self.path).path
                raw = self.body()
                if m := _UPLOAD_START.match(p):
                    if not self._auth(False): return self.send(403, _error(403, 'PERMISSION_DENIED', 'missing API key'))
                    sid = str(next(fake._ids))
                    fake.uploads[sid] = {'meta': (json.loads(raw or b'{}').get('file') or {}), 'data': b''}
                    return self.send(200, {}, {'X-Goog-Upload-URL': f'{fake.url}/upload/session/{sid}', 'X-Goog-Upload-Status': 'active'})
                if m := _UPLOAD_SESSION.match(p):
                    u = fake.uploads[m['id']]; u['data'] += raw
                    if 'finalize' not in self.headers.get('X-Goog-Upload-Command', ''):
                        return self.send(200, {}, {'X-Goog-Upload-Status': 'active'})
                    fid = f"up{m['id']}"
                    fake.files[fid] = {'data': u['data'], 'mimeType': u['meta'].get('mimeType', 'application/jsonl')}
                    f = {'name': f'files/{fid}', 'mimeType': fake.files[fid]['mimeType'], 'sizeBytes': str(len(u['data'])),
                         'state': 'ACTIVE', 'uri': f'{fake.url}/v1beta/files/{fid}', 'displayName': u['meta'].get('displayName', '')}
                    return self.send(200, {'file': f}, {'X-Goog-Upload-Status': 'final'})
                m = _GEN.match(p)
                if not m: return self.send(404, _error(404, 'NOT_FOUND', f'no route {p}'))
                vertex = m['pub'] is not None   # Vertex AI paths name the publisher (with projects/... or, express mode, without)
                if not self._auth(vertex):
                    code = 401 if vertex else 403
                    return self.send(code, _error(code, 'UNAUTHENTICATED' if vertex else 'PERMISSION_DENIED',
                                                  "Method doesn't allow unregistered callers."))
                if (refused := self._refusal(m)) is not None:
                    fake.record('vertex' if vertex else 'apikey', m['model'], '', 'auth', code=refused[0])
                    return self.send(*refused)
                try: req = json.loads(raw)
                except ValueError: return self.send(400, _error(400, 'INVALID_ARGUMENT', 'Invalid JSON payload'))
                if m['method'] == 'batchGenerateContent':
                    if vertex: return self.send(404, _error(404, 'NOT_FOUND', 'Vertex AI uses batchPredictionJobs'))
                    b = req.get('batch', {}); ic = b.get('inputConfig', {})
                    bid = str(next(fake._ids))
                    rec = {'model': m['model'], 'displayName': b.get('displayName', ''), 'state': 'BATCH_STATE_PENDING', 'polls': 0,
                           'createTime': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
                    if 'fileName' in ic: rec.update(source='file', file=ic['fileName'].split('files/')[-1])
                    else: rec.update(source='inline', requests=ic.get('requests', {}).get('requests', []))
                    fake.batches[bid] = rec
                    return self.send(200, fake._batch_json(bid))
                if (wait := fake.quota()) is not None:
                    fake.record('vertex' if vertex else 'apikey', m['model'], '', 'quota')
                    code, body = quota_exceeded(wait)
                    return self.send(code, body, {'Retry-After': str(max(1, round(wait)))})
                code, body, headers, out, sha = fake.answer(req, m['model'])
                fake.record('vertex' if vertex else 'apikey', m['model'], sha, out, req, version=m['ver'], project=m['proj'], location=m['loc'])
                if out == 'hang':
                    time.sleep(fake.hang_s)
                    return self.send(504, _error(504, 'DEADLINE_EXCEEDED', 'Deadline exceeded'))
                if fake.latency: time.sleep(fake.latency)
                self.send(code, body, headers)
        return H


def serve(cls, argv=None):
    "Command line: run a fake server class with switches until Ctrl-C."
    ap = argparse.ArgumentParser(description=(cls.__doc__ or '').split('\n')[0])
    ap.add_argument('--host', default='127.0.0.1'); ap.add_argument('--port', type=int, default=8765)
    for k in ('rate429', 'rate500', 'rate503', 'rate_hang', 'rate_block', 'rate_prompt_block', 'rate_maxtokens',
              'hang_s', 'latency', 'retry_after'):
        ap.add_argument('--' + k, type=float, default=None)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--rpm_limit', type=int, default=None, help='refuse requests beyond this many in any sliding minute')
    ap.add_argument('--api_key', dest='api_keys', action='append', default=None, help='the only valid API key (repeatable)')
    ap.add_argument('--synth', default=None, help="a folder of synthetic posters (posters.csv, images/): captions and yes/no answers from their planted attributes")
    ap.add_argument('--captions', default=None, choices=['plain', 'freeform'], help="how captions of the --synth posters read")
    kw = {k: v for k, v in vars(ap.parse_args(argv)).items() if v is not None}
    if 'synth' in kw: kw['attributes'] = synth_attributes(kw.pop('synth'))
    srv = cls(**kw).start()
    print(f'{cls.__name__} listening on {srv.url}  (GET /_stats for the bookkeeping)', flush=True)
    try:
        while True: time.sleep(3600)
    except KeyboardInterrupt: srv.stop()


if __name__ == '__main__': serve(FakeGemini)
