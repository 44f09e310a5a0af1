"""A local fake of the Hugging Face Hub's HTTP API, bound to 127.0.0.1.

Why a server and not a fabricated cache: with HF_HUB_OFFLINE=1 transformers reads a
model from a cache in the hub's layout, but `datasets.load_dataset("openai/gsm8k",
"main")` only reads its own prepared-dataset cache. Both libraries honour HF_ENDPOINT,
so serving the repositories over HTTP runs the real download path of a GPU user's first
day (resolve, revision lookup, tree listing, file download into HF_HOME) for models and
datasets alike, and a wrong revision fails the way the real Hub fails it.

Each repository is a folder served at one commit (its 40-hex `sha`); `main` resolves to
it, any other revision is "Revision Not Found" (404 with the hub's error header). The
routes are the ones huggingface_hub 2.x calls (file_download.get_hf_file_metadata,
hf_api.{model,dataset}_info, list_repo_tree, get_paths_info); every request is logged in
`requests` so a test can see what was fetched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from specdraft.rehearsal.server import LocalServer

KINDS = ("model", "dataset")


@dataclasses.dataclass(frozen=True)
class Repo:
    kind: str  # model | dataset
    repo_id: str  # ORG/NAME
    sha: str  # the one commit this fake serves
    folder: Path

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())


def _oid(data: bytes) -> str:
    """A git blob id, as the hub reports for each file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub(LocalServer):
    """`with FakeHub(repos) as hub:` serves them at hub.url (set HF_ENDPOINT to it)."""

    def __init__(self, repos: list[Repo], port: int = 0):
        self.repos = {(r.kind, r.repo_id): r for r in repos}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.lock = threading.Lock()
        super().__init__(self._handler(), port)

    def downloads(self) -> list[str]:
        """Paths of the files served with GET (not HEAD)."""
        return [p for m, p, s in self.requests if m == "GET" and "/resolve/" in p and s == 200]

    # ------------------------------------------------------------------ routing
    def _repo(self, kind: str, repo_id: str, revision: str) -> Repo | tuple[int, str, str]:
        repo = self.repos.get((kind, repo_id))
        if repo is None:
            return 404, "RepoNotFound", f"Repository Not Found for url: {kind}s/{repo_id}"
        if revision not in (repo.sha, "main"):
            return 404, "RevisionNotFound", f"Revision Not Found for {repo_id}: {revision}"
        return repo

    def _info(self, repo: Repo) -> dict[str, Any]:
        card: dict[str, Any] = {}
        readme = repo.folder / "README.md"
        if readme.is_file():  # the YAML header of a dataset card (configs, splits)
            import yaml

            m = re.match(r"---\n(.*?)\n---", readme.read_text(encoding="utf-8"), re.DOTALL)
            card = yaml.safe_load(m.group(1)) if m else {}
        return {"_id": repo.sha[:24], "id": repo.repo_id, "sha": repo.sha, "private": False, "disabled": False,
                "gated": False, "downloads": 0, "likes": 0, "tags": [], "cardData": card,
                "lastModified": "2024-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": f} for f in repo.files()]}

    def _entries(self, repo: Repo, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        """Tree entries under `prefix` (the hub's tree API): files and folders."""
        base = repo.folder / prefix if prefix else repo.folder
        if not base.is_dir():
            return []
        paths = base.rglob("*") if recursive else base.iterdir()
        return [self._entry(repo, p) for p in sorted(paths)]

    def _entry(self, repo: Repo, p: Path) -> dict[str, Any]:
        rel = str(p.relative_to(repo.folder))
        if p.is_dir():
            return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "path": rel}
        data = p.read_bytes()
        return {"type": "file", "oid": _oid(data), "size": len(data), "path": rel}

    def _handler(self):
        hub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _send(self, code: int, body: Any = None, headers: dict[str, str] | None = None,
                      raw: bytes | None = None, head: bool = False) -> None:
                data = raw if raw is not None else json.dumps(body).encode()
                with hub.lock:
                    hub.requests.append((self.command, urlsplit(self.path).path, code))
                self.send_response(code)
                self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _error(self, code: int, kind: str, message: str, head: bool = False) -> None:
                self._send(code, {"error": message}, {"X-Error-Code": kind, "X-Error-Message": message}, head=head)

            def _resolve(self, head: bool) -> bool:
                m = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", unquote(urlsplit(self.path).path))
                if not m:
                    return False
                kind = "dataset" if m.group(1) else "model"
                repo = hub._repo(kind, m.group(2), m.group(3))
                if isinstance(repo, tuple):
                    self._error(*repo, head=head)
                    return True
                f = repo.folder / m.group(4)
                if not f.is_file():
                    self._error(404, "EntryNotFound", f"{m.group(4)} does not exist at {repo.sha}", head=head)
                    return True
                data = f.read_bytes()
                self._send(200, raw=data, head=head,
                           headers={"X-Repo-Commit": repo.sha, "ETag": f'"{_oid(data)}"', "Accept-Ranges": "none"})
                return True

            def do_HEAD(self) -> None:  # noqa: N802
                if not self._resolve(head=True):
                    self._error(404, "NotFound", f"no route {self.path}", head=True)

            def do_GET(self) -> None:  # noqa: N802
                if self._resolve(head=False):
                    return
                url = urlsplit(self.path)
                path, query = unquote(url.path), parse_qs(url.query)
                m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if m:
                    repo = hub._repo(m.group(1)[:-1], m.group(2), m.group(3) or "main")
                    return self._error(*repo) if isinstance(repo, tuple) else self._send(200, hub._info(repo))
                m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/tree/([^/]+)/?(.*)", path)
                if m:
                    repo = hub._repo(m.group(1)[:-1], m.group(2), m.group(3))
                    if isinstance(repo, tuple):
                        return self._error(*repo)
                    recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                    return self._send(200, hub._entries(repo, m.group(4).strip("/"), recursive))
                self._error(404, "NotFound", f"no route {path}")

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode() if n else ""
                path = unquote(urlsplit(self.path).path)
                m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/paths-info/([^/]+)", path)
                if m:
                    repo = hub._repo(m.group(1)[:-1], m.group(2), m.group(3))
                    if isinstance(repo, tuple):
                        return self._error(*repo)
                    form = json.loads(body) if body.startswith("{") else parse_qs(body)
                    paths = form.get("paths", [])
                    out = [hub._entry(repo, repo.folder / p) for p in paths if (repo.folder / p).exists()]
                    return self._send(200, out)
                self._error(404, "NotFound", f"no route {path}")

        return H
