"""Azure Storage client-side encryption v2 interop on Azurite, both directions.

cmkvault encrypt … -o az://… is read by the official azure-storage-blob client
(require_encryption=True), and cmkvault decrypt az://… reads what that client uploaded, with a
KEK adapter backed by this server through azure-keyvault-keys. Needs Azurite: scripts/test.sh
starts it (scripts/azurite.sh) and exports AZURE_STORAGE_USE_EMULATOR, AZURITE_BLOB_STORAGE_URL
and AZURITE_CONNECTION_STRING; without them the tests skip.
"""

from __future__ import annotations

import http.client
import http.server
import os
import threading
import urllib.parse
import uuid

import pytest

from conftest import TIMEOUTS

if not (
    os.environ.get("AZURITE_BLOB_STORAGE_URL")
    and os.environ.get("AZURITE_CONNECTION_STRING")
    and os.environ.get("AZURE_STORAGE_USE_EMULATOR") == "true"
):
    pytest.skip(
        "Azurite is not running (scripts/azurite.sh sets AZURITE_BLOB_STORAGE_URL, "
        "AZURITE_CONNECTION_STRING, AZURE_STORAGE_USE_EMULATOR)",
        allow_module_level=True,
    )

blob = pytest.importorskip("azure.storage.blob")
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm  # noqa: E402

MiB = 1024 * 1024
SIZES = [0, 1, 4 * MiB, 4 * MiB + 1, 9 * MiB + 7]


class VaultKek:
    """The KEK interface azure-storage-blob expects, backed by a vault key (the adapter of the
    SDK's own Key Vault sample)."""

    def __init__(self, key, credential, server):
        self.kid = key.id
        self.unwraps = 0
        self.cc = CryptographyClient(
            key,
            credential,
            connection_verify=server.ca,
            verify_challenge_resource=False,
            **TIMEOUTS,
        )

    def wrap_key(self, key: bytes) -> bytes:
        return self.cc.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, key).encrypted_key

    def unwrap_key(self, key: bytes, algorithm: str) -> bytes:
        assert algorithm == "RSA-OAEP-256", algorithm
        self.unwraps += 1
        return self.cc.unwrap_key(algorithm, key).key

    def get_kid(self) -> str:
        return self.kid

    def get_key_wrap_algorithm(self) -> str:
        return "RSA-OAEP-256"


@pytest.fixture(scope="module")
def setup(kc, credential, server):
    key = kc.create_rsa_key(f"blob-kek-{uuid.uuid4().hex[:8]}", size=2048)
    kek = VaultKek(key, credential, server)
    service = blob.BlobServiceClient.from_connection_string(
        os.environ["AZURITE_CONNECTION_STRING"]
    )
    container = f"cse-{uuid.uuid4().hex[:12]}"
    service.create_container(container)
    return key, kek, service, container


def data_of(size: int) -> bytes:
    # Distinct per size, cheap to make: a repeated counter pattern.
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def encrypting_client(service, container, name, kek):
    c = service.get_blob_client(container, name)
    c.key_encryption_key = kek
    c.require_encryption = True
    c.encryption_version = "2.0"
    return c


@pytest.mark.parametrize("size", SIZES)
def test_python_reads_cmkvault_upload(setup, server, tmp_path, size):
    key, kek, service, container = setup
    data = data_of(size)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    name = f"from-cmkvault/{size}.bin"
    server.cli("encrypt", "-q", "--key", key.id, str(src), "-o", f"az://{container}/{name}")

    raw = service.get_blob_client(container, name)
    props = raw.get_blob_properties()
    assert "encryptiondata" in props.metadata
    assert "cmkvaultintegrity" in props.metadata
    assert props.size == size + 28 * ((size + 4 * MiB - 1) // (4 * MiB))

    got = encrypting_client(service, container, name, kek).download_blob().readall()
    assert got == data

    # inspect reads the metadata without the key.
    out = server.cli("inspect", f"az://{container}/{name}").stdout
    assert key.id in out and "RSA-OAEP-256" in out and str(size) in out, out

    # The integrity record binds CONTAINER/NAME: the same metadata and body under another name
    # is refused by cmkvault.
    other = f"copied/{size}.bin"
    service.get_blob_client(container, other).upload_blob(
        raw.download_blob().readall(), metadata=props.metadata, overwrite=True
    )
    res = server.cli(
        "decrypt", "-q", f"az://{container}/{other}", "-o", str(tmp_path / "x"), check=False
    )
    assert res.returncode != 0, res.stdout
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("size", SIZES)
def test_cmkvault_reads_python_upload(setup, server, tmp_path, size):
    key, kek, service, container = setup
    data = data_of(size)
    name = f"from-python/{size}.bin"
    encrypting_client(service, container, name, kek).upload_blob(data, overwrite=True)
    props = service.get_blob_client(container, name).get_blob_properties()
    assert "encryptiondata" in props.metadata

    out = tmp_path / "out.bin"
    # No integrity record on SDK-written blobs: refused unless --no-integrity.
    res = server.cli("decrypt", "-q", f"az://{container}/{name}", "-o", str(out), check=False)
    assert res.returncode != 0 and "integrity" in res.stderr, res.stderr
    assert not out.exists()

    server.cli("decrypt", "-q", "--no-integrity", f"az://{container}/{name}", "-o", str(out))
    assert out.read_bytes() == data


# ---------------------------------------------------------------------------------------------
# Directory trees and prefixes (-r), several inputs, rewrap, shred-report and inspect of blobs.
# ---------------------------------------------------------------------------------------------
TREE = {
    "top.txt": b"top level\n",
    "empty.bin": b"",
    "sub/one.bin": data_of(1000),
    "sub/dir two/c d.txt": b"a name with spaces\n",
    "sub/deeper/big.bin": data_of(4 * MiB + 1),
}


def write_tree(root, files=TREE):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def read_tree(root):
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def raw_state(service, container, name):
    """(body bytes, size, Content-MD5, ETag, metadata) of a blob, read without decryption."""
    c = service.get_blob_client(container, name)
    props = c.get_blob_properties()
    body = c.download_blob().readall()
    md5 = props.content_settings.content_md5
    return body, props.size, bytes(md5) if md5 else None, props.etag, dict(props.metadata)


def key_id_of(service, container, name):
    import json

    md = service.get_blob_client(container, name).get_blob_properties().metadata
    return json.loads(md["encryptiondata"])["WrappedContentKey"]["KeyId"]


def test_tree_to_prefix_and_back(setup, server, tmp_path):
    key, kek, service, container = setup
    src = tmp_path / "src"
    write_tree(src)
    prefix = f"tree-{uuid.uuid4().hex[:8]}"
    server.cli("encrypt", "-q", "--key", key.id, "-r", str(src), "-o", f"az://{container}/{prefix}")

    # Every blob under PREFIX/RELATIVE/PATH, no suffix; the Python SDK reads each one.
    listed = sorted(b.name for b in service.get_container_client(container).list_blobs(prefix))
    assert listed == sorted(f"{prefix}/{rel}" for rel in TREE), listed
    for rel, data in TREE.items():
        got = encrypting_client(service, container, f"{prefix}/{rel}", kek).download_blob()
        assert got.readall() == data, rel
    # The integrity record binds CONTAINER/NAME.
    md = service.get_blob_client(container, f"{prefix}/sub/one.bin").get_blob_properties().metadata
    assert f'"ObjectName":"{container}/{prefix}/sub/one.bin"' in md["cmkvaultintegrity"]

    # An unencrypted blob below the prefix is skipped by -r (and refused when named).
    service.get_blob_client(container, f"{prefix}/plain.txt").upload_blob(b"plain")
    out = tmp_path / "out"
    server.cli("decrypt", "-q", "-r", f"az://{container}/{prefix}", "-o", str(out))
    assert read_tree(out) == TREE
    res = server.cli(
        "decrypt", f"az://{container}/{prefix}/plain.txt", "-o", str(tmp_path / "p"), check=False
    )
    assert res.returncode != 0 and "plain.txt" in res.stderr and "encryptiondata" in res.stderr
    assert not (tmp_path / "p").exists()

    # Existing outputs are refused before anything is written: blobs and local files.
    before = {b.name: b.etag for b in service.get_container_client(container).list_blobs(prefix)}
    res = server.cli(
        "encrypt", "-q", "--key", key.id, "-r", str(src), "-o", f"az://{container}/{prefix}",
        check=False,
    )
    assert res.returncode != 0 and "output exists" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    after = {b.name: b.etag for b in service.get_container_client(container).list_blobs(prefix)}
    assert after == before
    res = server.cli(
        "decrypt", "-q", "-r", f"az://{container}/{prefix}", "-o", str(out), check=False
    )
    assert res.returncode != 0 and "output exists" in res.stderr, res.stderr
    # --force overwrites.
    server.cli(
        "encrypt", "-q", "--force", "--key", key.id, "-r", str(src), "-o",
        f"az://{container}/{prefix}",
    )


def test_several_inputs_and_mixed_sources(setup, server, tmp_path):
    key, kek, service, container = setup
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"alpha")
    b.write_bytes(b"beta")
    prefix = f"multi-{uuid.uuid4().hex[:8]}"
    server.cli("encrypt", "-q", "--key", key.id, str(a), str(b), "-o", f"az://{container}/{prefix}")
    for n, data in (("a.txt", b"alpha"), ("b.txt", b"beta")):
        got = encrypting_client(service, container, f"{prefix}/{n}", kek).download_blob()
        assert got.readall() == data

    # Several az:// inputs, and a local .cmk file among them: outputs below -o by file name.
    local = tmp_path / "c.txt"
    local.write_bytes(b"gamma")
    server.cli("encrypt", "-q", "--key", key.id, str(local), "-o", str(tmp_path / "c.txt.cmk"))
    out = tmp_path / "out"
    server.cli(
        "decrypt", "-q", f"az://{container}/{prefix}/a.txt", f"az://{container}/{prefix}/b.txt",
        str(tmp_path / "c.txt.cmk"), "-o", str(out),
    )
    assert read_tree(out) == {"a.txt": b"alpha", "b.txt": b"beta", "c.txt": b"gamma"}

    # A blob copied to another name fails its integrity check, naming the blob.
    raw = service.get_blob_client(container, f"{prefix}/a.txt")
    props = raw.get_blob_properties()
    service.get_blob_client(container, f"{prefix}/moved.txt").upload_blob(
        raw.download_blob().readall(), metadata=props.metadata
    )
    res = server.cli(
        "decrypt", "-q", "-r", f"az://{container}/{prefix}", "-o", str(tmp_path / "o2"),
        check=False,
    )
    assert res.returncode != 0 and f"az://{container}/{prefix}/moved.txt" in res.stderr
    assert not (tmp_path / "o2" / "moved.txt").exists()


def test_inspect_and_shred_report_over_a_prefix(setup, kc, credential, server, tmp_path):
    import json

    key, kek, service, container = setup
    other = kc.create_rsa_key(f"blob-other-{uuid.uuid4().hex[:8]}", size=2048)
    prefix = f"report-{uuid.uuid4().hex[:8]}"
    src = tmp_path / "src"
    write_tree(src, {"x/one.txt": b"1", "x/two.txt": b"22"})
    server.cli("encrypt", "-q", "--key", key.id, "-r", str(src), "-o", f"az://{container}/{prefix}")
    (tmp_path / "o.txt").write_bytes(b"333")
    server.cli(
        "encrypt", "-q", "--key", other.id, str(tmp_path / "o.txt"),
        "-o", f"az://{container}/{prefix}/o.txt",
    )
    service.get_blob_client(container, f"{prefix}/plain.txt").upload_blob(b"plain")
    base = f"az://{container}/{prefix}"

    rows = json.loads(server.cli("inspect", "-r", base, "--format", "json").stdout)
    assert [(r["file"], r["kid"], r["plaintext_size"]) for r in rows] == [
        (f"{base}/o.txt", other.id, 3),
        (f"{base}/x/one.txt", key.id, 1),
        (f"{base}/x/two.txt", key.id, 2),
    ], rows
    assert all(r["integrity"].startswith("present") for r in rows)
    table = server.cli("inspect", "-r", base).stdout
    assert "plain.txt" not in table and f"{base}/x/two.txt\t{key.id}\tRSA-OAEP-256" in table

    versionless = key.id.rsplit("/", 1)[0]
    rep = json.loads(
        server.cli("shred-report", "--key", versionless, "-r", base, "--format", "json").stdout
    )
    assert [r["file"] for r in rep] == [f"{base}/x/one.txt", f"{base}/x/two.txt"], rep
    out = server.cli("shred-report", "--key", other.id, "-r", base).stdout
    assert f"{base}/o.txt\t{other.id}\t3" in out and "x/one.txt" not in out, out
    assert f"1 of 3 files unreadable if {other.id} is revoked" in out, out
    # A single blob, and a blob that does not exist.
    out = server.cli("shred-report", "--key", versionless, f"{base}/x/one.txt").stdout
    assert "1 of 1 files unreadable" in out, out
    res = server.cli("inspect", f"{base}/nope", check=False)
    assert res.returncode != 0 and f"{base}/nope" in res.stderr, res.stderr


def test_rewrap_blobs_to_latest_then_disable_old_version(
    setup, kc, credential, server, tmp_path
):
    _, _, service, container = setup
    key = kc.create_rsa_key(f"blob-rot-{uuid.uuid4().hex[:8]}", size=2048)
    prefix = f"rewrap-{uuid.uuid4().hex[:8]}"
    src = tmp_path / "src"
    files = {"a.bin": data_of(5 * MiB), "d/b.txt": b"bee", "d/c d.txt": b"spaced"}
    write_tree(src, files)
    server.cli("encrypt", "-q", "--key", key.id, "-r", str(src), "-o", f"az://{container}/{prefix}")
    service.get_blob_client(container, f"{prefix}/plain.txt").upload_blob(b"plain")
    # User metadata beside ours, with names whose Shared Key order is not byte order.
    a = service.get_blob_client(container, f"{prefix}/a.bin")
    a.set_blob_metadata({**a.get_blob_properties().metadata, "Owner": "Team A", "a_b": "1", "a1": "2"})
    before = {n: raw_state(service, container, f"{prefix}/{n}") for n in files}

    rotated = kc.rotate_key(key.name)
    assert rotated.id != key.id
    out = server.cli("rewrap", "--to", "latest", "-r", f"az://{container}/{prefix}").stdout
    for n in files:
        assert f"az://{container}/{prefix}/{n}: {key.id} -> {rotated.id}" in out, out
    assert "plain.txt" not in out

    for n in files:
        body, size, md5, etag, md = raw_state(service, container, f"{prefix}/{n}")
        b_body, b_size, b_md5, b_etag, b_md = before[n]
        assert etag != b_etag, n  # the metadata changed ...
        assert (body, size, md5) == (b_body, b_size, b_md5), n  # ... the body did not
        assert key_id_of(service, container, f"{prefix}/{n}") == rotated.id
        # User metadata kept; names come back lower-cased (documented), values unchanged.
        ours = ("encryptiondata", "cmkvaultintegrity")
        assert {k: v for k, v in md.items() if k not in ours} == {
            k.lower(): v for k, v in b_md.items() if k not in ours
        }, n
    assert before["a.bin"][4]["Owner"] == "Team A"

    # The Python SDK reads the rewrapped blobs with the new version only.
    new_kek = VaultKek(rotated, credential, server)
    for n, data in files.items():
        got = encrypting_client(service, container, f"{prefix}/{n}", new_kek).download_blob()
        assert got.readall() == data, n

    # The old version can be disabled: everything still reads, nothing is left under it.
    kc.update_key_properties(key.name, key.properties.version, enabled=False)
    out_dir = tmp_path / "out"
    server.cli("decrypt", "-q", "-r", f"az://{container}/{prefix}", "-o", str(out_dir))
    assert read_tree(out_dir) == files
    rep = server.cli("shred-report", "--key", key.id, "-r", f"az://{container}/{prefix}").stdout
    assert "0 of 3 files unreadable" in rep, rep

    # Again: already under the latest version, left alone (ETag unchanged).
    etag = service.get_blob_client(container, f"{prefix}/d/b.txt").get_blob_properties().etag
    out = server.cli("rewrap", "--to", "latest", f"az://{container}/{prefix}/d/b.txt").stdout
    assert "already under this key" in out, out
    assert service.get_blob_client(container, f"{prefix}/d/b.txt").get_blob_properties().etag == etag


class _Interferer(http.server.ThreadingHTTPServer):
    """A reverse proxy in front of Azurite that, just before forwarding a Set Blob Metadata
    request (PUT ?comp=metadata), runs `before_set` directly against Azurite: another writer
    changing the blob between cmkvault's read of its metadata and its write."""

    daemon_threads = True

    def __init__(self, upstream, before_set):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = urllib.parse.urlsplit(upstream)
        self.before_set = before_set
        self.interfered = 0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.command == "PUT" and "comp=metadata" in self.path:
            self.server.before_set()
            self.server.interfered += 1
        up = self.server.upstream
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in ("transfer-encoding", "connection"):
                continue
            if k.lower() == "content-length" and self.command != "HEAD":
                continue
            self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_DELETE = _forward


def test_rewrap_refuses_a_blob_changed_meanwhile(setup, kc, server, tmp_path, monkeypatch):
    _, _, service, container = setup
    key = kc.create_rsa_key(f"blob-race-{uuid.uuid4().hex[:8]}", size=2048)
    name = f"race-{uuid.uuid4().hex[:8]}/obj.bin"
    src = tmp_path / "obj.bin"
    src.write_bytes(b"contended")
    server.cli("encrypt", "-q", "--key", key.id, str(src), "-o", f"az://{container}/{name}")
    blob_client = service.get_blob_client(container, name)
    rotated = kc.rotate_key(key.name)

    def someone_else_writes():
        md = blob_client.get_blob_properties().metadata
        blob_client.set_blob_metadata({**md, "touched": "yes"})

    proxy = _Interferer(os.environ["AZURITE_BLOB_STORAGE_URL"], someone_else_writes)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", proxy.url)
        res = server.cli("rewrap", "--to", "latest", f"az://{container}/{name}", check=False)
    finally:
        proxy.shutdown()
        proxy.server_close()
        monkeypatch.undo()
    assert proxy.interfered == 1
    assert res.returncode != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert f"az://{container}/{name}" in lines[0] and "412" in lines[0], lines[0]
    assert "changed" in lines[0], lines[0]
    # Nothing of ours was written: the other writer's change stands, still under the old key.
    md = blob_client.get_blob_properties().metadata
    assert md["touched"] == "yes"
    assert key_id_of(service, container, name) == key.id
    out = tmp_path / "out.bin"
    server.cli("decrypt", "-q", f"az://{container}/{name}", "-o", str(out))
    assert out.read_bytes() == b"contended"

    # Run again (no interference): re-read, re-wrapped, the other writer's entry kept.
    server.cli("rewrap", "-q", "--to", "latest", f"az://{container}/{name}")
    assert key_id_of(service, container, name) == rotated.id
    assert blob_client.get_blob_properties().metadata["touched"] == "yes"


def test_rewrap_with_a_sas(setup, kc, server, tmp_path, monkeypatch):
    """AZURE_STORAGE_SAS_KEY instead of the account key: object_store and Set Blob Metadata both
    use it; a SAS that may not write is refused (403) naming the blob, and nothing changes."""
    from datetime import datetime, timedelta, timezone

    _, _, service, container = setup
    key = kc.create_rsa_key(f"blob-sas-{uuid.uuid4().hex[:8]}", size=2048)
    name = f"sas-{uuid.uuid4().hex[:8]}/obj.bin"
    src = tmp_path / "obj.bin"
    src.write_bytes(b"shared access")
    server.cli("encrypt", "-q", "--key", key.id, str(src), "-o", f"az://{container}/{name}")
    rotated = kc.rotate_key(key.name)

    def sas(permission):
        return blob.generate_container_sas(
            service.account_name,
            container,
            account_key=service.credential.account_key,
            permission=blob.ContainerSasPermissions(**permission),
            expiry=datetime.now(timezone.utc) + timedelta(hours=1),
        )

    monkeypatch.setenv("AZURE_STORAGE_SAS_KEY", sas(dict(read=True, list=True)))
    res = server.cli("rewrap", "--to", "latest", f"az://{container}/{name}", check=False)
    assert res.returncode != 0 and f"az://{container}/{name}" in res.stderr, res.stderr
    assert "Set Blob Metadata was refused (403" in res.stderr, res.stderr
    assert key_id_of(service, container, name) == key.id

    monkeypatch.setenv("AZURE_STORAGE_SAS_KEY", sas(dict(read=True, write=True, list=True)))
    server.cli("rewrap", "-q", "--to", "latest", f"az://{container}/{name}")
    assert key_id_of(service, container, name) == rotated.id
    out = tmp_path / "out.bin"
    server.cli("decrypt", "-q", f"az://{container}/{name}", "-o", str(out))
    assert out.read_bytes() == b"shared access"
