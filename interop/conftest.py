"""Fixtures for the Azure SDK interop suite.

A session fixture starts the real ``cmkvault`` binary (``CMKVAULT_BIN``, default
``target/debug/cmkvault``) on a free loopback port with a fresh data directory, waits until it
answers HTTPS, gets an admin token with ``cmkvault token`` and stops the server at the end. The
official ``azure-keyvault-keys`` clients then talk to it exactly as they talk to Azure.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.keyvault.keys import KeyClient

REPO = Path(__file__).resolve().parent.parent
VAULT_DOMAIN = "vault.local"

# ---------------------------------------------------------------------------------------------
# Name resolution for named vaults.
#
# Named vaults are served on NAME.vault.local:PORT, and the SDK's challenge-resource check only
# passes on a strict subdomain of the challenge resource (https://vault.local:PORT). Rather than
# editing /etc/hosts, this process resolves every host equal to or ending in ".vault.local" to
# 127.0.0.1 by wrapping socket.getaddrinfo (which urllib3/requests use to connect). The Host
# header and TLS SNI still carry the real name, so the server routes by vault name and the
# certificate (SAN *.vault.local) is checked against it as usual. Only this pytest process is
# affected; the cmkvault CLI invoked below talks to https://localhost:PORT.
# ---------------------------------------------------------------------------------------------
_real_getaddrinfo = socket.getaddrinfo


def _is_vault_local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    h = host.lower().rstrip(".")
    return h == VAULT_DOMAIN or h.endswith("." + VAULT_DOMAIN)


def _getaddrinfo(host, *args, **kwargs):
    if _is_vault_local(host):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo


# ---------------------------------------------------------------------------------------------
# The server process.
# ---------------------------------------------------------------------------------------------
@dataclass
class Server:
    bin: str
    data: Path
    port: int
    token: str
    proc: subprocess.Popen
    log_path: Path
    imds_port: int = 0

    @property
    def url(self) -> str:
        """The default vault."""
        return f"https://localhost:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.data / "tls" / "ca.pem")

    def vault_url(self, name: str) -> str:
        return f"https://{name}.{VAULT_DOMAIN}:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs the cmkvault CLI against this server as the administrator."""
        env = dict(os.environ)
        env.update(
            CMKVAULT_URL=self.url,
            CMKVAULT_TOKEN=self.token,
            CMKVAULT_CA=self.ca,
            CMKVAULT_DATA=str(self.data),
        )
        res = subprocess.run(
            [self.bin, *args], env=env, capture_output=True, text=True, timeout=60
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"cmkvault {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
            )
        return res


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, data: Path, port: int, log_path: Path, timeout=60.0):
    """Waits until the server answers an unauthenticated request with the 401 challenge."""
    deadline = time.monotonic() + timeout
    last = "not started"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"cmkvault serve exited with {proc.returncode}:\n"
                + log_path.read_text(errors="replace")
            )
        ca = data / "tls" / "ca.pem"
        if ca.exists():
            try:
                ctx = ssl.create_default_context(cafile=str(ca))
                req = urllib.request.Request(
                    f"https://localhost:{port}/keys?api-version=7.5"
                )
                urllib.request.urlopen(req, context=ctx, timeout=2)
                last = "unexpected 2xx without a token"
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return
                last = f"HTTP {e.code}"
            except (OSError, ssl.SSLError) as e:
                last = repr(e)
        time.sleep(0.1)
    raise RuntimeError(
        f"cmkvault serve did not answer within {timeout}s ({last}):\n"
        + log_path.read_text(errors="replace")
    )


_failed_tests: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        _failed_tests.append(item.nodeid)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    bin_path = Path(os.environ.get("CMKVAULT_BIN") or "target/debug/cmkvault")
    if not bin_path.is_absolute() and not bin_path.exists():
        bin_path = REPO / bin_path  # relative to the repository root
    if not bin_path.is_file():
        pytest.fail(f"cmkvault binary not found at {bin_path} (build it or set CMKVAULT_BIN)")
    resolved = str(bin_path.resolve())
    base = tmp_path_factory.mktemp("cmkvault")
    data = base / "data"
    log_path = base / "server.log"
    port = _free_port()
    imds_port = _free_port()
    env = dict(os.environ)
    env.setdefault("CMKVAULT_LOG", "info,cmkvault_server=debug")
    env["NO_COLOR"] = "1"
    env.pop("CMKVAULT_ROOT_KEY", None)
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            resolved,
            "serve",
            "--data",
            str(data),
            "--listen",
            f"127.0.0.1:{port}",
            "--vault-domain",
            VAULT_DOMAIN,
            # The IMDS-shaped managed-identity endpoint, handing out identity "mi-host".
            "--imds-listen",
            f"127.0.0.1:{imds_port}",
            "--imds-identity",
            "mi-host",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    srv = None
    try:
        _wait_ready(proc, data, port, log_path)
        tok = subprocess.run(
            [resolved, "token", "--data", str(data), "--ttl", "2h"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        if tok.returncode != 0 or not tok.stdout.strip():
            raise RuntimeError(f"cmkvault token failed: {tok.stderr}")
        srv = Server(resolved, data, port, tok.stdout.strip(), proc, log_path, imds_port)
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        crashed = proc.returncode not in (0, -15)
        if _failed_tests or crashed or srv is None:
            sys.stderr.write(
                f"\n===== cmkvault server log (exit {proc.returncode}; "
                f"{len(_failed_tests)} failed test(s)) =====\n"
            )
            text = log_path.read_text(errors="replace")
            sys.stderr.write(text[-20000:])
            sys.stderr.write("\n===== end of server log =====\n")
        if crashed and srv is not None:
            pytest.fail(f"cmkvault serve exited with {proc.returncode}")


# ---------------------------------------------------------------------------------------------
# Credentials and clients.
# ---------------------------------------------------------------------------------------------
# Transport timeouts for every client, so a hung server fails a test instead of the whole run
# waiting on azure-core's 300 s defaults.
TIMEOUTS = dict(connection_timeout=10, read_timeout=60)

class StaticTokenCredential:
    """A TokenCredential (and SupportsTokenInfo) that hands out a fixed bearer token."""

    def __init__(self, token: str, ttl: int = 3600):
        self._token = token
        self._ttl = ttl
        self.calls: list[tuple] = []

    def get_token(self, *scopes, claims=None, tenant_id=None, enable_cae=False, **kwargs):
        self.calls.append(scopes)
        return AccessToken(self._token, int(time.time()) + self._ttl)

    def get_token_info(self, *scopes, options=None):
        self.calls.append(scopes)
        return AccessTokenInfo(self._token, int(time.time()) + self._ttl)


@pytest.fixture(scope="session")
def credential(server):
    return StaticTokenCredential(server.token)


@pytest.fixture(scope="session")
def client_opts(server):
    """Options for clients of the default vault on https://localhost:PORT.

    The challenge resource is https://vault.local:PORT, and localhost is not a subdomain of it,
    so these clients must turn off verify_challenge_resource.
    """
    return dict(connection_verify=server.ca, verify_challenge_resource=False, **TIMEOUTS)


@pytest.fixture(scope="session")
def kc(server, credential, client_opts):
    """KeyClient for the default vault."""
    return KeyClient(server.url, credential, **client_opts)


def _create_vault(server: Server, name: str, *flags: str) -> None:
    server.cli("vault", "create", name, *flags, "--ca", server.ca)


@pytest.fixture(scope="session")
def kv1(server, credential):
    """KeyClient for vault kv1 (created through the CLI, 7-day retention) on
    https://kv1.vault.local:PORT, with the SDK's default challenge-resource verification."""
    _create_vault(server, "kv1", "--retention-days", "7")
    return KeyClient(
        server.vault_url("kv1"), credential, connection_verify=server.ca, **TIMEOUTS
    )


@pytest.fixture(scope="session")
def ppv(server, credential):
    """KeyClient for vault ppv, created with purge protection."""
    _create_vault(server, "ppv", "--retention-days", "7", "--purge-protection")
    return KeyClient(
        server.vault_url("ppv"), credential, connection_verify=server.ca, **TIMEOUTS
    )


@pytest.fixture
def name(request):
    """A fresh key name per test (names are vault-global and tests share the server)."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def unique():
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------
# Identities (service principals) and role assignments, for test_identity_sdk.py.
#
# `cmkvault identity create NAME` prints `key: value` lines (tenant-id, client-id, object-id,
# display-name, client-secret); `cmkvault role assign ...` prints `assignment-id: ...`. The CLI
# talks to https://localhost:PORT as the administrator (Server.cli sets CMKVAULT_URL,
# CMKVAULT_TOKEN, CMKVAULT_CA and CMKVAULT_DATA).
# ---------------------------------------------------------------------------------------------
VAULT_SCOPE = "https://vault.azure.net/.default"
CRYPTO_SERVICE_ENCRYPTION_USER = "Key Vault Crypto Service Encryption User"


def parse_fields(text: str) -> dict[str, str]:
    """`key: value` lines of CLI output as a dict (keys lower-cased)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep and k.strip() and " " not in k.strip():
            out[k.strip().lower()] = v.strip()
    return out


@dataclass
class Identity:
    name: str
    tenant_id: str
    client_id: str
    object_id: str
    client_secret: str


def create_identity(server: Server, name: str) -> Identity:
    """`cmkvault identity create NAME --secret-out FILE`; the secret is taken from FILE (or from
    a `client-secret:` line when the file stays empty)."""
    secret_file = server.data.parent / f"{name}-{uuid.uuid4().hex[:8]}.secret"
    res = server.cli("identity", "create", name, "--secret-out", str(secret_file))
    f = parse_fields(res.stdout)
    try:
        from_file = secret_file.read_text().strip()
    except OSError:
        from_file = ""
    if from_file:
        # the CLI then prints `client-secret: written to FILE` instead of the secret
        assert from_file not in res.stdout, "the secret was printed although --secret-out was given"
        f["client-secret"] = from_file
    missing = [
        k
        for k in ("tenant-id", "client-id", "object-id", "display-name", "client-secret")
        if not f.get(k)
    ]
    if missing:
        raise AssertionError(
            f"cmkvault identity create {name}: missing {missing} in output:\n{res.stdout}"
        )
    assert f["display-name"] == name, res.stdout
    return Identity(name, f["tenant-id"], f["client-id"], f["object-id"], f["client-secret"])


def assign_role(
    server: Server, vault: str, principal: str, role: str, key: str | None = None
) -> str:
    """Assigns a role (vault scope, or key scope with ``key``); returns the assignment id."""
    args = ["role", "assign", "--vault", vault, "--principal", principal, "--role", role]
    if key is not None:
        args += ["--key", key]
    res = server.cli(*args)
    aid = parse_fields(res.stdout).get("assignment-id")
    if not aid:
        raise AssertionError(f"cmkvault {' '.join(args)}: no assignment-id in:\n{res.stdout}")
    return aid


def remove_role(server: Server, vault: str, assignment_id: str) -> None:
    server.cli("role", "remove", "--vault", vault, assignment_id)


def secret_credential(server: Server, ident: Identity, secret: str | None = None):
    """azure.identity.ClientSecretCredential against the server's Entra-shaped token endpoint."""
    from azure.identity import ClientSecretCredential

    return ClientSecretCredential(
        ident.tenant_id,
        ident.client_id,
        ident.client_secret if secret is None else secret,
        authority=f"https://localhost:{server.port}",
        disable_instance_discovery=True,
        connection_verify=server.ca,
        **TIMEOUTS,
    )
