"""A loopback fake of the Hugging Face Hub HTTP API: just enough for huggingface_hub to create a dataset repo,
set gating, branch, upload (preupload + LFS basic transfer + NDJSON commit), list files and download them.

Stdlib only; repos live in memory. It binds 127.0.0.1 on a free port, and stops by itself after ``idle_timeout``
seconds without a request (as well as on ``close()`` or when the test process exits: daemon threads).
Xet must be off in the client (``huggingface_hub.constants.HF_HUB_DISABLE_XET = True``): this fake speaks LFS only.
Writes need ``Authorization: Bearer <one of valid_tokens>``; reads are open, except for private repos.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    message: str
    parent: str | None


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    gated: str | bool = False

    def head(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev, rev)
        return self.commits.get(oid)

    def commit(self, branch: str, files: dict[str, bytes], message: str) -> Commit:
        parent = self.branches.get(branch)
        h = hashlib.sha1(json.dumps([parent, message, sorted((p, hashlib.sha256(b).hexdigest())
                                                              for p, b in files.items())]).encode()).hexdigest()
        c = Commit(h, files, message, parent)
        self.commits[h] = c
        self.branches[branch] = h
        return c


class FakeHub:
    def __init__(self, valid_tokens: set[str], idle_timeout: float = 120.0) -> None:
        self.valid_tokens = set(valid_tokens)
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.idle_timeout = idle_timeout
        self._last = time.monotonic()
        self._lock = threading.Lock()
        hub = self

        class Handler(_Handler):
            fake = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._stopping = threading.Event()
        self._stop_lock = threading.Lock()
        self.closed = threading.Event()  # set once the port is released

    def start(self) -> FakeHub:
        self._thread.start()
        self._watchdog.start()
        return self

    def _watch(self) -> None:
        while not self._stopping.wait(0.1):
            if time.monotonic() - self._last > self.idle_timeout:
                self.close()

    def touch(self) -> None:
        self._last = time.monotonic()

    def close(self) -> None:
        with self._stop_lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        self.closed.set()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    # -- helpers -------------------------------------------------------------------------------

    def _send(self, code: int, body: bytes | dict | list | None = None, headers: dict[str, str] | None = None,
              head: bool = False) -> None:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else (body or b"")
        self.send_response(code)
        if isinstance(body, (dict, list)):
            self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _error(self, code: int, msg: str, error_code: str | None = None) -> None:
        self._send(code, {"error": msg}, {"X-Error-Message": msg, **({"X-Error-Code": error_code} if error_code else {})})

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _authorised(self) -> bool:
        auth = self.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.fake.valid_tokens

    def _repo(self, repo_id: str, write: bool = False) -> Repo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorised()):
            self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
            return None
        if write and not self._authorised():
            self._error(401, "Invalid credentials in Authorization header")
            return None
        return repo

    def _dispatch(self, method: str) -> None:
        self.fake.touch()
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        self.fake.requests.append((method, path))
        with self.fake._lock:
            for pattern, name in ROUTES:
                m = re.fullmatch(pattern, path)
                if m and name.startswith(method.lower() + "_"):
                    return getattr(self, name)(query=query, **m.groupdict())
        self._error(404, f"fake hub has no route for {method} {path}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- routes --------------------------------------------------------------------------------

    def get_whoami(self, query: dict) -> None:
        if not self._authorised():
            return self._error(401, "Invalid credentials in Authorization header")
        self._send(200, {"type": "user", "name": "fake-user", "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def post_validate_yaml(self, query: dict) -> None:
        self._body()
        self._send(200, {"errors": [], "warnings": []})

    def post_create(self, query: dict) -> None:
        req = json.loads(self._body() or b"{}")
        if not self._authorised():
            return self._error(401, "Invalid credentials in Authorization header")
        if req.get("type") != "dataset":
            return self._error(400, "the fake hub only hosts datasets")
        repo_id = f"{req.get('organization') or 'fake-user'}/{req['name']}"
        if repo_id in self.fake.repos:  # the Hub answers 409 with the url, which create_repo(exist_ok=True) reads
            return self._send(409, {"error": "You already created this dataset repo",
                                    "url": f"{self.fake.url}/datasets/{repo_id}"})
        repo = Repo(repo_id, req.get("visibility") == "private" or bool(req.get("private")))
        repo.commit("main", {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"}, "initial commit")
        self.fake.repos[repo_id] = repo
        self._send(200, {"url": f"{self.fake.url}/datasets/{repo_id}", "name": repo_id})

    def put_settings(self, query: dict, repo_id: str) -> None:
        req = json.loads(self._body() or b"{}")
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        if "gated" in req:
            repo.gated = req["gated"]
        if "private" in req or "visibility" in req:
            repo.private = req.get("visibility") == "private" or bool(req.get("private"))
        self._send(200, {})

    def post_branch(self, query: dict, repo_id: str, branch: str) -> None:
        self._body()
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        if branch in repo.branches:
            return self._error(409, f"branch {branch} already exists")
        repo.branches[branch] = repo.branches["main"]
        self._send(200, {})

    def get_info(self, query: dict, repo_id: str, rev: str | None = None) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        c = repo.head(rev or "main")
        if c is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        self._send(200, {"id": repo_id, "_id": repo_id, "sha": c.oid, "private": repo.private, "gated": repo.gated,
                         "disabled": False, "downloads": 0, "likes": 0, "tags": [], "author": repo_id.split("/")[0],
                         "siblings": [{"rfilename": p, "size": len(b)} for p, b in sorted(c.files.items())]})

    def get_tree(self, query: dict, repo_id: str, rev: str, sub: str | None = None) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        c = repo.head(rev)
        if c is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        prefix = f"{sub.strip('/')}/" if sub else ""
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, dirs = [], set()
        for p, b in sorted(c.files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            if "/" in rest and not recursive:
                dirs.add(prefix + rest.split("/")[0])
                continue
            parts = rest.split("/")[:-1]
            dirs.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
            entries.append({"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()})
        if prefix and not entries and not dirs:
            return self._error(404, f"{sub} does not exist", "EntryNotFound")
        entries += [{"type": "directory", "path": d, "oid": "0" * 40} for d in sorted(dirs)]
        self._send(200, entries)

    def post_preupload(self, query: dict, repo_id: str, rev: str) -> None:
        req = json.loads(self._body() or b"{}")
        if self._repo(repo_id, write=True) is None:
            return
        files = [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(".parquet") else "regular",
                  "shouldIgnore": False} for f in req.get("files", [])]
        self._send(200, {"files": files})

    def post_lfs_batch(self, query: dict, repo_id: str) -> None:
        req = json.loads(self._body() or b"{}")
        if self._repo(repo_id, write=True) is None:
            return
        objects = []
        for o in req.get("objects", []):
            obj = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.fake.lfs:
                obj["actions"] = {"upload": {"href": f"{self.fake.url}/lfs-upload/{o['oid']}"}}
            objects.append(obj)
        self._send(200, {"transfer": "basic", "objects": objects})

    def put_lfs_upload(self, query: dict, oid: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "sha256 mismatch")
        self.fake.lfs[oid] = data
        self._send(200, {})

    def post_commit(self, query: dict, repo_id: str, rev: str) -> None:
        body = self._body()
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        if rev not in repo.branches:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        files = dict(repo.head(rev).files)
        message = ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", "")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.fake.lfs:
                    return self._error(400, f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = self.fake.lfs[value["oid"]]
            elif key in ("deletedFile", "deletedFolder"):
                gone = value["path"].rstrip("/")
                files = {p: b for p, b in files.items() if p != gone and not p.startswith(gone + "/")}
            else:
                return self._error(400, f"unknown commit operation {key}")
        c = repo.commit(rev, files, message)
        self._send(200, {"commitUrl": f"{self.fake.url}/datasets/{repo_id}/commit/{c.oid}", "commitOid": c.oid,
                         "pullRequestUrl": None})

    def _resolve(self, repo_id: str, rev: str, file: str, head: bool) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        c = repo.head(rev)
        if c is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        if file not in c.files:
            return self._error(404, f"{file} does not exist", "EntryNotFound")
        data = c.files[file]
        etag = hashlib.sha256(data).hexdigest() if file.endswith(".parquet") else hashlib.sha1(data).hexdigest()
        self._send(200, data, {"ETag": f'"{etag}"', "X-Repo-Commit": c.oid}, head=head)

    def get_resolve(self, query: dict, repo_id: str, rev: str, file: str) -> None:
        self._resolve(repo_id, rev, file, head=False)

    def head_resolve(self, query: dict, repo_id: str, rev: str, file: str) -> None:
        self._resolve(repo_id, rev, file, head=True)


_ID = r"(?P<repo_id>[^/]+/[^/]+)"
ROUTES = [
    (r"/api/whoami-v2", "get_whoami"),
    (r"/api/validate-yaml", "post_validate_yaml"),
    (r"/api/repos/create", "post_create"),
    (rf"/api/datasets/{_ID}/settings", "put_settings"),
    (rf"/api/datasets/{_ID}/branch/(?P<branch>.+)", "post_branch"),
    (rf"/api/datasets/{_ID}/revision/(?P<rev>[^/]+)", "get_info"),
    (rf"/api/datasets/{_ID}", "get_info"),
    (rf"/api/datasets/{_ID}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.+))?", "get_tree"),
    (rf"/api/datasets/{_ID}/preupload/(?P<rev>[^/]+)", "post_preupload"),
    (rf"/api/datasets/{_ID}/commit/(?P<rev>[^/]+)", "post_commit"),
    (rf"/datasets/{_ID}\.git/info/lfs/objects/batch", "post_lfs_batch"),
    (r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "put_lfs_upload"),
    (rf"/datasets/{_ID}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", "get_resolve"),
    (rf"/datasets/{_ID}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", "head_resolve"),
]


def serve(valid_tokens: set[str] | None = None, idle_timeout: float = 120.0) -> FakeHub:
    """Start a fake Hub on 127.0.0.1; use as ``with serve({"hf_ok"}) as hub: ... hub.url``."""
    return FakeHub(valid_tokens or {"hf_fake_write_token"}, idle_timeout)
