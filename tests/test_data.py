"Data stage: the image downloader against a scripted local server, bad-input errors, and the synthetic posters."
import collections, io, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from posterlens.core import PosterlensError, load_settings, read_json, read_parquet
from posterlens.data import ATTRIBUTES, EFFECTS, INTERCEPT, _RetryableStatus, _wait, download_images, load_dataset, make_synth, url_name
from tenacity import RetryCallState, Retrying
from posterlens.pipeline import run_stage


def stage_data(cfg, force=False):
    "The data stage through the pipeline (loaded when fresh, saying so)."
    return run_stage(cfg, 'data', force=force)


def _image_bytes(fmt="JPEG", color=(200, 40, 40), size=(60, 90)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


JPEG, PNG = _image_bytes(), _image_bytes("PNG", (10, 90, 200))


class _Handler(BaseHTTPRequestHandler):
    "Scripted routes; every request is counted in `server.hits`."

    def log_message(self, *a): pass

    def _send(self, code, body=b"", ctype="image/jpeg", headers=(), length=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in headers: self.send_header(k, v)
        self.end_headers()
        try: self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError): pass

    def do_GET(self):
        path = self.path.split("?")[0]
        with self.server.lock:
            self.server.hits[path] += 1
            n = self.server.hits[path]
        route = path.strip("/").split("/")[0]
        if route == "ok": self._send(200, JPEG)
        elif route == "png-named-jpg": self._send(200, PNG, "image/png")
        elif route == "missing": self._send(404, b"not found", "text/plain")
        elif route == "always500": self._send(500, b"oops", "text/plain")
        elif route == "flaky": self._send(500, b"oops", "text/plain") if n == 1 else self._send(200, JPEG)
        elif route == "busy":   # 429 with Retry-After the first time
            self._send(429, b"slow down", "text/plain", [("Retry-After", "1")]) if n == 1 else self._send(200, JPEG)
        elif route == "slow-once":
            if n == 1: time.sleep(1.0)
            self._send(200, JPEG)
        elif route == "slow": time.sleep(1.0); self._send(200, JPEG)
        elif route == "cut":    # promises the whole JPEG, sends half, closes
            self._send(200, JPEG[: len(JPEG) // 2], length=len(JPEG))
        elif route == "half-jpeg": self._send(200, JPEG[: len(JPEG) // 2])   # honest length, broken image
        elif route == "html": self._send(200, b"<html><body>Please log in</body></html>", "image/jpeg")
        elif route == "down-for-a-while":   # 503 until the server's `recover_after` requests to this path
            self._send(503, b"maintenance", "text/plain") if n <= self.server.recover_after else self._send(200, JPEG)
        else: self._send(404, b"", "text/plain")


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads, srv.hits, srv.lock, srv.recover_after = True, collections.Counter(), threading.Lock(), 2
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    srv.url = lambda p: f"http://127.0.0.1:{srv.server_port}/{p}"
    yield srv
    srv.shutdown(); srv.server_close()


FAST = dict(concurrency=4, retries=2, timeout=0.4, backoff=0.01, max_wait=5, progress=False)


def _leftovers(dest):
    "Files in `dest` that are not final downloads (temporary or partial)."
    return [f.name for f in Path(dest).iterdir() if f.name.startswith(".") or f.suffix == ".part"]


def test_download_final_statuses(server, tmp_path):
    cases = {"ok/a.jpg": "ok", "png-named-jpg/b.jpg": "ok", "missing/c.jpg": "http_error",
             "always500/d.jpg": "transient", "flaky/e.jpg": "ok", "slow-once/f.jpg": "ok", "slow/g.jpg": "transient",
             "cut/h.jpg": "transient", "half-jpeg/i.jpg": "not_image", "html/j.jpg": "not_image"}
    urls = [server.url(p) for p in cases] + ["not a url", "ftp://example.org/a.jpg"]
    res = download_images(urls, tmp_path / "img", **FAST)
    assert list(res.url) == urls
    assert dict(zip(cases, res.status[:-2])) == cases
    assert res.status.iloc[-2:].tolist() == ["unsupported", "unsupported"] and "ftp://" in res.error.iloc[-1]
    assert all(".part" not in e for e in res.error)                  # reasons name the URL, never the temporary file
    assert server.url("html/j.jpg") in res.error[9]
    # retries happen only where they can help: 4xx once, 5xx/timeouts/cut bodies up to 1 + retries times
    hits = server.hits
    assert hits["/missing/c.jpg"] == 1 and hits["/html/j.jpg"] == 1
    assert hits["/always500/d.jpg"] == 3 and hits["/flaky/e.jpg"] == 2 and hits["/cut/h.jpg"] == 3
    assert "HTTP 404" in res.error[2] and "HTTP 500" in res.error[3] and "timeout" in res.error[6]
    # ok files are named by the URL hash plus the extension of the real format, and decode
    ok = res[res.status == "ok"]
    assert all(Path(p).name.startswith(url_name(u)) for u, p in zip(ok.url, ok.path))
    assert Path(ok.path.iloc[1]).suffix == ".png"
    for p in ok.path:
        with Image.open(p) as im: im.load()
    # nothing else left behind: no partial or temporary files, no files for failed URLs
    assert _leftovers(tmp_path / "img") == [".failures.json"]         # only the record of the permanent failures
    assert sorted(f.name for f in (tmp_path / "img").iterdir() if f.name != ".failures.json") == sorted(Path(p).name for p in ok.path)
    assert res.path[res.status != "ok"].isna().all()


def _retry_wait(exc, attempt=1, backoff=FAST["backoff"], max_wait=FAST["max_wait"]):
    "The wait the downloader's retry policy gives after `attempt` attempts that ended with `exc`."
    rs = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    rs.attempt_number = attempt
    rs.set_exception((type(exc), exc, None))
    return _wait(backoff, max_wait)(rs)


def test_download_honours_retry_after(server, tmp_path):
    res = download_images([server.url("busy/x.jpg")], tmp_path, **FAST)
    assert res.status.tolist() == ["ok"] and server.hits["/busy/x.jpg"] == 2
    # the wait before that retry: what the server asked (Retry-After: 1), although the backoff alone is 0.01 s
    assert 1.0 <= _retry_wait(_RetryableStatus(429, wait=1.0)) <= FAST["max_wait"]
    assert _retry_wait(_RetryableStatus(503)) < 0.05                    # no Retry-After: the backoff alone
    assert _retry_wait(_RetryableStatus(429, wait=600.0)) == FAST["max_wait"]   # never longer than max_wait


def test_download_resumes_without_new_requests(server, tmp_path):
    urls = [server.url("ok/1.jpg"), server.url("ok/2.jpg"), server.url("missing/3.jpg"), server.url("ok/1.jpg")]
    first = download_images(urls, tmp_path, **FAST)
    assert first.status.tolist() == ["ok", "ok", "http_error", "ok"]
    assert server.hits["/ok/1.jpg"] == 1          # a duplicate URL is fetched once
    before = dict(server.hits)
    second = download_images(urls, tmp_path, **FAST)
    assert second.status.tolist() == first.status.tolist() and second.path.equals(first.path)
    assert server.hits["/ok/1.jpg"] == before["/ok/1.jpg"] and server.hits["/ok/2.jpg"] == before["/ok/2.jpg"]
    assert server.hits["/missing/3.jpg"] == before["/missing/3.jpg"]       # a 404 is permanent: not asked again
    assert "an earlier run" in second.error[2]
    download_images(urls, tmp_path, **FAST, force=True)
    assert server.hits["/missing/3.jpg"] == before["/missing/3.jpg"] + 1   # unless forced


def test_download_replaces_corrupt_previous_file(server, tmp_path):
    url = server.url("ok/z.jpg")
    (tmp_path / (url_name(url) + ".png")).write_bytes(JPEG[:100])   # damaged on disk after a download
    res = download_images([url], tmp_path, **FAST)
    assert res.status.tolist() == ["ok"] and server.hits["/ok/z.jpg"] == 1
    assert Path(res.path[0]).read_bytes() == JPEG and [f.name for f in tmp_path.iterdir()] == [Path(res.path[0]).name]


def test_download_clears_partial_files_of_killed_runs(server, tmp_path):
    url = server.url("ok/k.jpg")
    dead = tmp_path / f".{url_name(url)}.999999999.1.part"    # what a killed run leaves: a hidden partial file
    dead.write_bytes(JPEG[:50])
    res = download_images([url], tmp_path, **FAST)
    assert res.status.tolist() == ["ok"] and not dead.exists() and _leftovers(tmp_path) == []


# -- bad inputs ------------------------------------------------------------------------------------------------

def _cfg(tmp_path, **ov):
    return load_settings("smoke", {"runs_dir": str(tmp_path / "runs"), "download_dir": str(tmp_path / "dl"), **ov})


def _csv(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def posters(tmp_path):
    (tmp_path / "p").mkdir()
    for k in range(3): (tmp_path / "p" / f"{k}.jpg").write_bytes(_image_bytes(color=(k * 80, 50, 50)))
    return tmp_path


def test_missing_csv_is_one_line_error(tmp_path):
    with pytest.raises(PosterlensError, match="dataset CSV not found") as e:
        stage_data(_cfg(tmp_path, dataset=str(tmp_path / "nope.csv")))
    assert "\n" not in str(e.value)


def test_missing_column_names_it_and_lists_available(posters):
    csv = _csv(posters / "d.csv", "Poster,Series_Title,IMDB_Rating\np/0.jpg,A,8.1\n")
    cfg = _cfg(posters, dataset=str(csv), image_col="Poster", target_col="Rating", title_col="Series_Title")
    with pytest.raises(PosterlensError) as e: stage_data(cfg)
    msg = str(e.value)
    assert "'Rating'" in msg and "available: Poster, Series_Title, IMDB_Rating" in msg and "\n" not in msg
    with pytest.raises(PosterlensError, match="'Genre'"):
        stage_data(_cfg(posters, dataset=str(csv), image_col="Poster", target_col="IMDB_Rating", covariates=["Genre"]))


def test_empty_and_non_numeric_and_unusable_data_sets(posters):
    cases = {"header only": ("image,target\n", "empty data set"),
             "empty file": ("", "dataset CSV is empty"),
             "words": ("image,target\np/0.jpg,great\np/1.jpg,poor\n", "target column 'target' has no numeric values"),
             "all empty": ("image,target\np/0.jpg,\np/1.jpg,\n", r"has no numeric values \(all empty\)"),
             "no usable row": ("image,target\np/7.jpg,5\np/8.jpg,6\n", "no usable rows")}
    for name, (text, err) in cases.items():
        csv = _csv(posters / f"{name.replace(' ', '_')}.csv", text)
        with pytest.raises(PosterlensError, match=err): stage_data(_cfg(posters, dataset=str(csv)))


def test_bad_rows_are_reported_not_dropped(posters):
    (posters / "p" / "fake.jpg").write_text("<html>no</html>")
    csv = _csv(posters / "d.csv", "key,image,target\n"
               "a,p/0.jpg,5.5\nb,p/1.jpg,\nc,p/2.jpg,x\nd,p/9.jpg,4\ne,p/fake.jpg,3\n,p/0.jpg,2\na,p/1.jpg,7\n")
    cfg = _cfg(posters, dataset=str(csv), id_col="key")
    table = stage_data(cfg)
    assert table.id.tolist() == ["a"] and table.target.tolist() == [5.5]
    skipped = read_parquet(posters / "runs" / "smoke" / "data" / "skipped.parquet")
    assert skipped.reason.tolist() == ["missing target", "non-numeric target", "missing file", "unreadable image",
                                       "missing id", "duplicate id"]
    assert skipped.id.tolist()[:4] == ["b", "c", "d", "e"] and pd.isna(skipped.id[4])
    assert len(table) + len(skipped) == 7


def test_imdb_shaped_csv_with_urls_and_covariates(server, posters):
    csv = _csv(posters / "imdb.csv",
               "Poster,Series_Title,Runtime,Genre,IMDB_Rating,Gross\n"
               f"{server.url('ok/1.jpg')},The Shawshank Redemption,142 min,Drama,9.3,\"28,341,469\"\n"
               f"{server.url('missing/2.jpg')},The Godfather,175 min,\"Crime, Drama\",9.2,\"134,966,411\"\n"
               f"{server.url('ok/3.jpg')},Apollo 13,140 min,\"Adventure, Drama\",7.6,\n")
    cfg = _cfg(posters, dataset=str(csv), image_col="Poster", target_col="IMDB_Rating", title_col="Series_Title",
               covariates=["Runtime", "Genre", "Gross"])
    table = stage_data(cfg)
    assert table.title.tolist() == ["The Shawshank Redemption", "Apollo 13"]
    assert table.Runtime.tolist() == [142.0, 140.0] and table.Genre.tolist() == ["Drama", "Adventure, Drama"]
    assert table.Gross.iloc[0] == 28341469.0 and np.isnan(table.Gross.iloc[1])
    assert all(Path(p).parent == posters / "dl" for p in table.image_path)
    skipped = read_parquet(posters / "runs" / "smoke" / "data" / "skipped.parquet")
    assert skipped.reason.tolist() == ["download http_error"]
    hits = dict(server.hits)
    stage_data(cfg)                                  # fresh: no download at all
    assert dict(server.hits) == hits


# -- synthetic posters ----------------------------------------------------------------------------------------

def test_synth_same_seed_same_data(tmp_path):
    a = make_synth(tmp_path / "a", 8, seed=5)
    b = make_synth(tmp_path / "b", 8, seed=5)
    c = make_synth(tmp_path / "c", 8, seed=6, images=False)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    df = pd.read_csv(a)
    assert all((a.parent / f).read_bytes() == (b.parent / f).read_bytes() for f in df.image)
    truth = read_json(a.parent / "truth.json")
    assert truth["intercept"] == INTERCEPT and truth["noise_sd"] == 0.5 and "formula" in truth
    for e in truth["effects"]:
        assert {"attribute", "coef", "present_phrase", "absent_phrase", "prevalence"} <= set(e)


def test_synth_target_follows_planted_formula(tmp_path):
    df = pd.read_csv(make_synth(tmp_path, 2000, seed=11, images=False))
    assert {"id", "image", "target", "title", *ATTRIBUTES} <= set(df.columns)
    assert df[ATTRIBUTES].corr().abs().values[np.triu_indices(5, 1)].max() < 0.08   # drawn independently
    X = np.c_[np.ones(len(df)), df[ATTRIBUTES].values]
    coef, *_ = np.linalg.lstsq(X, df.target.values, rcond=None)
    np.testing.assert_allclose(coef, [INTERCEPT] + [e["coef"] for e in EFFECTS], atol=0.08)
    resid = df.target.values - X @ coef
    assert 0.45 < resid.std() < 0.55
    assert df.target.between(1, 10).all()


def _signature(path):
    "Simple pixel statistics a describer can read: luminance, saturation, cool share, ink share, edges."
    import cv2
    rgb = np.asarray(Image.open(path).convert("RGB"))
    lum = rgb @ np.array([0.299, 0.587, 0.114]) / 255
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    sat, hue = hsv[..., 1] / 255, hsv[..., 0].astype(float) * 2
    colored = sat > 0.25
    ink = (lum > 0.9) if lum.mean() < 0.42 else (lum < 0.08)
    near_ink = cv2.dilate(ink.astype(np.uint8), np.ones((7, 7))) > 0
    edges = cv2.Canny((lum * 255).astype(np.uint8), 50, 150) > 0
    return dict(lum=lum.mean(), sat=sat.mean(), cool=(colored & (hue > 150) & (hue < 260)).sum() / max(colored.sum(), 1),
                ink=ink.mean(), edges=edges[~near_ink].mean())


def test_synth_attributes_are_visible_in_pixels(tmp_path):
    csv = make_synth(tmp_path, 60, seed=2)
    df = pd.read_csv(csv)
    sig = pd.DataFrame([_signature(csv.parent / f) for f in df.image])
    colour = df.bw == 0
    checks = {"dark": sig.lum < 0.35, "bw": sig.sat < 0.01, "cluttered": sig.edges > 0.02, "big_title": sig.ink > 0.015}
    for attr, pred in checks.items(): assert (pred.astype(int) == df[attr]).all(), attr
    assert ((sig.cool[colour] > 0.5).astype(int) == df.cool[colour]).all()


def test_transient_download_failure_is_fetched_on_the_next_plain_run(server, posters, capsys):
    csv = _csv(posters / "urls.csv", "image,target\n"
               f"{server.url('ok/1.jpg')},5\n{server.url('down-for-a-while/2.jpg')},6\n{server.url('missing/3.jpg')},7\n"
               "ftp://example.org/4.jpg,8\nfile:///nowhere/5.jpg,9\n")
    cfg = _cfg(posters, dataset=str(csv), download_attempts=2, download_timeout=2, download_concurrency=2)
    first = stage_data(cfg)                                        # two 503s: the download failed transiently
    skipped = read_parquet(posters / "runs" / "smoke" / "data" / "skipped.parquet")
    assert len(first) == 1 and skipped.reason.tolist() == ["download transient", "download http_error", "unsupported URL", "unsupported URL"]
    assert "HTTP 503 after 2 attempts" in skipped.detail[0] and server.hits["/down-for-a-while/2.jpg"] == 2
    assert skipped.detail[2].startswith("unsupported URL scheme ftp://") and "give the local path instead (/nowhere/5.jpg)" in skipped.detail[3]
    hits = dict(server.hits)
    second = stage_data(cfg)                                       # a plain run, no --force: the transient one is asked again
    assert len(second) == 2 and "up to date" not in capsys.readouterr().out
    assert server.hits["/down-for-a-while/2.jpg"] == hits["/down-for-a-while/2.jpg"] + 1
    assert server.hits["/missing/3.jpg"] == hits["/missing/3.jpg"]          # the 404 is kept, not asked again
    assert server.hits["/ok/1.jpg"] == hits["/ok/1.jpg"]                    # nor is what is already here
    stage_data(cfg)
    assert "up to date" in capsys.readouterr().out                 # nothing pending any more: fresh
    stage_data(cfg, force=True)
    assert server.hits["/missing/3.jpg"] == hits["/missing/3.jpg"] + 1      # --force asks again for the permanent ones


def test_constant_target_warns(posters, capsys):
    csv = _csv(posters / "const.csv", "image,target\np/0.jpg,7\np/1.jpg,7\np/2.jpg,7\n")
    stage_data(_cfg(posters, dataset=str(csv)))
    assert "Warning: the target 'target' is 7 in every usable row" in capsys.readouterr().out


def test_semicolon_csv_is_a_clear_one_line_error(posters):
    csv = _csv(posters / "semi.csv", "image;target\np/0.jpg;7,5\np/1.jpg;6,1\n")
    with pytest.raises(PosterlensError) as e: stage_data(_cfg(posters, dataset=str(csv)))
    msg = str(e.value)
    assert "semi.csv is separated by semicolons, not commas" in msg and "sep=';'" in msg and "\n" not in msg
