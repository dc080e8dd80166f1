"""`argen serve` over HTTP: the page, the JSON API, its refusals, jobs with progress, and editing.

One server (the shipped digits-var, 8x8 images, fmnist-raster for editing and the text model
shapes-raster) on a free port for the module, stopped in a finally."""

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from argen.errors import ArgenError
from argen.images import load_image, load_mask, to_uint8
from argen.pipeline import Pipeline
from argen.pretrained import model_path
from argen.serve import BATCH, COMMON_KNOBS, MAX_BODY, MAX_IMAGES, Models, make_server, model_paths

MODEL = "digits-var"
EDIT_MODEL = "fmnist-raster"  # single-scale tokens: kept cells show as kept pixels (VAR's coarse scales do not)
TEXT_MODEL = "shapes-raster"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """The server samples in this process, so the test's torch thread count is the server's: one (see
    conftest), not two competing for the cores with whatever else runs."""


@pytest.fixture(scope="module")
def server():
    srv = make_server(Models({m: model_path(m) for m in (MODEL, EDIT_MODEL, TEXT_MODEL)}), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        srv.app.close()
        thread.join(10)


def call(srv, path, body=None, raw: bytes | None = None):
    """(status, parsed JSON or bytes) of a GET, or of a POST when ``body`` or ``raw`` is given."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{srv.server_port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, kind, payload = r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        status, kind, payload = e.code, e.headers["Content-Type"], e.read()
    return status, json.loads(payload) if kind == "application/json" else payload


def png(u8: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_page_and_models(server):
    status, page = call(server, "/")
    assert status == 200 and b"<title>argen</title>" in page and b"/api/jobs" in page
    status, models = call(server, "/api/models")
    assert status == 200 and [m["name"] for m in models] == [MODEL, EDIT_MODEL, TEXT_MODEL]
    m = models[0]
    assert (m["family"], m["text"], m["num_classes"], m["image_size"], m["editing"]) == ("var", False, 10, 8, True)
    assert m["classes"] == [str(i) for i in range(10)]
    t = models[2]  # a text model: prompts, no classes
    assert (t["family"], t["text"], t["num_classes"], t["classes"], t["image_size"]) == ("raster", True, 0, [], 32)
    var = next(s for s in m["samplers"] if s["name"] == "var")
    assert var["default"] and {k["name"]: k["default"] for k in var["knobs"]}["cfg"] == 1.0  # the checkpoint's
    code = next(s for s in m["samplers"] if s["name"] == "code")
    assert "refiner" not in [k["name"] for k in code["knobs"]]  # a path knob: not for web requests


def test_unknown_paths_are_404(server):
    for path, body in [("/nope", None), ("/api/jobs/0123abcd", None), ("/api/files/0123abcd.png", None),
                       ("/api/nope", {})]:
        status, out = call(server, path, body)
        assert status == 404 and out["error"], path


@pytest.mark.parametrize("raw, status, words", [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"model": "digits-var", "label": 1, "settings": {"cfg": NaN}}', 400, "NaN"),
    (json.dumps({"model": "nope", "label": 1}).encode(), 400, "unknown model"),
    (json.dumps({"model": MODEL, "label": 10}).encode(), 400, "label 10 is out of range"),
    (json.dumps({"model": MODEL, "labels": [1, 2.5]}).encode(), 400, "label 2.5"),
    (json.dumps({"model": MODEL, "label": 1, "n": MAX_IMAGES + 1}).encode(), 400, f"1..{MAX_IMAGES}"),
    (json.dumps({"model": MODEL, "labels": [1] * (MAX_IMAGES + 1)}).encode(), 400, f"at most {MAX_IMAGES}"),
    (json.dumps({"model": MODEL, "label": 1, "seed": -1}).encode(), 400, "seed must be"),
    (json.dumps({"model": MODEL, "label": 1, "sampler": "maskgit"}).encode(), 400, "does not sample"),
    (json.dumps({"model": MODEL, "label": 1, "settings": {"steps": 4}}).encode(), 400, "not a knob of sampler var"),
    (json.dumps({"model": MODEL, "label": 1, "settings": {"top_k": "5"}}).encode(), 400, "top_k must be an int"),
    (json.dumps({"model": MODEL, "label": 1, "settings": {"temperature": 0}}).encode(), 400, "temperature"),
    (json.dumps({"model": MODEL, "prompt": "a cat"}).encode(), 400, "digits-var is class-conditional"),
    (json.dumps({"model": TEXT_MODEL, "label": 1}).encode(), 400, "shapes-raster is a text-to-image model"),
    (json.dumps({"model": TEXT_MODEL}).encode(), 400, "give prompts"),
    (json.dumps({"model": TEXT_MODEL, "prompts": "a red circle"}).encode(), 400, f"prompts must be a list of 1..{MAX_IMAGES} texts"),
    (json.dumps({"model": TEXT_MODEL, "prompts": ["a red circle", " "]}).encode(), 400, 'prompt " " is not'),
    (json.dumps({"model": TEXT_MODEL, "prompt": "a purple dog"}).encode(), 400, "prompts: unknown word(s) 'purple', 'dog'"),
    (json.dumps({"model": TEXT_MODEL, "prompt": "a circle", "n": 0}).encode(), 400, "n must be"),
])
def test_bad_requests_get_one_line_and_the_server_lives_on(server, raw, status, words):
    got, out = call(server, "/api/sample", raw=raw)
    assert got == status and words in out["error"] and "\n" not in out["error"]
    assert call(server, "/api/jobs", raw=raw)[0] == status  # checked before a job starts, too
    assert call(server, "/api/models")[0] == 200


def raw_http(srv, request: bytes) -> str:
    """The whole response to a hand-written request (the server closes the connection after it)."""
    with socket.create_connection(("127.0.0.1", srv.server_port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_body_size_cap_and_missing_length(server):
    out = raw_http(server, f"POST /api/sample HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n{{}}".encode())
    assert out.startswith("HTTP/1.0 413") and f"at most {MAX_BODY}" in out
    assert raw_http(server, b"POST /api/sample HTTP/1.1\r\n\r\n").startswith("HTTP/1.0 411")
    assert call(server, "/api/models")[0] == 200


def test_sample_equals_the_pipeline_with_the_same_seed(server):
    labels, settings = [1, 7, 7, 3, 0, 9], {"temperature": 0.9, "top_k": 50}
    status, out = call(server, "/api/sample", {"model": MODEL, "labels": labels, "seed": 11, "settings": settings})
    assert status == 200, out
    pipe = Pipeline.from_pretrained(MODEL)
    want = to_uint8(pipe(labels, seed=11, batch_size=BATCH, **settings))
    got = np.stack([decode(s) for s in out["samples"]])[..., None]
    assert got.shape == want.shape == (6, 8, 8, 1) and np.array_equal(got, want)
    other = to_uint8(pipe(labels, seed=12, batch_size=BATCH, **settings))
    assert not np.array_equal(got, other)  # the seed matters, so equality above says something
    assert out["labels"] == labels and out["seconds"] > 0
    assert out["meta"]["settings"]["temperature"] == 0.9 and out["meta"]["seed"] == 11
    # the files: the npz as `argen sample` writes it, the grid PNG the page shows
    status, npz = call(server, out["files"]["npz"])
    with np.load(io.BytesIO(npz)) as f:
        assert np.array_equal(f["images"], want) and f["labels"].tolist() == labels
        assert json.loads(str(f["meta"]))["sampler"] == "var"
    status, grid = call(server, out["files"]["png"])
    assert status == 200 and grid == base64.b64decode(out["png"])
    assert decode(out["png"]).shape == (1 + 64 + 1, 1 + 6 * 65)  # 8x8 images drawn 8x, one row of six


def test_job_reports_progress_and_finishes(server):
    n = 5 * BATCH
    decoder = server.app.models.pipeline(MODEL).tokenizer.decoder
    slow = decoder.register_forward_hook(lambda *_: time.sleep(0.05))  # slow enough for polls to see progress
    try:
        status, job = call(server, "/api/jobs", {"action": "sample", "model": MODEL, "label": 4, "n": n, "seed": 3})
        assert status == 202 and job["total"] == n and not job["finished"]
        seen, deadline = [], time.time() + 60
        while not job["finished"] and time.time() < deadline:
            time.sleep(0.01)
            job = call(server, f"/api/jobs/{job['id']}")[1]
            seen.append(job["done"])
    finally:
        slow.remove()
    assert job["finished"] and job["error"] is None and job["done"] == n
    assert seen == sorted(seen) and any(0 < d < n for d in seen)  # it moved in between
    assert len(job["result"]["samples"]) == n and job["result"]["labels"] == [4] * n


def test_edit_keeps_the_unmasked_region(server):
    source = to_uint8(Pipeline.from_pretrained(EDIT_MODEL)([3], seed=0))[0, ..., 0]  # a dress, 28 x 28
    mask = np.zeros((64, 64), np.uint8)
    mask[32:] = 255  # regenerate the bottom half (a mask of any size is resized to the image's)
    body = {"model": EDIT_MODEL, "label": 7, "n": 3, "seed": 2, "image": "data:image/png;base64," + png(source),
            "mask": png(mask)}
    status, out = call(server, "/api/edit", body)
    assert status == 200, out
    got = np.stack([decode(s) for s in out["samples"]])
    # the same as Pipeline.edit on the same files
    pipe = Pipeline.from_pretrained(EDIT_MODEL)
    image = load_image(io.BytesIO(base64.b64decode(png(source))), 1, (28, 28))
    m = load_mask(io.BytesIO(base64.b64decode(png(mask))), (28, 28))
    assert np.array_equal(got, to_uint8(pipe.edit(image, m, [7] * 3, seed=2))[..., 0])
    # the top rows (token cells away from the mask) stay the source's; the bottom half is redrawn as sneakers
    diff = np.abs(got.astype(np.float32) - source)
    assert diff[:, :8].mean() < 0.25 * diff[:, 16:].mean(), (diff[:, :8].mean(), diff[:, 16:].mean())
    for bad, words in [({"mask": png(mask * 0)}, "mask is empty"), ({"image": "%%%"}, "not valid base64"),
                       ({"image": png(mask)[:40]}, "cannot read image 'image'")]:
        status, out = call(server, "/api/edit", {**body, **bad})
        assert status == 400 and words in out["error"], out


def test_the_common_knobs_are_the_cli_flags():
    from argen.cli import SAMPLER_FLAGS

    assert tuple(COMMON_KNOBS) == SAMPLER_FLAGS


def test_text_models_sample_and_inpaint_by_prompt(server):
    prompts = ["a red circle", "two green triangles", "a red circle"]
    status, out = call(server, "/api/sample", {"model": TEXT_MODEL, "prompts": prompts, "seed": 5})
    assert status == 200, out
    pipe = Pipeline.from_pretrained(TEXT_MODEL)
    want = to_uint8(pipe(prompts=prompts, seed=5, batch_size=BATCH))
    got = np.stack([decode(s) for s in out["samples"]])
    assert got.shape == want.shape == (3, 32, 32, 3) and np.array_equal(got, want)
    assert not np.array_equal(got[0], got[1])
    # labels index the distinct prompts, in the JSON and in the .npz (as `argen sample --prompt` writes it)
    assert out["prompts"] == ["a red circle", "two green triangles"] and out["labels"] == [0, 1, 0]
    with np.load(io.BytesIO(call(server, out["files"]["npz"])[1])) as f:
        assert f["prompts"].tolist() == out["prompts"] and f["labels"].tolist() == [0, 1, 0]
    # inpainting under a prompt: the same as Pipeline.edit
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 255
    body = {"model": TEXT_MODEL, "prompt": "a big white square", "n": 2, "seed": 1, "image": png(want[0]),
            "mask": png(mask)}
    status, out = call(server, "/api/edit", body)
    assert status == 200, out
    image = load_image(io.BytesIO(base64.b64decode(png(want[0]))), 3, (32, 32))
    m = load_mask(io.BytesIO(base64.b64decode(png(mask))), (32, 32))
    assert np.array_equal(np.stack([decode(s) for s in out["samples"]]),
                          to_uint8(pipe.edit(image, m, ["a big white square"] * 2, seed=1)))
    assert out["prompts"] == ["a big white square"] and out["labels"] == [0, 0]
    assert TEXT_MODEL in model_paths() and next(iter(model_paths(model=TEXT_MODEL))) == TEXT_MODEL


def test_a_taken_port_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ArgenError, match="cannot listen on 127.0.0.1"):
            make_server(Models({MODEL: model_path(MODEL)}), "127.0.0.1", s.getsockname()[1])


def test_cli_serves_and_ctrl_c_stops_it_quietly():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A suite started as a background job (`make test &`) runs with SIGINT ignored, which the server would
    # inherit (Ctrl-C would never reach it): handled here, SIGINT starts at its default in the child.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        p = subprocess.Popen([sys.executable, "-m", "argen", "serve", "--model", MODEL, "--port", "0", "--threads",
                              "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        line = p.stdout.readline()  # printed once listening
        assert line.startswith("argen serve: http://127.0.0.1:"), line + p.stderr.read()
        url = line.split()[2]
        with urllib.request.urlopen(url + "api/models", timeout=30) as r:
            assert json.loads(r.read())[0]["name"] == MODEL  # --model comes first
        # a long job running: torch aborts a process that exits under it, so Ctrl-C must stop it first
        job = {"action": "sample", "model": "fmnist-mar", "label": 9, "n": MAX_IMAGES}
        with urllib.request.urlopen(url + "api/jobs", json.dumps(job).encode(), timeout=30) as r:
            assert r.status == 202
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and out.endswith("argen serve: stopped\n"), (out, err)
    assert "Traceback" not in err and "terminate" not in err and err.endswith("POST /api/jobs -> 202\n"), err
