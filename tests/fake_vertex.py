"""A local fake of Vertex AI batch prediction and of `countTokens`, on top of `fake_gemini.FakeGemini`.

Everything `FakeGemini` serves (generateContent on both routes, Gemini API batches and files) plus:

- Vertex AI batch prediction jobs (`projects.locations.batchPredictionJobs`), as the real `google-genai` SDK calls them:
  POST /{version}/projects/{p}/locations/{l}/batchPredictionJobs          create (body: displayName, model,
       inputConfig {instancesFormat: jsonl, gcsSource {uris}}, outputConfig {predictionsFormat: jsonl,
       gcsDestination {outputUriPrefix}})
  GET  /{version}/projects/{p}/locations/{l}/batchPredictionJobs/{id}     get (each poll moves the job on)
  GET  /{version}/projects/{p}/locations/{l}/batchPredictionJobs?filter=display_name="..."   list
  States JOB_STATE_PENDING -> JOB_STATE_RUNNING -> JOB_STATE_SUCCEEDED (or JOB_STATE_FAILED with an `error`).
  The job reads its JSONL input ({"request": <GenerateContentRequest>} per line) from Cloud Storage and writes
  `<outputUriPrefix>/prediction-model-<time>/predictions.jsonl` there: one row per request, in shuffled order,
  `{"status": "", "processed_time": ..., "request": <echoed>, "response": <GenerateContentResponse>}` or, for a
  row that failed, a non-empty `status` holding the error. Cloud Storage is whatever `STORAGE_EMULATOR_HOST`
  points at (the tests start `gcp-storage-emulator`), reached with `google-cloud-storage`.
- GET /{version}/batches (list of Gemini API batch jobs).
- POST .../models/{model}:countTokens on both routes: {"totalTokens": N} (free; counted in `count_calls`, never in
  `requests`, which holds generateContent calls only). Text counts one token per word or punctuation mark, an
  inline image 258.

`job_fates` lists what happens to the jobs in the order they are created: 'succeed' (the default) or 'fail'
(JOB_STATE_FAILED, no output). Outcomes per image (blocks, truncation, row errors) follow FakeGemini's
switches (`script`, `rate_block`...). `jobs_created` counts create calls. Run standalone:
`STORAGE_EMULATOR_HOST=http://127.0.0.1:9023 python tests/fake_vertex.py --port 8765`.
"""
from __future__ import annotations
import json, os, random, re, threading, time
from urllib.parse import parse_qs, urlparse

from fake_gemini import FakeGemini, _error, request_kind, serve

_JOBS = re.compile(r'^/(?P<ver>v1[a-z0-9]*)/projects/(?P<proj>[^/]+)/locations/(?P<loc>[^/]+)/batchPredictionJobs(?:/(?P<id>[^/:]+))?$')
_COUNT = re.compile(r'^/(?P<ver>v1[a-z0-9]*)/(?:projects/(?P<proj>[^/]+)/locations/(?P<loc>[^/]+)/)?(?P<pub>publishers/google/)?'
                    r'models/(?P<model>[^/:]+):countTokens$')
_API_LIST = re.compile(r'^/(?P<ver>v1[a-z0-9]*)/batches$')
_MODEL = re.compile(r'^publishers/google/models/(?P<model>[^/]+)$')
_HTTP_REASON = {400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 500: 'Internal Server Error'}


def _now() -> str: return time.strftime('%Y-%m-%dT%H:%M:%S.000000Z', time.gmtime())


def count_tokens(body:dict) -> int:
    "The fake's token count of a countTokens body: words and punctuation marks of the text, 258 per inline image."
    contents = body.get('contents') or (body.get('generateContentRequest') or {}).get('contents') or []
    n = 0
    for c in contents:
        for p in c.get('parts') or []:
            if 'text' in p: n += len(re.findall(r"\w+|[^\w\s]", p['text']))
            if 'inlineData' in p or 'inline_data' in p: n += 258
    return n


class FakeVertex(FakeGemini):
    "FakeGemini plus Vertex AI batch prediction jobs (Cloud Storage in and out) and countTokens."
    def __init__(self, *args, job_polls:int=2, job_fates:list|None=None, gcs_endpoint:str|None=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.job_polls, self.job_fates = job_polls, list(job_fates or [])
        self.gcs_endpoint = gcs_endpoint
        self.jobs: dict[str, dict] = {}
        self.jobs_created = 0
        self.count_calls: list[dict] = []
        self._gcs, self._jobs_lock = None, threading.Lock()

    def stats(self) -> dict: return {**super().stats(), 'jobs_created': self.jobs_created, 'count_tokens': len(self.count_calls)}

    # -- Cloud Storage (the emulator), as the real service reads and writes the bucket
    @property
    def gcs(self):
        if self._gcs is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage
            ep = self.gcs_endpoint or os.environ.get('STORAGE_EMULATOR_HOST')
            if not ep: raise RuntimeError('FakeVertex needs a Cloud Storage emulator (gcs_endpoint or STORAGE_EMULATOR_HOST)')
            self._gcs = storage.Client(project='fake-vertex', credentials=AnonymousCredentials(), client_options={'api_endpoint': ep})
        return self._gcs

    def _blob(self, uri:str):
        bucket, _, path = uri[5:].partition('/')
        return self.gcs.bucket(bucket).blob(path)

    # -- jobs
    def _job_json(self, jid:str) -> dict:
        j = self.jobs[jid]
        out = {k: j[k] for k in ('name', 'displayName', 'model', 'inputConfig', 'outputConfig', 'state', 'createTime', 'updateTime')}
        for k in ('startTime', 'endTime', 'error', 'outputInfo', 'completionStats'):
            if k in j: out[k] = j[k]
        return out

    def _create(self, proj, loc, body) -> tuple[int, dict]:
        ic, oc = body.get('inputConfig') or {}, body.get('outputConfig') or {}
        uris = (ic.get('gcsSource') or {}).get('uris') or []
        prefix = (oc.get('gcsDestination') or {}).get('outputUriPrefix') or ''
        m = _MODEL.match(body.get('model') or '')
        problems = [why for bad, why in ((not m, f"model must be publishers/google/models/MODEL, not {body.get('model')!r}"),
                                         (ic.get('instancesFormat') != 'jsonl', 'inputConfig.instancesFormat must be jsonl'),
                                         (len(uris) != 1 or not uris[0].startswith('gs://'), 'inputConfig.gcsSource.uris: one gs:// URI'),
                                         (oc.get('predictionsFormat') != 'jsonl', 'outputConfig.predictionsFormat must be jsonl'),
                                         (not prefix.startswith('gs://'), 'outputConfig.gcsDestination.outputUriPrefix: a gs:// prefix'),
                                         (not body.get('displayName'), 'displayName is required')) if bad]
        if problems: return 400, _error(400, 'INVALID_ARGUMENT', '; '.join(problems))
        with self._jobs_lock:
            self.jobs_created += 1
            jid = str(1000 + len(self.jobs) + 1)
            fate = self.job_fates.pop(0) if self.job_fates else 'succeed'
            self.jobs[jid] = {'name': f'projects/{proj}/locations/{loc}/batchPredictionJobs/{jid}', 'displayName': body['displayName'],
                              'model': body['model'], 'inputConfig': ic, 'outputConfig': oc, 'state': 'JOB_STATE_PENDING',
                              'createTime': _now(), 'updateTime': _now(), 'polls': 0, 'fate': fate}
        return 200, self._job_json(jid)

    def _advance(self, jid:str):
        "One poll: PENDING -> RUNNING -> (after `job_polls` polls) the job runs and ends."
        j = self.jobs[jid]
        if j['state'] not in ('JOB_STATE_PENDING', 'JOB_STATE_RUNNING'): return
        j['polls'] += 1; j['updateTime'] = _now()
        if j['polls'] < self.job_polls:
            j['state'] = 'JOB_STATE_RUNNING'; j.setdefault('startTime', _now()); return
        self._run(j)

    def _run(self, j:dict):
        model = _MODEL.match(j['model'])['model']
        j.setdefault('startTime', _now())
        if j['fate'] == 'fail':
            j.update(state='JOB_STATE_FAILED', endTime=_now(),
                     error={'code': 13, 'message': 'Internal error occurred. Please retry or contact support.'})
            return
        src = j['inputConfig']['gcsSource']['uris'][0]
        blob = self._blob(src)
        if not blob.exists():
            j.update(state='JOB_STATE_FAILED', endTime=_now(), error={'code': 5, 'message': f'Failed to read {src}: object not found.'})
            return
        rows, ok, failed = [], 0, 0
        for line in blob.download_as_bytes().decode().splitlines():
            if not line.strip(): continue
            req = json.loads(line)['request']
            code, body, _, out, sha = self.answer(req, model, transient=False)
            self.record('vertex-batch', model, sha, out, kind=request_kind(req))
            row = {'status': '', 'processed_time': _now().replace('000000Z', '000+00:00'), 'request': req}
            if code == 200: row['response'] = body; ok += 1
            else: row['status'] = f"{_HTTP_REASON.get(code, 'Error')}: {json.dumps(body)}"; failed += 1
            rows.append(row)
        random.Random(len(rows)).shuffle(rows)                  # the real service does not keep the input order
        outdir = j['outputConfig']['gcsDestination']['outputUriPrefix'].rstrip('/') + \
                 f"/prediction-model-{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}.{len(self.jobs):06d}Z"
        self._blob(outdir + '/predictions.jsonl').upload_from_string('\n'.join(map(json.dumps, rows)) + '\n',
                                                                     content_type='application/jsonl')
        j.update(state='JOB_STATE_SUCCEEDED', endTime=_now(), outputInfo={'gcsOutputDirectory': outdir},
                 completionStats={'successfulCount': str(ok), 'failedCount': str(failed), 'incompleteCount': '0'})

    # -- HTTP
    def _handler(self):
        fake, Base = self, super()._handler()
        class H(Base):
            def do_GET(self):
                u = urlparse(self.path)
                if m := _JOBS.match(u.path):
                    if not self._auth(True): return self.send(401, _error(401, 'UNAUTHENTICATED', 'Request is missing required authentication credential.'))
                    if m['id'] is None:
                        q = parse_qs(u.query)
                        f = re.match(r'^display_name="(?P<dn>[^"]*)"$', (q.get('filter') or [''])[0])
                        jobs = [fake._job_json(i) for i, j in fake.jobs.items() if f is None or j['displayName'] == f['dn']]
                        return self.send(200, {'batchPredictionJobs': jobs} if jobs else {})
                    if m['id'] not in fake.jobs:
                        return self.send(404, _error(404, 'NOT_FOUND', f"The BatchPredictionJob does not exist."))
                    with fake._jobs_lock: fake._advance(m['id'])
                    return self.send(200, fake._job_json(m['id']))
                if m := _API_LIST.match(u.path):
                    return self.send(200, {'operations': [fake._batch_json(b) for b in fake.batches]} if fake.batches else {})
                return super().do_GET()

            def do_POST(self):
                u = urlparse(self.path)
                m, c = _JOBS.match(u.path), _COUNT.match(u.path)
                if not m and not c: return super().do_POST()
                vertex = bool(m) or c['pub'] is not None
                raw = self.body()
                if not self._auth(vertex):
                    code = 401 if vertex else 403
                    return self.send(code, _error(code, 'UNAUTHENTICATED' if vertex else 'PERMISSION_DENIED', "Method doesn't allow unregistered callers."))
                try: body = json.loads(raw or b'{}')
                except ValueError: return self.send(400, _error(400, 'INVALID_ARGUMENT', 'Invalid JSON payload'))
                if m:
                    if m['id'] is not None: return self.send(404, _error(404, 'NOT_FOUND', f'no route {u.path}'))
                    return self.send(*fake._create(m['proj'], m['loc'], body))
                n = count_tokens(body)
                with fake._lock: fake.count_calls.append({'route': 'vertex' if vertex else 'apikey', 'model': c['model'], 'tokens': n})
                return self.send(200, {'totalTokens': n, **({'totalBillableCharacters': len(raw)} if vertex else
                                                             {'promptTokensDetails': [{'modality': 'TEXT', 'tokenCount': n}]})})
        return H


if __name__ == '__main__': serve(FakeVertex)
