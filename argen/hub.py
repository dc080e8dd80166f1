"""The Hugging Face Hub: ``argen push`` uploads a checkpoint folder; ``hf://ORG/NAME[@REVISION]`` loads one.

``huggingface_hub`` is an optional extra (``pip install 'argen[hub]'``), imported only when a Hub
path or ``argen push`` is used. A Hub path resolves to a folder of the local Hugging Face cache
(``HF_HOME`` / ``HF_HUB_CACHE``), so everything after it is the same as for a local checkpoint.
The cache is tried first: a model downloaded once loads offline, with no network round trip. The
network is tried next, unless ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import re
from pathlib import Path

import argen.checkpoint as ckpt
from argen.errors import ArgenError

PREFIX = "hf://"
# What argen reads of a repository: a generator and its tokenizer, config and weights. The card
# (README.md) is for people on the Hub; training state and logs are never pushed, so never fetched.
NEEDED = [ckpt.CONFIG, ckpt.WEIGHTS, f"{ckpt.TOKENIZER_DIR}/{ckpt.CONFIG}", f"{ckpt.TOKENIZER_DIR}/{ckpt.WEIGHTS}"]
PUSHED = [*NEEDED, ckpt.CARD, f"{ckpt.TOKENIZER_DIR}/{ckpt.CARD}"]
_HUB_PATH = re.compile(r"hf://([\w.-]+/[\w.-]+)(?:@(\S+))?")
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def is_hub_path(path: object) -> bool:
    return isinstance(path, str) and path.startswith(PREFIX)


def local_dir(path: str | Path) -> Path:
    """The local folder of a checkpoint: ``path`` itself, or for ``hf://ORG/NAME[@REVISION]`` its
    snapshot in the Hugging Face cache (downloaded first when it is not there)."""
    if not is_hub_path(path):
        return Path(path)
    m = _HUB_PATH.fullmatch(path)
    if m is None:
        raise ArgenError(f"{path}: a Hub checkpoint is hf://ORG/NAME or hf://ORG/NAME@REVISION")
    repo, revision = m.groups()
    hf = _import(path)
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    kw = dict(repo_id=repo, revision=revision, allow_patterns=NEEDED, library_name="argen")
    try:
        snapshot = Path(hf.snapshot_download(**kw, local_files_only=True))
        # a snapshot that an earlier download (hf_hub_download of one file, say) left incomplete: fetch the rest
        if (snapshot / ckpt.CONFIG).is_file() and (snapshot / ckpt.WEIGHTS).is_file():
            return snapshot
    except LocalEntryNotFoundError:
        pass
    unreachable = f"{path}: not in the local Hugging Face cache and the Hub cannot be reached"
    if constants.HF_HUB_OFFLINE:
        raise ArgenError(f"{unreachable} (HF_HUB_OFFLINE=1 is set)")
    try:
        return Path(hf.snapshot_download(**kw))
    except LocalEntryNotFoundError as e:  # what huggingface_hub raises when the network is down
        raise ArgenError(f"{unreachable} ({_first_line(e).removeprefix('Got: ')})") from None
    except Exception as e:  # noqa: BLE001  (repository not found, gated, bad revision, HTTP errors: one line each)
        raise ArgenError(f"{path}: {_hub_error(e)}") from None


def push(ckpt_dir: str | Path, repo: str, *, private: bool = False, revision: str | None = None) -> str:
    """Upload checkpoint folder ``ckpt_dir`` to model repository ``repo`` (created if missing); returns
    the commit's URL. Only what loading needs and the model cards go up (``files_to_push``)."""
    d = Path(ckpt_dir)
    if not _REPO_ID.fullmatch(repo):
        raise ArgenError(f"--repo {repo!r}: expected ORG/NAME (a user or organisation, then the model's name)")
    ckpt.read_config(d)  # a folder that is not a checkpoint is refused here, not after an upload
    if not (d / ckpt.WEIGHTS).is_file():
        raise ArgenError(f"{d}: no {ckpt.WEIGHTS} to push")
    hf = _import("argen push")
    from argen.card import write_card

    write_card(d, load_as=f"{PREFIX}{repo}")  # the card names the repository it is read from
    files = files_to_push(d)
    api = hf.HfApi()
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo, branch=revision, exist_ok=True)
        info = api.upload_folder(repo_id=repo, folder_path=str(d), revision=revision, allow_patterns=files,
                                 commit_message=f"argen push: {', '.join(files)}")
    except Exception as e:  # noqa: BLE001  (not logged in, no network, no write access: one line each)
        raise ArgenError(f"argen push {repo}: {_hub_error(e)}") from None
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo}")


def files_to_push(ckpt_dir: str | Path) -> list[str]:
    """The files of ``ckpt_dir`` that ``push`` uploads, relative to it: never train_state.safetensors,
    logs, metrics of runs or anything else a training folder collects."""
    d = Path(ckpt_dir)
    return [f for f in PUSHED if (d / f).is_file()]


def _import(what: str):
    try:
        import huggingface_hub
    except ImportError:
        raise ArgenError(f"{what}: the Hugging Face Hub needs huggingface_hub: pip install 'argen[hub]'") from None
    return huggingface_hub


def _first_line(e: BaseException) -> str:
    return next((x.strip() for x in str(e).splitlines() if x.strip()), type(e).__name__)


def _hub_error(e: Exception) -> str:
    """One line for an error of huggingface_hub or of its HTTP client (httpx or httpx2, by version)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(e, RevisionNotFoundError):
        return "no such revision (branch, tag or commit) in that repository"
    if isinstance(e, GatedRepoError):
        return "a gated repository: accept its terms on the Hub, then log in with `hf auth login`"
    if isinstance(e, RepositoryNotFoundError):
        return "no such model repository, or a private one: log in with `hf auth login` or set HF_TOKEN"
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
        return f"not allowed (HTTP {status}): log in with `hf auth login` or set HF_TOKEN to a token that may write"
    return f"{type(e).__name__}: {_first_line(e)}"
