"""``argen serve``: a local web page and a JSON API to sample and inpaint with argen models.

    argen serve                           # every shipped model, http://127.0.0.1:8000/
    argen serve --checkpoint runs/var --port 8080

Standard library only (``http.server``). It binds to 127.0.0.1 unless ``--host`` says otherwise;
there is no authentication, so do not expose it to a network you do not trust. Models are read
from their config files at start (a broken checkpoint fails then) and loaded on first use.

API (JSON in and out; every error is a 4xx or 5xx with ``{"error": "one line"}``):

``GET /``
    The page.
``GET /api/models``
    ``[{name, family, text, num_classes, classes, image_size, channels, editing, default_sampler,
    samplers: [{name, default, doc, knobs: [{name, type, default, help}]}]}]``; ``text``: the model
    takes prompts (its ``num_classes`` is 0 and ``classes`` empty).
``POST /api/sample``
    ``{model, labels: [int, ...] | label: int + n: int, seed: 0, sampler: null, settings: {knob: value},
    nrow: null}`` -> ``{id, png (base64 grid), samples (base64 PNG per image), files: {png, npz},
    seconds, labels, prompts, nrow, meta}``. A text model takes ``prompts: [str, ...]`` or ``prompt: str``
    + ``n`` instead of labels; its result's ``labels`` index its distinct ``prompts`` (as in the ``.npz``
    of ``argen sample --prompt``); a class model's ``prompts`` is null. At most ``MAX_IMAGES`` images per
    request. The images are ``Pipeline(...)(labels or prompts, seed=seed, batch_size=BATCH, **settings)``,
    the same as ``argen sample ... --batch-size 4`` (the batch size changes the random draws).
``POST /api/edit``
    As ``/api/sample`` plus ``image`` and ``mask`` (base64 image files, ``data:`` URLs accepted;
    mask: white = regenerate), resized to the model's image size: ``Pipeline.edit``.
``POST /api/jobs``
    The body of ``/api/sample`` or ``/api/edit`` plus ``action: "sample" | "edit"``; it is checked
    at once and then runs in the background: ``202 {id, done, total, finished, result, error}``.
``GET /api/jobs/<id>``
    ``{id, done, total, finished, result, error}``: ``done`` counts images finished; ``result`` is
    what ``/api/sample`` returns, once ``finished``.
``GET /api/files/<id>.png``, ``GET /api/files/<id>.npz``
    A result's grid, or its ``.npz`` as ``argen sample`` writes it (images, labels, meta; prompts). The last
    ``KEEP_RESULTS`` results are kept.

See docs/serve.md for curl examples.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import torch

import argen.checkpoint as ckpt
from argen.errors import ArgenError
from argen.generators.base import Generator
from argen.images import load_image, load_mask, save_samples, to_uint8
from argen.models import load_checkpoint
from argen.pipeline import Pipeline
from argen.pretrained import list_models, model_path
from argen.sampling import is_lossy, knobs, samplers_of

log = logging.getLogger("argen.serve")

PAGE = Path(__file__).parent / "web" / "index.html"
MAX_IMAGES = 64          # per request: a typo (640) must not tie the server up for minutes
MAX_BODY = 8 << 20       # bytes of a request body (an uploaded image is the only large part)
BATCH = 4                # images per sampler call: a job's progress moves once per batch
KEEP_RESULTS = 64        # results (and their files) kept for download; older ones are dropped
MAX_SEED = 2**63 - 1     # torch.Generator.manual_seed takes a signed 64-bit seed

# The config fields with a flag of their own in `argen sample` (argen.cli.SAMPLER_FLAGS; not imported:
# the CLI imports this module), offered beside each sampler's registered knobs where its config has them.
COMMON_KNOBS = {"cfg": "classifier-free guidance weight, 0 = off", "temperature": "sampling temperature",
                "top_k": "keep the k most likely tokens, 0 = off", "top_p": "nucleus sampling mass, 1 = off",
                "steps": "parallel decoding steps", "ar_steps": "autoregressive steps",
                "head_steps": "head steps per autoregressive step"}
TYPES = {bool: "bool", int: "int", float: "float", str: "str"}


class _Stopped(Exception):
    """Raised inside a run once the server stops."""


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---- models --------------------------------------------------------------------------------------------

def describe(name: str, path: Path) -> dict:
    """What the page needs to know of a generator checkpoint, read on the meta device (no weights loaded)."""
    model, record = load_checkpoint(path, "meta")
    if not isinstance(model, Generator):
        raise ArgenError(f"{path} holds a {record.cls}, not a generator checkpoint")
    tok = ckpt.read_config(path / ckpt.TOKENIZER_DIR)["config"]
    saved = record.meta.get("sampler") or {}
    family_samplers = samplers_of(model.family)
    default = record.meta.get("sampler_name") or family_samplers[0].name
    samplers = []
    for smp in sorted(family_samplers, key=lambda s: s.name != default):
        settings = smp.config_class.from_dict(saved).to_dict()  # the checkpoint's values are the defaults
        helps = {**{k: h for k, h in COMMON_KNOBS.items() if k in settings},
                 **{k: f.metadata["help"] for k, f in knobs(smp.config_class).items()}}
        # scalars only, and no knob naming another checkpoint (CoDe's refiner): a web request must not
        # make the server read arbitrary paths
        knob_list = [{"name": k, "type": TYPES[type(settings[k])], "default": settings[k], "help": h}
                     for k, h in helps.items() if type(settings[k]) in TYPES and k not in smp.models]
        doc = (smp.sample.__doc__ or "").strip().splitlines()
        samplers.append({"name": smp.name, "default": smp.name == default, "doc": doc[0] if doc else "",
                         "knobs": knob_list})
    c = model.config
    text = getattr(c, "text", None) is not None
    classes = [] if text else [str(x) for x in record.meta.get("classes") or []]
    num_classes = 0 if text else c.num_classes  # a text model's condition ids index prompts, not classes
    return {"name": name, "family": model.family, "text": text, "num_classes": num_classes,
            "classes": classes if len(classes) == num_classes else [str(i) for i in range(num_classes)],
            "image_size": tok["image_size"], "channels": tok["image_channels"], "editing": model.editing,
            "default_sampler": default, "samplers": samplers}


class Models:
    """The models a server offers, by name: described at start, loaded on first use and kept."""

    def __init__(self, paths: dict[str, Path], device: str | torch.device = "cpu", precision: str = "fp32"):
        self.paths, self.device, self.precision = dict(paths), device, precision
        self.info = {name: describe(name, path) for name, path in self.paths.items()}
        self._pipes: dict[tuple[str, str], Pipeline] = {}
        self._lock = threading.Lock()

    def pipeline(self, name: str, sampler: str | None = None) -> Pipeline:
        info = self.info[name]
        sampler = sampler or info["default_sampler"]
        with self._lock:
            base = self._pipes.get((name, info["default_sampler"]))
            if base is None:
                log.info("loading %s", self.paths[name])
                base = Pipeline.from_pretrained(self.paths[name], self.device, self.precision)
                self._pipes[name, info["default_sampler"]] = base
            if (name, sampler) not in self._pipes:  # another sampler over the same loaded modules
                self._pipes[name, sampler] = Pipeline(base.tokenizer, base.generator, base.record.meta.get("sampler"),
                                                      self.precision, base.record, sampler)
            return self._pipes[name, sampler]


def model_paths(model: str | None = None, checkpoint: str | None = None) -> dict[str, Path]:
    """Every shipped model, after the one named by ``--model`` or ``--checkpoint`` (listed first)."""
    paths = {name: model_path(name) for name in list_models()}
    chosen: dict[str, Path] = {}
    if model is not None:
        chosen = {model: model_path(model)}
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_dir():
            raise ArgenError(f"--checkpoint {checkpoint}: no such folder")
        chosen = {path.resolve().name if path.resolve().name not in paths else str(path): path}
    return {**chosen, **paths}


# ---- requests ------------------------------------------------------------------------------------------

def _int(body: dict, key: str, lo: int, hi: int, default: int | None = None) -> int:
    v = body.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ArgenError(f"{key} must be an integer in {lo}..{hi}, got {json.dumps(v)}")
    return v


def _per_image(body: dict, info: dict, many: str, one: str, what: str, other: str) -> list:
    """``many: [..]`` (one image each), or ``one`` with ``n`` images of it; ``other``, the keys of the other
    kind of condition, refused."""
    if other in body or other + "s" in body:
        kind = "a text-to-image model" if many == "prompts" else "class-conditional"
        raise ArgenError(f"{info['name']} is {kind}: give {many}: [{what}s] or {one}: {what} (with n: images), "
                         f"not {other}s")
    if many in body:
        values = body[many]
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_IMAGES:
            raise ArgenError(f"{many} must be a list of 1..{MAX_IMAGES} {what}s (at most {MAX_IMAGES} images per "
                             "request)")
        return values
    if one in body:
        return [body[one]] * _int(body, "n", 1, MAX_IMAGES, 1)
    raise ArgenError(f"give {many}: [{what}s] or {one}: {what} (with n: images)")


def _labels(body: dict, info: dict) -> list[int]:
    """A class model's ``labels: [..]``, or ``label`` with ``n`` images of it."""
    labels = _per_image(body, info, "labels", "label", "class id", "prompt")
    for x in labels:
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < info["num_classes"]:
            raise ArgenError(f"label {json.dumps(x)} is out of range; {info['name']} has classes "
                             f"0..{info['num_classes'] - 1}")
    return labels


def _prompts(body: dict, info: dict) -> tuple[list[int], list[str]]:
    """A text model's ``prompts: [..]``, or ``prompt`` with ``n`` images of it: each image's index into the
    distinct prompts, and those prompts."""
    prompts = _per_image(body, info, "prompts", "prompt", "text", "label")
    for x in prompts:
        if not isinstance(x, str) or not x.strip():
            raise ArgenError(f"prompt {json.dumps(x)} is not a text; give non-empty strings")
    distinct = list(dict.fromkeys(prompts))
    return [distinct.index(x) for x in prompts], distinct


def _settings(body: dict, pipe: Pipeline, sampler: dict) -> dict:
    """``settings: {knob: value}``, each a knob of the sampler with a value of its default's type."""
    given = body.get("settings") or {}
    if not isinstance(given, dict):
        raise ArgenError("settings must be an object of knob: value")
    allowed = {k["name"]: k for k in sampler["knobs"]}
    for k, v in given.items():
        if k not in allowed:
            raise ArgenError(f"settings: {k!r} is not a knob of sampler {sampler['name']}; it takes: "
                             f"{', '.join(allowed) or 'none'}")
        kind = allowed[k]["type"]
        ok = {"bool": isinstance(v, bool), "str": isinstance(v, str),
              "int": isinstance(v, int) and not isinstance(v, bool),
              "float": isinstance(v, (int, float)) and not isinstance(v, bool)}[kind]
        if not ok:
            raise ArgenError(f"settings: {k} must be a{'n' if kind == 'int' else ''} {kind}, got {json.dumps(v)}")
    out = {k: float(v) if allowed[k]["type"] == "float" else v for k, v in given.items()}
    pipe.settings.replace(**out)  # the config checks ranges (temperature > 0, ...) in one line, before any work
    return out


class _Upload(io.BytesIO):
    """Image bytes that PIL opens like a file and that error messages name as ``name``."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label


def _image_bytes(body: dict, key: str) -> _Upload:
    v = body.get(key)
    if not isinstance(v, str) or not v:
        raise ArgenError(f"{key}: give an image file as a base64 string (or a data: URL)")
    try:
        return _Upload(base64.b64decode(re.sub(r"^data:[^,]*,", "", v), validate=True), f"'{key}'")
    except (binascii.Error, ValueError):
        raise ArgenError(f"{key}: not valid base64") from None


@dataclass
class Request:
    action: str                     # "sample" or "edit"
    model: str
    pipe: Pipeline
    labels: list[int]               # class ids; a text model's: each image's index into `prompts`
    seed: int
    settings: dict
    nrow: int
    prompts: list[str] | None = None  # a text model's distinct prompts
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def conditions(self) -> list[int] | list[str]:
        """What the pipeline samples: a class id or a prompt per image."""
        return self.labels if self.prompts is None else [self.prompts[i] for i in self.labels]


def parse_request(body, models: Models, action: str) -> Request:
    """A checked request, or a one-line ArgenError naming the bad field (before any sampling)."""
    if not isinstance(body, dict):
        raise ArgenError("the request body must be a JSON object")
    if action not in ("sample", "edit"):
        raise ArgenError(f"action must be \"sample\" or \"edit\", got {json.dumps(action)}")
    name = body.get("model")
    if name not in models.info:
        raise ArgenError(f"unknown model {json.dumps(name)}; this server has: {', '.join(models.info)}")
    info = models.info[name]
    sampler = body.get("sampler") or info["default_sampler"]
    by_name = {s["name"]: s for s in info["samplers"]}
    if sampler not in by_name:
        raise ArgenError(f"sampler {json.dumps(sampler)} does not sample {name}; it has: {', '.join(by_name)}")
    labels, prompts = _prompts(body, info) if info["text"] else (_labels(body, info), None)
    seed = _int(body, "seed", 0, MAX_SEED, 0)
    nrow = _int(body, "nrow", 1, MAX_IMAGES, min(len(labels), 8))
    pipe = models.pipeline(name, sampler)
    if prompts is not None:
        pipe.check_labels(prompts, "prompts")  # words the built-in encoder does not know, in one line
    req = Request(action, name, pipe, labels, seed, _settings(body, pipe, by_name[sampler]), nrow, prompts)
    if action == "edit":
        if not info["editing"]:
            raise ArgenError(f"{info['family']} models do not support editing")
        size = (info["image_size"], info["image_size"])
        req.image = load_image(_image_bytes(body, "image"), info["channels"], size)
        req.mask = load_mask(_image_bytes(body, "mask"), size)
        if not req.mask.any():
            raise ArgenError("mask is empty: paint (white) the region to regenerate")
    return req


# ---- jobs ----------------------------------------------------------------------------------------------

class Job:
    def __init__(self, req: Request):
        self.req, self.id = req, uuid.uuid4().hex[:16]
        self.done, self.total = 0, len(req.labels)
        self.result: dict | None = None
        self.error: str | None = None
        self.status = 200  # the HTTP status /api/sample answers with: 400 when the run fails on bad input
        self.finished = threading.Event()

    def to_json(self) -> dict:
        return {"id": self.id, "done": self.done, "total": self.total, "finished": self.finished.is_set(),
                "result": self.result, "error": self.error}


def _png_b64(u8) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class App:
    """The server's state: models, jobs and their result files. One run at a time (``_run_lock``):
    a model already uses every torch thread, and two runs at once would each take twice as long."""

    def __init__(self, models: Models):
        self.models = models
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.dir = Path(tempfile.mkdtemp(prefix="argen-serve-"))
        self._lock, self._run_lock = threading.Lock(), threading.Lock()
        self._threads: list[threading.Thread] = []  # background jobs, joined on close
        self.stopping = False

    def close(self, timeout: float = 30) -> bool:
        """Stop the running job, if any, at its next generator step, and remove the result files. False when it
        did not stop within ``timeout`` seconds (torch aborts the process if it exits under a running thread)."""
        self.stopping = True
        # Join the job threads, not just wait for the run lock: a thread that has not taken the lock yet,
        # or is still leaving its run, must be gone too before the interpreter exits under it.
        deadline = time.monotonic() + timeout
        stopped = self._run_lock.acquire(timeout=timeout)
        if stopped:
            self._run_lock.release()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stopped = stopped and not any(t.is_alive() for t in threads)
        shutil.rmtree(self.dir, ignore_errors=True)
        return stopped

    def submit(self, req: Request, wait: bool = False) -> Job:
        job = Job(req)
        with self._lock:
            self.jobs[job.id] = job
            while len(self.jobs) > KEEP_RESULTS:  # drop the oldest result and its files
                old = self.jobs.popitem(last=False)[1]
                for f in self.dir.glob(old.id + ".*"):
                    f.unlink(missing_ok=True)
        if wait:
            self.run(job)
        else:
            thread = threading.Thread(target=self.run, args=(job,), daemon=True)
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()
        return job

    def run(self, job: Job) -> None:
        req = job.req
        try:
            with self._run_lock, self._stoppable(req.pipe):
                t0 = time.perf_counter()
                if req.action == "sample":
                    images = self._sample(job)
                else:
                    images = req.pipe.edit(req.image, req.mask, req.conditions, seed=req.seed, **req.settings)
                seconds = time.perf_counter() - t0
            job.result = self._save(job, images, seconds)
            job.done = job.total
        except ArgenError as e:
            job.error, job.status = str(e), 400
        except _Stopped:
            job.error, job.status = "the server is stopping", 503
        except Exception as e:  # the server lives on; the job says what happened
            log.exception("job %s failed", job.id)
            job.error, job.status = f"internal error: {type(e).__name__}: {e}", 500
        finally:
            job.finished.set()

    @contextlib.contextmanager
    def _stoppable(self, pipe: Pipeline):
        """A hook on the generator's per-step module that ends the run once the server stops (Ctrl-C)."""
        if self.stopping:
            raise _Stopped
        module = pipe.generator.counted_modules().get("forward_calls") or pipe.generator

        def check(*_):
            if self.stopping:
                raise _Stopped
        handle = module.register_forward_pre_hook(check)
        try:
            yield
        finally:
            handle.remove()

    def _sample(self, job: Job) -> torch.Tensor:
        """One Pipeline call in batches of BATCH (same seed, same images); a hook on the tokenizer's decoder,
        which runs once per batch, counts the images done."""
        req = job.req
        decoder = getattr(req.pipe.tokenizer, "decoder", None)
        handle = None
        if isinstance(decoder, torch.nn.Module):
            def tick(_module, inputs, _output):
                job.done = min(job.total, job.done + inputs[0].shape[0])
            handle = decoder.register_forward_hook(tick)
        try:
            return req.pipe(req.conditions, seed=req.seed, batch_size=BATCH, **req.settings)
        finally:
            if handle is not None:
                handle.remove()

    def _save(self, job: Job, images: torch.Tensor, seconds: float) -> dict:
        req, pipe = job.req, job.req.pipe
        settings = pipe.settings.replace(**req.settings)
        meta = {"checkpoint": str(self.models.paths[req.model]), "model": req.model, "action": req.action,
                "sampler": pipe.sampler.name, "settings": settings.to_dict(), "lossy": is_lossy(settings),
                "seed": req.seed, "precision": pipe.precision, "batch_size": BATCH if req.action == "sample" else None}
        _, png = save_samples(images, req.labels, self.dir / job.id, nrow=req.nrow, meta=meta, prompts=req.prompts)
        return {"id": job.id, "png": base64.b64encode(png.read_bytes()).decode(),
                "samples": [_png_b64(u8) for u8 in to_uint8(images)],
                "files": {"png": f"/api/files/{job.id}.png", "npz": f"/api/files/{job.id}.npz"},
                "seconds": round(seconds, 3), "labels": req.labels, "prompts": req.prompts, "nrow": req.nrow,
                "meta": meta}


# ---- HTTP ----------------------------------------------------------------------------------------------

def _no_constants(name: str):
    # NaN and Infinity: Python's json reads them, JSON has no such numbers, and a NaN knob samples garbage
    raise ValueError(f"{name} is not a JSON number")


class Handler(BaseHTTPRequestHandler):
    server_version = "argen"
    app: App  # set on the subclass that make_server builds

    def do_GET(self):
        self._handle(self._get)

    def do_POST(self):
        self._handle(self._post)

    def _handle(self, route) -> None:
        """Every request ends in one response; nothing a client sends stops the server."""
        try:
            route(urlsplit(self.path).path)
        except HTTPError as e:
            self._json({"error": str(e)}, e.status)
        except ArgenError as e:
            self._json({"error": str(e)}, 400)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left
        except Exception as e:
            log.exception("%s %s failed", self.command, self.path)
            self._json({"error": f"internal error: {type(e).__name__}: {e}"}, 500)

    def _get(self, path: str) -> None:
        if path in ("/", "/index.html"):
            return self._send(PAGE.read_bytes(), "text/html; charset=utf-8")
        if path == "/api/models":
            return self._json(list(self.app.models.info.values()))
        if m := re.fullmatch(r"/api/jobs/([0-9a-f]+)", path):
            return self._json(self._job(m[1]).to_json())
        if m := re.fullmatch(r"/api/files/([0-9a-f]+)\.(png|npz)", path):
            f = self.app.dir / f"{m[1]}.{m[2]}"
            if not f.is_file():
                raise HTTPError(404, f"no such file: {m[1]}.{m[2]} (results are kept for the last {KEEP_RESULTS} "
                                     "requests)")
            kind = "image/png" if m[2] == "png" else "application/octet-stream"
            return self._send(f.read_bytes(), kind, {"Content-Disposition": f'attachment; filename="argen-{f.name}"'})
        raise HTTPError(404, f"no such page: {path}")

    def _post(self, path: str) -> None:
        routes = {"/api/sample": "sample", "/api/edit": "edit", "/api/jobs": None}
        if path not in routes:
            raise HTTPError(404, f"no such endpoint: POST {path}")
        body = self._body()
        action = routes[path] or (body.get("action", "sample") if isinstance(body, dict) else "sample")
        req = parse_request(body, self.app.models, action)
        if routes[path] is None:
            return self._json(self.app.submit(req).to_json(), 202)
        job = self.app.submit(req, wait=True)
        self._json(job.result if job.error is None else {"error": job.error}, job.status)

    def _job(self, id_: str) -> Job:
        job = self.app.jobs.get(id_)
        if job is None:
            raise HTTPError(404, f"no such job: {id_}")
        return job

    def _body(self):
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise HTTPError(411, "send the JSON body with a Content-Length") from None
        if n > MAX_BODY:
            self.close_connection = True  # the body is left unread
            raise HTTPError(413, f"request body of {n} bytes; at most {MAX_BODY}")
        try:
            return json.loads(self.rfile.read(n), parse_constant=_no_constants)
        except (ValueError, UnicodeDecodeError) as e:
            raise HTTPError(400, f"malformed JSON: {e}") from None

    def _json(self, obj, status: int = 200) -> None:
        self.error_line = obj.get("error") if status >= 400 else None  # for the request's log line
        self._send(json.dumps(obj).encode(), "application/json", status=status)

    def _send(self, data: bytes, kind: str, headers: dict | None = None, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_request(self, code="-", size="-"):
        """One line per request; a refused one says why."""
        error = getattr(self, "error_line", None)
        if error:
            log.warning("%s %s -> %s: %s", self.command, self.path, code, error)
        else:
            log.info("%s %s -> %s", self.command, self.path, code)

    def log_message(self, format, *args):
        log.info("%s", format % args)

    def send_error(self, code, message=None, explain=None):
        """The base class's own errors (an unsupported method, a malformed request line) as JSON too."""
        try:
            self._json({"error": message or HTTPStatus(code).phrase}, code)
        except (BrokenPipeError, ConnectionResetError, ValueError):
            pass


def make_server(models: Models, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server (not yet serving) with ``server.app``; ``port=0`` picks a free port (``server.server_port``)."""
    app = App(models)
    handler = type("BoundHandler", (Handler,), {"app": app})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        app.close()
        raise ArgenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    server.daemon_threads = True  # a stuck client does not keep Ctrl-C from ending the process
    server.app = app
    return server


def serve(model: str | None, checkpoint: str | None, host: str, port: int, device, precision: str = "fp32") -> int:
    """Run the server until Ctrl-C (or SIGTERM)."""
    server = make_server(Models(model_paths(model, checkpoint), device, precision), host, port)
    if threading.current_thread() is threading.main_thread():  # `kill PID` stops it as quietly as Ctrl-C
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    shown = f"[{host}]" if ":" in host else host
    print(f"argen serve: http://{shown}:{server.server_port}/ ({', '.join(server.app.models.info)}); "
          "Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("argen serve: stopped", flush=True)
    finally:
        server.server_close()
        if not server.app.close():
            print("argen serve: a job did not stop; exiting without it", flush=True)
            os._exit(0)
    return 0

