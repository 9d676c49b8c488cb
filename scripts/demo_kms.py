#!/usr/bin/env python3
"""The demo's AWS KMS: moto's KMS endpoint on this machine, started by `make run` (demo only).

So that a newcomer can bring "their own" AWS KMS key in the tenant portal without an
AWS account: the tenant portal's AWS form shows this endpoint, its key ARN and
credentials to paste. KeyCore talks to it exactly as to AWS (boto3, over HTTP).

moto keeps its keys in memory. So that a configuration saved during one `make run`
still opens its data in the next, the one demo key is made the same way at every
start: its id from a seed and its key material from ``demo-kms.json`` in the var
folder (mode 0600), both drawn at random on the first start. Keys created in this
endpoint by other means are forgotten when it stops. Never for production: the key
material lies in a plain file.

    python scripts/demo_kms.py --port 8765 --state var/demo-kms.json

Prints one line, ``KEYCORE_DEMO_KMS <json>``, once it serves: the settings and
credentials of the demo key.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import sys
from pathlib import Path

REGION = "us-east-1"
ALIAS = "alias/keycore-demo"
# moto accepts any credentials; these only have to look like AWS ones to pass KeyCore's form
ACCESS_KEY_ID = "AKIAKEYCOREDEMO00001"
SECRET_ACCESS_KEY = "keycore-demo-secret-not-an-aws-secret"  # noqa: S105 - a local moto endpoint's, not AWS's


def load_state(path: Path) -> dict:
    """The demo key's seed and key material, drawn once and kept (0600) so the key is the same at every start."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"seed": secrets.randbits(62), "material": base64.b64encode(os.urandom(32)).decode()}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh)
    return json.loads(path.read_text())


def create_demo_key(state: dict) -> str:
    """Create the demo key in moto's in-memory KMS, with the kept id and material; returns its ARN."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.kms import models
    from moto.moto_api._internal import mock_random

    backend = models.kms_backends[DEFAULT_ACCOUNT_ID][REGION]
    mock_random.seed(state["seed"])  # moto draws key ids from this generator
    material = base64.b64decode(state["material"])
    original = models.generate_master_key
    models.generate_master_key = lambda: material
    try:
        key = backend.create_key(
            policy=None,
            key_usage="ENCRYPT_DECRYPT",
            key_spec="SYMMETRIC_DEFAULT",
            description="KeyCore demo key (make run)",
            tags=None,
        )
    finally:
        models.generate_master_key = original
    backend.create_alias(key.id, ALIAS)
    return key.arn


def demo_settings(host: str, port: int, arn: str) -> dict:
    """What a tenant types into KeyCore's AWS KMS form to use the demo key."""
    return {
        "endpoint_url": f"http://{host}:{port}",
        "key_id": arn,
        "region": REGION,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
    }


def serve(host: str, port: int, state_path: Path) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class QuietRequestHandler(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass  # one line per wrap and unwrap would bury KeyCore's own output

    arn = create_demo_key(load_state(state_path))
    server = make_server(
        host, port, DomainDispatcherApplication(create_backend_app), request_handler=QuietRequestHandler
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("KEYCORE_DEMO_KMS " + json.dumps(demo_settings(host, server.server_port, arn)), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--state", type=Path, required=True, help="where the demo key's seed and material are kept")
    args = parser.parse_args()
    try:
        import moto  # noqa: F401
    except ImportError:
        print("moto is not installed: pip install -e '.[demo]'", file=sys.stderr)
        return 2
    serve(args.host, args.port, args.state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
