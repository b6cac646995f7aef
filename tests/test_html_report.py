"""``report.html`` of a real (smoke) study: self-contained, escaped, and working in a real browser.

The browser test opens the page in Debian's headless Chromium, driven over the DevTools protocol
on a pipe (``--remote-debugging-pipe``: JSON messages ending in a NUL byte on fds 3 and 4, so no
extra Python package is needed), waits for every audio player's metadata, checks every image
decoded, and saves a screenshot.
"""

import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba.study import html, tables

SYSTEMS = ["bsrnn", "abl3"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "study"
    args = ["study", "--recipe", "smoke", "--systems", ",".join(SYSTEMS), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    return p


def _expected_sources(sdir, doc):
    """(kind, bytes) of every image and audio file the page must carry, in page order."""
    meta = json.loads((sdir / "study.json").read_text())
    want = [("img", (sdir / p).read_bytes()) for p in doc["plots"]]
    for name in dict.fromkeys(e["name"] for e in doc["examples"]):
        want.append(("audio", (Path(meta["noisy_dir"]) / name).read_bytes()))
        for e in (e for e in doc["examples"] if e["name"] == name):
            want.append(("audio", (sdir / e["wav"]).read_bytes()))
            want.append(("img", (sdir / e["png"]).read_bytes()))
        want.append(("audio", (Path(meta["clean_dir"]) / name).read_bytes()))
    return want


def test_page_is_self_contained_and_carries_every_table_plot_and_example(study):
    sdir, doc = study
    page = (sdir / "report.html").read_text()
    tags = _parse(page)
    # Nothing is fetched: no external stylesheet, script or link; every source is embedded.
    assert not [t for t, a in tags.tags if t in ("script", "link", "iframe")]
    srcs = [(t, a["src"]) for t, a in tags.tags if t in ("img", "audio") and "src" in a]
    assert all(s.startswith("data:") for _, s in srcs)
    got = [(t, base64.b64decode(s.split(",", 1)[1])) for t, s in srcs]
    assert got == _expected_sources(sdir, doc)
    # Both systems' example, and every example has noisy, enhanced and clean players.
    assert sorted({e["system"] for e in doc["examples"]}) == sorted(SYSTEMS)
    n_utt = len({e["name"] for e in doc["examples"]})
    assert sum(t == "audio" for t, _ in srcs) == n_utt * (2 + len(SYSTEMS))
    assert all("controls" in a for t, a in tags.tags if t == "audio")
    # The tables are the report's: every cell of the results, per-SNR and claims tables.
    text = "".join(tags.text)
    cells = [c for row in tables.table_rows(doc) for c in row]
    cells += [c for row in tables.snr_rows(doc)[1] for c in row]
    cells += [c[k] for c in doc["claims"] for k in ("claim", "measured", "verdict", "note")]
    assert all(c in text for c in cells)
    assert sum(t == "tr" for t, _ in tags.tags) >= len(tables.table_rows(doc)) + len(doc["claims"])
    # The ranking row's note says how many utterances its difference needs, in both reports.
    rank = next(c for c in doc["claims"] if c["claim"].startswith("Ablation 3 beats the BSRNN"))
    assert "utterances would make a difference of this size significant" in rank["note"]
    assert rank["note"] in text and rank["note"] in (sdir / "report.md").read_text()


def test_every_text_is_escaped_and_the_write_is_whole(study, tmp_path):
    sdir, doc = study
    doc = json.loads(json.dumps(doc))
    doc["claims"][0]["note"] = 'x <script>alert("1")</script> & <b>y</b>'
    doc["warnings"] = ["<img src=x onerror=alert(2)>"]
    page = html.render(doc, sdir)
    assert "<script>" not in page and "<img src=x" not in page and "<b>y</b>" not in page
    assert "x &lt;script&gt;alert(&quot;1&quot;)&lt;/script&gt; &amp; &lt;b&gt;y&lt;/b&gt;" in page
    text = "".join(_parse(page).text)
    assert doc["claims"][0]["note"] in text and doc["warnings"][0] in text
    # A file past the embedding budget is linked relative to the study folder, not lost.
    small = html._Embedder(sdir, budget=0)
    assert small.src(sdir / doc["plots"][0]) == doc["plots"][0]
    assert small.src(sdir / "no-such.png") is None
    # write() replaces the page whole and leaves no temp file behind.
    path = html.write(doc, sdir)
    assert path.read_text() == page
    assert not [p for p in sdir.iterdir() if p.name.startswith(".report.html.")]


# ----------------------------------------------------------------------------- the browser
class _Chromium:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (fd 3: commands, fd 4: replies)."""

    def __init__(self, profile_dir):
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()

        def fds():  # in the child, before exec: the pipe ends at the fds Chromium expects
            hi_r, hi_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, res_w))
            os.dup2(hi_r, 3)  # via fds >= 10: either pipe end may itself be fd 3 or 4
            os.dup2(hi_w, 4)

        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--window-size=1280,1600",
            f"--user-data-dir={profile_dir}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            [CHROMIUM, *flags],
            close_fds=False,  # keeps fds 3 and 4 (every other fd of ours is non-inheritable)
            preexec_fn=fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(res_w)
        self._buf, self._id, self.events, self.session = b"", 0, [], None

    def _message(self, deadline):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._res_r], [], [], left)[0]:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._res_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method, timeout=30.0, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._message(deadline)
            if m.get("id") == self._id:
                assert "error" not in m, (method, m["error"])
                return m["result"]
            self.events.append(m)

    def wait_event(self, method, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            hit = next((e for e in self.events if e.get("method") == method), None)
            if hit:
                self.events.remove(hit)
                return hit
            self.events.append(self._message(deadline))

    def open(self, url):
        targets = self.send("Target.getTargets")["targetInfos"]
        target = next(t for t in targets if t["type"] == "page")
        res = self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        self.session = res["sessionId"]
        self.send("Page.enable")
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", timeout=60)

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self._cmd_w)
        os.close(self._res_r)


# Waits (at most 20 s) until every <audio> has its metadata or an error, then reports every player
# and image as the page sees them.
_PROBE = """
(async () => {
  const audios = [...document.querySelectorAll('audio')];
  const t0 = Date.now();
  while (audios.some(a => a.readyState < 1 && !a.error) && Date.now() - t0 < 20000)
    await new Promise(r => setTimeout(r, 50));
  return JSON.stringify({
    audio: audios.map(a => ({ready: a.readyState, duration: a.duration,
                             error: a.error && a.error.code})),
    img: [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth})),
    title: document.title,
  });
})()
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_every_player_and_image_works_in_headless_chromium(study, tmp_path):
    sdir, doc = study
    browser = _Chromium(tmp_path / "profile")
    try:
        browser.open((sdir / "report.html").as_uri())
        res = browser.send("Runtime.evaluate", expression=_PROBE, awaitPromise=True, timeout=40)
        seen = json.loads(res["result"]["value"])
        size = browser.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = browser.send(  # the whole page, not only the window
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )
    finally:
        browser.close()
    assert seen["title"] == f"Ablation study {doc['recipe']}"
    want = _expected_sources(sdir, doc)
    # Every image decoded.
    assert len(seen["img"]) == sum(k == "img" for k, _ in want)
    assert all(i["complete"] and i["width"] > 0 for i in seen["img"]), seen["img"]
    # Every player is playable, and its duration is the file's.
    durations = [sf.info(io.BytesIO(b)).duration for k, b in want if k == "audio"]
    assert len(seen["audio"]) == len(durations)
    for a, d in zip(seen["audio"], durations, strict=True):
        assert a["error"] is None and a["ready"] >= 1, a
        assert a["duration"] == pytest.approx(d, abs=0.01)
    # The screenshot is a PNG with something drawn on it (not one flat colour).
    png = base64.b64decode(shot["data"])
    (tmp_path / "report.png").write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(png))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 10
