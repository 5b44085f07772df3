"""A local fake of an OpenAI-compatible chat completions server (Ollama, vLLM, LM Studio), for offline tests.

POST /v1/chat/completions with the image as a `data:` URL in an `image_url` content part, answered in the
OpenAI wire format. Same misbehaviour switches and bookkeeping as `fake_gemini.FakeServer`: 429s (with
`retry-after` / `retry-after-ms` headers), 5xx, hangs, `block` (finish_reason `content_filter`),
`prompt_block` (HTTP 400 with code `content_filter`, as Azure OpenAI does) and `maxtokens` (finish_reason
`length`). With `api_keys` set, any other bearer token is answered 401 `invalid_api_key` as OpenAI does;
`rpm_limit` refuses requests over the sliding-window quota with 429 `rate_limit_exceeded`.
Structured outputs: `response_format` `{"type": "json_schema", "json_schema": {name, strict, schema}}` is checked as
OpenAI checks it (a name; with `strict`, `additionalProperties: false` and every property required, else 400
`invalid_json_schema`) and answered as `fake_gemini.FakeServer.structured` answers (planted attributes, `flip`,
`rate_not_json`, `rate_missing`); `rate_refusal` answers `message.refusal` with `content: null`, as OpenAI does. Run standalone: `python tests/fake_openai.py --port 8766 --rate429 0.2`.
"""
from __future__ import annotations
import base64, hashlib, json, sys, time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).parent))
from fake_gemini import FakeServer, JSONHandler, caption_for, serve  # noqa: E402


def _err(message, type_, code=None):
    return {'error': {'message': message, 'type': type_, 'param': None, 'code': code}}


class FakeOpenAI(FakeServer):
    "A threaded HTTP server answering `/v1/chat/completions` like an OpenAI-compatible VLM server."
    def answer(self, req:dict) -> tuple[int, dict, dict, str, str]:
        "(http status, JSON body, extra headers, outcome, image sha) for one chat completions request."
        try:
            parts = req['messages'][-1]['content']
            rf = req.get('response_format') or {}
            prompt = ' '.join(p.get('text', '') for p in parts if p.get('type') == 'text')
            url = next((p['image_url']['url'] for p in parts if p.get('type') == 'image_url'), None)
            if url is None and rf.get('type') != 'json_schema': raise StopIteration('no image_url part')
            if url is not None:
                head, b64 = url.split(',', 1)
                assert head.startswith('data:image/') and head.endswith(';base64')
                data = base64.b64decode(b64, validate=True)
            else: data = prompt.encode()
            model = req['model']
        except (KeyError, IndexError, StopIteration, ValueError, AssertionError, TypeError) as e:
            return 400, _err(f'invalid request: {type(e).__name__} {e}', 'invalid_request_error'), {}, '400', ''
        schema = None
        if rf.get('type') == 'json_schema':   # the checks of strict structured outputs
            js = rf.get('json_schema') or {}
            schema = js.get('schema') or {}
            props = schema.get('properties') or {}
            if not js.get('name'):
                return 400, _err("Missing required parameter: 'response_format.json_schema.name'.", 'invalid_request_error', 'missing_required_parameter'), {}, '400', ''
            if js.get('strict') and (schema.get('additionalProperties') is not False or sorted(schema.get('required') or []) != sorted(props)):
                return 400, _err(f"Invalid schema for response_format '{js['name']}': In context=(), 'additionalProperties' is required to be "
                                 "supplied and to be false, and 'required' must list every key in 'properties'.", 'invalid_request_error',
                                 'invalid_json_schema'), {}, '400', ''
        elif rf and rf.get('type') not in ('text', 'json_object'):
            return 400, _err(f"Invalid value: '{rf.get('type')}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
                             'invalid_request_error', 'invalid_value'), {}, '400', ''
        sha = hashlib.sha256(data).hexdigest()
        out = self.outcome(sha)
        n_in = 300 + len(prompt.split())
        if out == '429':
            h = {} if self.retry_after is None else {'retry-after': f'{self.retry_after}', 'retry-after-ms': f'{self.retry_after*1000:.0f}'}
            return 429, _err('Rate limit reached for requests', 'requests', 'rate_limit_exceeded'), h, out, sha
        if out in ('500', '503'): return int(out), _err('The server had an error while processing your request.', 'server_error'), {}, out, sha
        if out == '400': return 400, _err('Invalid image.', 'invalid_request_error', 'invalid_image'), {}, out, sha
        if out == 'prompt_block':
            return 400, _err("The response was filtered due to the prompt triggering content management policy.",
                             'invalid_request_error', 'content_filter'), {}, out, sha
        text, finish, refusal = self.captions(sha, self.attributes[sha]) if sha in self.attributes else caption_for(sha), 'stop', None
        if schema is not None:
            kinds = {str(v.get('type', '')).upper() for v in schema['properties'].values()}
            text = self.structured(sha, {k: v.get('description', '') for k, v in schema['properties'].items()}, kinds.pop(), prompt)
            if self.malformed(sha) == 'refusal': text, refusal = None, "I'm sorry, I can't help with that request."
        if out == 'block': text, finish, refusal = None, 'content_filter', None
        if out == 'maxtokens': text, finish = (text or '')[:30], 'length'
        n_out = len((text or '').split())
        return 200, {'id': f'chatcmpl-{next(self._ids)}', 'object': 'chat.completion', 'created': int(time.time()), 'model': model,
                     'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': text, 'refusal': refusal}, 'finish_reason': finish}],
                     'usage': {'prompt_tokens': n_in, 'completion_tokens': n_out, 'total_tokens': n_in + n_out}}, {}, out, sha

    def _handler(self):
        fake = self
        class H(JSONHandler):
            def do_GET(self):
                p = urlparse(self.path).path
                if p == '/_stats': return self.send(200, fake.stats())
                if p == '/v1/models': return self.send(200, {'object': 'list', 'data': [{'id': 'fake-vlm', 'object': 'model'}]})
                self.send(404, _err(f'no route {p}', 'invalid_request_error'))
            def do_POST(self):
                p = urlparse(self.path).path
                raw = self.body()
                if p != '/v1/chat/completions': return self.send(404, _err(f'no route {p}', 'invalid_request_error'))
                auth = self.headers.get('Authorization', '')
                if not auth.startswith('Bearer '):
                    return self.send(401, _err('missing bearer token', 'invalid_request_error', 'invalid_api_key'))
                if fake.api_keys is not None and auth[len('Bearer '):] not in fake.api_keys:
                    fake.record('openai', '', '', 'auth', code=401)
                    return self.send(401, _err('Incorrect API key provided: sk-***. You can find your API key at '
                                               'https://platform.openai.com/account/api-keys.', 'invalid_request_error', 'invalid_api_key'))
                if (wait := fake.quota()) is not None:
                    fake.record('openai', '', '', 'quota')
                    return self.send(429, _err(f'Rate limit reached on requests per min (RPM): Limit {fake.rpm_limit}. Please try again in '
                                               f'{wait:.1f}s.', 'requests', 'rate_limit_exceeded'), {'retry-after': f'{wait:.1f}'})
                try: req = json.loads(raw)
                except ValueError: return self.send(400, _err('invalid JSON', 'invalid_request_error'))
                code, body, headers, out, sha = fake.answer(req)
                fake.record('openai', req.get('model', ''), sha, out, req)
                if out == 'hang':
                    time.sleep(fake.hang_s)
                    return self.send(504, _err('timeout', 'server_error'))
                if fake.latency: time.sleep(fake.latency)
                self.send(code, body, headers)
        return H


if __name__ == '__main__': serve(FakeOpenAI)
