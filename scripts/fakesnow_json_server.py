#!/usr/bin/env python3
"""Snowflake protocol test peer for JSON-only clients: fakesnow's server, re-encoded.

Why this exists: `snowflake-connector-rs` (the Rust connector Snowpatrol uses) only reads JSON result sets,
while fakesnow's server answers SELECTs in Arrow. It also fails fakesnow's login (fakesnow reads
`data.SESSION_PARAMETERS` from the login request, which the Rust connector omits when it has none) and fakesnow
omits `data.queryId` on errors, which the Rust connector requires. This wrapper imports `fakesnow.server`,
reuses its handlers unchanged, and fixes those three things at the edges:

* login: adds an empty `SESSION_PARAMETERS` to the request before fakesnow sees it; optionally checks
  credentials the way Snowflake does (fakesnow accepts anything), so auth failures can be tested:
  `--user NAME:PASSWORD` (password logins) and `--rsa-public-key NAME=PUBLIC_KEY.pem` (key-pair logins: the
  JWT's RS256 signature, `iss` fingerprint and expiry are verified like Snowflake does).
* query results: Arrow IPC (`rowsetBase64`) is re-encoded as Snowflake JSON (`rowset`): every value a string,
  numbers as decimal strings, timestamps as "<epoch seconds>.<9-digit fraction>", TIMESTAMP_TZ with
  " <offset minutes + 1440>" appended, dates as days since the epoch, times as seconds since midnight,
  booleans as "1"/"0", binary as hex.
* errors: a `data.queryId` is always present.

Usage: python scripts/fakesnow_json_server.py --port 0
With --port 0 a free port is chosen and "LISTENING <port>" is printed (and flushed) on stdout once the socket
is bound, so tests can start it as a child process and read the port. Test-only: never use it in production.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import decimal
import gzip
import hashlib
import importlib
import json
import logging
import socket
import sys
import time
import uuid
from typing import Any

import pyarrow as pa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# `fakesnow.server` is shadowed by a function of the same name in fakesnow/__init__.py: import the module.
fs_server = importlib.import_module("fakesnow.server")

logger = logging.getLogger("fakesnow_json_server")

# Snowflake's own codes and messages for the login failures we emulate.
INCORRECT_CREDENTIALS = ("390100", "Incorrect username or password was specified.")
JWT_INVALID = ("390144", "JWT token is invalid.")

PASSWORDS: dict[str, str] = {}
OAUTH_TOKENS: set[str] = set()
OAUTH_INVALID = ("390303", "Invalid OAuth access token.")
PUBLIC_KEYS: dict[str, Any] = {}


def _forward(request: Request, body: bytes) -> Request:
    """A copy of `request` whose body is `body` (uncompressed), for handing to fakesnow's handler."""
    headers = [
        (k, v) for k, v in request.scope["headers"] if k.lower() not in (b"content-encoding", b"content-length")
    ]
    headers.append((b"content-length", str(len(body)).encode()))
    scope = dict(request.scope, headers=headers)
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if request.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return json.loads(body)


def _login_error(code_message: tuple[str, str]) -> JSONResponse:
    code, message = code_message
    return JSONResponse({"data": {"errorCode": code}, "code": code, "message": message, "success": False})


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _check_jwt(login_name: str, token: str) -> bool:
    """Verifies a key-pair JWT as Snowflake does: RS256 signature, `iss` fingerprint, expiry."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = PUBLIC_KEYS.get(login_name.upper())
    if key is None:
        return False
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
        key.verify(
            _b64url_decode(signature_b64),
            f"{header_b64}.{payload_b64}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        payload = json.loads(_b64url_decode(payload_b64))
    except (ValueError, InvalidSignature):
        return False
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()
    return str(payload.get("iss", "")).endswith(fingerprint) and payload.get("exp", 0) > time.time()


async def login_request(request: Request) -> Response:
    body = await _json_body(request)
    data = body.setdefault("data", {})
    login_name = str(data.get("LOGIN_NAME", ""))
    authenticator = str(data.get("AUTHENTICATOR", "SNOWFLAKE")).upper()
    if authenticator == "SNOWFLAKE_JWT" and PUBLIC_KEYS:
        if not _check_jwt(login_name, str(data.get("TOKEN", ""))):
            return _login_error(JWT_INVALID)
    elif authenticator == "SNOWFLAKE" and PASSWORDS:
        if PASSWORDS.get(login_name.upper()) != data.get("PASSWORD"):
            return _login_error(INCORRECT_CREDENTIALS)
    elif authenticator == "OAUTH" and OAUTH_TOKENS:
        if str(data.get("TOKEN", "")) not in OAUTH_TOKENS:
            return _login_error(OAUTH_INVALID)
    if data.get("SESSION_PARAMETERS") is None:
        data["SESSION_PARAMETERS"] = {}
    return await fs_server.login_request(_forward(request, json.dumps(body).encode()))


def _epoch_fraction(epoch: int, fraction: int) -> str:
    """Snowflake's JSON timestamp: decimal seconds since the epoch with 9 fraction digits."""
    total = epoch * 1_000_000_000 + fraction
    sign = "-" if total < 0 else ""
    seconds, nanos = divmod(abs(total), 1_000_000_000)
    return f"{sign}{seconds}.{nanos:09d}"


def _encode_value(value: Any, sf_type: str) -> str | None:
    if value is None:
        return None
    if sf_type in ("timestamp_ntz", "timestamp_ltz", "timestamp_tz") and isinstance(value, dict):
        text = _epoch_fraction(value["epoch"], value["fraction"])
        if sf_type == "timestamp_tz":
            text += f" {value.get('timezone', 1440)}"
        return text
    if sf_type == "date":
        if isinstance(value, datetime.date):
            return str((value - datetime.date(1970, 1, 1)).days)
        return str(value)
    if sf_type == "time":
        # to_sf encodes TIME as nanoseconds since midnight
        seconds, nanos = divmod(int(value), 1_000_000_000)
        return f"{seconds}.{nanos:09d}"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def arrow_to_json_rowset(rowset_base64: str, rowtype: list[dict[str, Any]]) -> list[list[str | None]]:
    if not rowset_base64:
        return []
    table = pa.ipc.open_stream(pa.py_buffer(base64.b64decode(rowset_base64))).read_all()
    columns = [
        [_encode_value(v, str(rowtype[i]["type"]).lower()) for v in table.column(i).to_pylist()]
        for i in range(table.num_columns)
    ]
    return [list(row) for row in zip(*columns, strict=True)]


async def query_request(request: Request) -> Response:
    response = await fs_server.query_request(request)
    payload = json.loads(bytes(response.body))
    data = payload.get("data")
    if not payload.get("success"):
        data = dict(data or {})
        data.setdefault("queryId", str(uuid.uuid4()))
        payload["data"] = data
        if "sqlState" in data:
            payload.setdefault("sqlState", data["sqlState"])
    elif data and data.get("queryResultFormat") == "arrow":
        rowset = arrow_to_json_rowset(data.pop("rowsetBase64", ""), data.get("rowtype") or [])
        data["rowset"] = rowset
        data["returned"] = len(rowset)
        data["queryResultFormat"] = "json"
    return JSONResponse(payload, status_code=response.status_code)


def build_app() -> Starlette:
    overrides = {"/session/v1/login-request": login_request, "/queries/v1/query-request": query_request}
    routes = [
        Route(r.path, overrides[r.path], methods=list(r.methods or [])) if r.path in overrides else r
        for r in fs_server.routes
    ]
    return Starlette(routes=routes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port and prints LISTENING <port>")
    parser.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                        help="require this password for NAME (repeatable); without it any password is accepted")
    parser.add_argument("--oauth-token", action="append", default=[], metavar="TOKEN",
                        help="accept this OAuth access token (repeatable); without it any token is accepted")
    parser.add_argument("--rsa-public-key", action="append", default=[], metavar="NAME=PEM_PATH",
                        help="verify key-pair JWTs of NAME against this public key (repeatable)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()

    for item in args.user:
        name, _, password = item.partition(":")
        PASSWORDS[name.upper()] = password
    OAUTH_TOKENS.update(args.oauth_token)
    if args.rsa_public_key:
        from cryptography.hazmat.primitives import serialization

        for item in args.rsa_public_key:
            name, _, path = item.partition("=")
            with open(path, "rb") as f:
                PUBLIC_KEYS[name.upper()] = serialization.load_pem_public_key(f.read())

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)

    config = uvicorn.Config(build_app(), log_level=args.log_level, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
