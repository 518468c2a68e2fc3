"""The demo province ``onecard up --demo`` (``make run``) seeds: citizens with virtual cards, an
administrator, a hospital system and terminals, their credentials under ``var/demo/``.

Everything after the first administrator goes through the public API, through the gateway,
exactly as a registration desk and a hospital would do it: the demo exercises the real flows.
The first administrator is registered straight in the database (no token can exist yet), as
``onecard identity add-client`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx

from identity.clients.bootstrap import add_client
from identity.clients.models import ClientKind
from identity.national_id import make_national_id
from identity.scopes import APPLICATIONS
from identity.settings import IdentitySettings
from identity.simulators.card import VirtualCard
from identity.simulators.terminal import register
from services.kit.credentials import ClientCredentials
from services.kit.database import Database

# Demo only, written in var/demo/README.txt: every demo card has these.
DEMO_PIN = "123456"
DEMO_PUK = "12345678"
ADMIN_SCOPES = ["client.manage", "citizen.manage", "card.manage", "terminal.manage"]
HOSPITAL = "Provincial People's Hospital"


@dataclass(frozen=True)
class DemoCitizen:
    slug: str
    name: str
    region: str
    birth: date
    sequence: int
    phone: str


CITIZENS = (
    DemoCitizen("zhang-wei", "张伟", "330106", date(1978, 3, 14), 31, "13800000001"),
    DemoCitizen("li-na", "李娜", "330102", date(1991, 11, 2), 42, "13800000002"),
    DemoCitizen("wang-fang", "王芳", "330205", date(1956, 6, 30), 8, "13800000003"),
)
TERMINALS = (
    ("registration-desk", HOSPITAL, "registration_desk"),
    ("hospital-counter", HOSPITAL, "hospital_counter"),
    ("pharmacy", "Yongkang Road Pharmacy", "pharmacy"),
    ("bus-12", "City Bus Line 12", "bus"),
)


async def seed(*, base_url: str, var_dir: Path) -> list[str]:
    """Seed once (a marker file remembers), then say what to try."""
    demo = var_dir / "demo"
    if not (demo / "seeded").exists():
        await _seed(base_url=base_url, demo=demo)
        (demo / "seeded").write_text("the demo province is seeded; delete var/ to start over\n")
    return [
        "Tap a demo card at the hospital's registration desk (PIN 123456) and see the token:",
        "  .venv/bin/onecard terminal tap --terminal var/demo/terminals/registration-desk.json "
        "--card var/demo/cards/zhang-wei.card --pin",
        "A hospital system's own token (SMART Backend Services):",
        "  .venv/bin/onecard hospital token --client var/demo/hospital.json",
        "More in var/demo/README.txt.",
    ]


async def _seed(*, base_url: str, demo: Path) -> None:
    settings = IdentitySettings()
    db = Database.for_settings(settings)
    try:
        admin = await add_client(
            db,
            name="Demo system administrator",
            kind=ClientKind.ADMIN,
            scopes=ADMIN_SCOPES,
            base_url=base_url,
        )
        # Separation of duties: the security administrator and the auditor are other people
        # with clients of their own (identity.scopes.ADMIN_ROLES).
        security = await add_client(
            db,
            name="Demo security administrator",
            kind=ClientKind.ADMIN,
            scopes=["policy.manage"],
            base_url=base_url,
        )
        auditor = await add_client(
            db,
            name="Demo auditor",
            kind=ClientKind.ADMIN,
            scopes=["audit.read"],
            base_url=base_url,
        )
        hospital = await add_client(
            db,
            name=HOSPITAL,
            kind=ClientKind.HOSPITAL,
            scopes=["system/*.cruds", "system/Claim.c"],
            base_url=base_url,
        )
    finally:
        await db.dispose()
    admin.save(demo / "admin.json")
    security.save(demo / "security-admin.json")
    auditor.save(demo / "auditor.json")
    hospital.save(demo / "hospital.json")

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        token = await admin.fetch_token(http)
        auth = {"Authorization": f"Bearer {token}"}
        people = [
            await citizen_with_card(http, auth, person, demo / "cards") for person in CITIZENS
        ]
        terminals = []
        for slug, facility, purpose in TERMINALS:
            registered = await register(
                http,
                admin_token=token,
                facility=facility,
                purpose=purpose,
                base_url=base_url,
                name=slug,
            )
            registered.credentials.save(demo / "terminals" / f"{slug}.json")
            terminals.append((slug, registered.credentials.client_id, facility, purpose))
    _write_readme(demo, people, terminals, admin, hospital)
    # For the other services' demo seeders (health links each citizen to a Patient record).
    (demo / "citizens.json").write_text(
        json.dumps(
            [
                {
                    "slug": c.slug,
                    "name": name,
                    "pseudonym": pseudonym,
                    "birth_date": c.birth.isoformat(),
                    # GB 11643: an odd sequence number is a man's.
                    "gender": "male" if c.sequence % 2 else "female",
                    "card": f"cards/{c.slug}.card",
                }
                for c, (name, pseudonym, _serial) in zip(CITIZENS, people, strict=True)
            ],
            ensure_ascii=False,
            indent=2,
        )
    )


async def citizen_with_card(
    http: httpx.AsyncClient, auth: dict[str, str], person: DemoCitizen, cards: Path
) -> tuple[str, str, str]:
    """Register ``person`` and give them an activated virtual card ``cards/<slug>.card``, the
    way a registration desk does; (name, pseudonym, card serial)."""
    number = make_national_id(region=person.region, birth=person.birth, sequence=person.sequence)
    response = await http.post(
        "/identity/citizens",
        json={"name": person.name, "national_id": number, "phone": person.phone},
        headers=auth,
    )
    if response.status_code == 409:  # seeded before, but the marker was lost: find them
        response = await http.post(
            "/identity/citizens/lookup", json={"national_id": number}, headers=auth
        )
    response.raise_for_status()
    pseudonym: str = response.json()["id"]

    card_path = cards / f"{person.slug}.card"
    card_path.parent.mkdir(parents=True, exist_ok=True)
    card_path.unlink(missing_ok=True)
    card = VirtualCard.create(card_path)  # the key pair is generated on the card
    issued = await http.post(
        "/identity/cards",
        json={"citizen": pseudonym, "applications": list(APPLICATIONS), "csr": card.csr(pseudonym)},
        headers=auth,
    )
    issued.raise_for_status()
    card.install_certificate(issued.json()["certificate"])
    card.activate(DEMO_PIN, DEMO_PUK)
    serial = issued.json()["serial"]
    (await http.post(f"/identity/cards/{serial}/activate", headers=auth)).raise_for_status()
    return person.name, pseudonym, serial


def _write_readme(
    demo: Path,
    people: list[tuple[str, str, str]],
    terminals: list[tuple[str, str, str, str]],
    admin: ClientCredentials,
    hospital: ClientCredentials,
) -> None:
    lines = [
        "onecard demo province (generated; demo credentials only, never for real use)",
        "",
        f"Every demo card: PIN {DEMO_PIN}, PUK {DEMO_PUK}.",
        "",
        "Citizens (pseudonymous id, card serial, card file):",
        *[
            f"  {name}  {pseudonym}  {serial}  cards/{slug}.card"
            for (name, pseudonym, serial), slug in zip(
                people, [c.slug for c in CITIZENS], strict=True
            )
        ],
        "",
        "Terminals (file, terminal id, facility, purpose):",
        *[
            f"  terminals/{slug}.json  {tid}  {facility}  {purpose}"
            for slug, tid, facility, purpose in terminals
        ],
        "",
        f"System administrator: admin.json ({admin.client_id}; client.manage citizen.manage "
        "card.manage terminal.manage)",
        "Security administrator: security-admin.json (policy.manage)",
        "Auditor: auditor.json (audit.read)",
        f"Hospital system: hospital.json ({hospital.client_id}; {HOSPITAL})",
        "",
        "Try:",
        "  .venv/bin/onecard terminal tap --terminal var/demo/terminals/registration-desk.json \\",
        "      --card var/demo/cards/zhang-wei.card --pin        # card + PIN: acr 2",
        "  .venv/bin/onecard terminal tap --terminal var/demo/terminals/bus-12.json \\",
        "      --card var/demo/cards/li-na.card                   # card alone: acr 1",
        "  .venv/bin/onecard hospital token --client var/demo/hospital.json",
        "  .venv/bin/onecard card status var/demo/cards/wang-fang.card",
    ]
    (demo / "README.txt").write_text("\n".join(lines) + "\n")
