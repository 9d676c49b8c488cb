"""Profiles of what a benchmark measures, in this process, with pyinstrument: where the time goes.

    python -m bench.profiles crypto|events|detailed|api [--seconds 5] [--html out.html]

Each runs the benchmark's own measured code path in a loop for ``--seconds`` (after its own warm-up) under
pyinstrument's statistical profiler, which samples every thread — so the key-use recorder's cutter and
writer threads show up beside the crypto calls — and prints the call tree (frames under 2 % left out).

* ``crypto`` / ``events``: KeyCore's encrypt + decrypt of 1 KiB documents through the services, key-use
  recording on (``bench.crypto.keycore_encrypt_decrypt``);
* ``detailed``: the same for a tenant in detailed mode, every call with an object id and a request id, and
  what the recorder writes (``bench.crypto.keycore_detailed_workloads``);
* ``api``: ``POST /api/v1/crypto/encrypt`` through Django's WSGI handler in process (middleware, DRF,
  the view, the service), as gunicorn's worker runs it minus the socket;
* ``tenants_list``: the vendor portal's first tenants page (5,000 seeded tenants), signed in as a vendor
  administrator, through Django's test client as ``bench.tenants_list`` requests it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Callable


def _crypto_loop() -> Callable[[], None]:
    from bench.crypto import keycore_encrypt_decrypt

    workload = keycore_encrypt_decrypt()
    payload = os.urandom(1024)

    def step() -> None:
        for _ in range(200):
            workload.decrypt(workload.encrypt(payload))

    return step


def _detailed_loop() -> Callable[[], None]:
    from bench.crypto import keycore_detailed_workloads
    from keycore.services.keyuse import recorder

    _, detailed = keycore_detailed_workloads()
    detailed.setup()
    payload = os.urandom(1024)

    def step() -> None:
        for _ in range(200):
            detailed.decrypt(detailed.encrypt(payload))
        recorder.flush()  # what the writer thread does with them, as each benchmark round ends

    return step


def _api_loop() -> Callable[[], None]:
    from bench.django_env import setup_django

    setup_django()
    import uuid

    from django.test import Client

    from keycore.services.apikeys import api_key_create
    from keycore.services.audit import Actor
    from keycore.services.tenants import tenant_create

    actor = Actor.system("bench")
    tenant = tenant_create(external_id=f"profile-{uuid.uuid4().hex[:8]}", name="Profile", actor=actor)
    _, secret = api_key_create(name=f"profile-{uuid.uuid4().hex[:6]}", scopes=["crypto"], actor=actor)
    client = Client(SERVER_NAME="localhost", HTTP_AUTHORIZATION=f"Bearer {secret}")
    body = json.dumps(
        {
            "tenant": tenant.external_id,
            "fields": {"f": base64.b64encode(os.urandom(1024)).decode()},
            "requesting_id": "p",
        }
    )

    def step() -> None:
        for _ in range(50):
            response = client.post("/api/v1/crypto/encrypt", body, content_type="application/json")
            assert response.status_code == 200, response.content[:300]

    step()
    return step


def _tenants_list_loop() -> Callable[[], None]:
    from bench.django_env import setup_django

    setup_django()
    import io

    from django.core.management import call_command
    from django.test import Client

    from keycore.models import Tenant, User, VendorStaff
    from keycore.roles import VendorRole

    have = Tenant.objects.filter(external_id__startswith="bench-").count()
    if have < 5000:
        call_command("seed_tenants", 5000 - have, prefix="bench", random_seed=5, stdout=io.StringIO())
    user, _ = User.objects.get_or_create(email="bench-admin@vendor.example")
    VendorStaff.objects.update_or_create(user=user, defaults={"role": VendorRole.ADMIN, "is_active": True})
    client = Client(SERVER_NAME="localhost")
    client.force_login(user)

    def step() -> None:
        for _ in range(5):
            response = client.get("/vendor/tenants/")
            assert response.status_code == 200

    return step


LOOPS: dict[str, Callable[[], Callable[[], None]]] = {
    "crypto": _crypto_loop,
    "events": _crypto_loop,
    "detailed": _detailed_loop,
    "api": _api_loop,
    "tenants_list": _tenants_list_loop,
}


def profile(benchmark: str, *, seconds: float = 5.0, html: str | None = None) -> str:
    """The call tree of ``seconds`` of the benchmark's measured path (text; also HTML if asked)."""
    from pyinstrument import Profiler

    make = LOOPS.get(benchmark)
    if make is None:
        return (
            f"{benchmark}: no in-process profile (it measures other processes: profile those with "
            f"`py-spy record --pid …` or pyinstrument in the worker)"
        )
    step = make()
    step()  # warm
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        step()
    profiler.stop()
    if html:
        with open(html, "w") as out:
            out.write(profiler.output_html())
    return profiler.output_text(unicode=True, color=False, show_all=False, timeline=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=sorted(LOOPS))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--html", help="also write pyinstrument's HTML view here")
    args = parser.parse_args(argv)
    print(profile(args.benchmark, seconds=args.seconds, html=args.html))
    return 0


if __name__ == "__main__":
    sys.exit(main())
