"""The whole path on the HSM: init, a generated lab, lookup, rotation and shredding with SoftHSM2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pyotp
import pytest

from labvault.synth import LabGenerator

pytestmark = pytest.mark.hsm

LIST_LABELS = """
import sys, pkcs11
from pkcs11 import ObjectClass, Attribute
tok = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
with tok.open(user_pin=sys.argv[3]) as s:
    print(" ".join(o[Attribute.LABEL] for o in s.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})))
"""


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "labvault.cli", *args], env=env, capture_output=True, text=True)


def test_store_on_pkcs11(softhsm_token, tmp_path):
    env = {
        **os.environ,
        "LABVAULT_HOME": str(tmp_path / "home"),
        "LABVAULT_KEY_PROVIDER": "pkcs11",
        "LABVAULT_PKCS11_MODULE": softhsm_token.module,
        "LABVAULT_PKCS11_TOKEN": softhsm_token.label,
        "LABVAULT_PKCS11_PIN": softhsm_token.pin,
        "SOFTHSM2_CONF": str(softhsm_token.conf),
    }
    env.pop("LABVAULT_PASSPHRASE", None)
    env.pop("LABVAULT_DATABASE_URL", None)
    assert cli(env, "init").returncode == 0
    assert not (tmp_path / "home" / "keyring.json").exists()  # keys live on the token
    assert cli(env, "generate", "--labs", "2", "--patients", "15", "--seed", "3").returncode == 0
    labs = [json.loads(x)["id"] for x in cli(env, "tenant", "list", "--json").stdout.splitlines() if x.startswith("{")]
    p = LabGenerator(labs[0], 3).patient(2).identity

    def enrol(out: subprocess.CompletedProcess) -> str | None:
        lines = out.stdout.splitlines()
        token = lines[next(i for i, x in enumerate(lines) if x.startswith("one-time")) + 1]
        enrolled = cli(
            {**env, "LABVAULT_ENROL_PASSWORD": "hsm test passw0rd long"},
            "user",
            "enrol",
            "--token",
            token,
            "--accept-commitment",
        )
        assert enrolled.returncode == 0, enrolled.stderr
        uri = next((x for x in enrolled.stdout.splitlines() if x.startswith("otpauth://")), None)
        if uri is None:
            return None
        secret = pyotp.parse_uri(uri).secret
        assert (
            cli({**env, "LABVAULT_ENROL_TOTP": pyotp.TOTP(secret).now()}, "user", "enrol", "--token", token).returncode
            == 0
        )
        return secret

    for k, lab in enumerate(labs):
        # the platform invites the lab's first lab_admin, who adds the lab's biologist
        secret = enrol(
            cli(
                env,
                "user",
                "add",
                "--name",
                "Lab Admin",
                "--email",
                f"admin{k}@lab.invalid",
                "--role",
                "lab_admin",
                "--tenant",
                lab,
            )
        )
        as_admin = {
            **env,
            "LABVAULT_AS": f"admin{k}@lab.invalid",
            "LABVAULT_AS_PASSWORD": "hsm test passw0rd long",
            "LABVAULT_AS_TOTP": pyotp.TOTP(secret).at(time.time() + 30),
        }  # the enrolment used this step
        enrol(
            cli(
                as_admin,
                "user",
                "add",
                "--name",
                "Bio Logist",
                "--email",
                f"bio{k}@lab.invalid",
                "--role",
                "biologist",
                "--tenant",
                lab,
            )
        )
    env["LABVAULT_AS_PASSWORD"] = "hsm test passw0rd long"
    env["LABVAULT_AS"] = "bio0@lab.invalid"
    found = cli(env, "patient", "find", "--tenant", labs[0], "--nir", p.nir)
    assert found.returncode == 0 and p.family_name in found.stdout
    assert cli({**env, "LABVAULT_AS": ""}, "keys", "rotate", "--tenant", labs[0]).returncode == 0
    assert p.family_name in cli(env, "patient", "find", "--tenant", labs[0], "--nir", p.nir).stdout
    assert cli({**env, "LABVAULT_AS": ""}, "tenant", "shred", labs[0], "--yes").returncode == 0
    labels = subprocess.run(
        [sys.executable, "-c", LIST_LABELS, softhsm_token.module, softhsm_token.label, softhsm_token.pin],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert f"labvault-kek-{labs[0]}" not in labels
    assert f"labvault-kek-{labs[1]}" in labels and "labvault-kek-platform" in labels
    gone = cli(env, "patient", "find", "--tenant", labs[0], "--nir", p.nir)
    assert gone.returncode != 0 and "crypto-shredded" in gone.stderr and "Traceback" not in gone.stderr
    q = LabGenerator(labs[1], 3).patient(0).identity
    assert (
        cli(
            {**env, "LABVAULT_AS": "bio1@lab.invalid"}, "patient", "find", "--tenant", labs[1], "--nir", q.nir
        ).returncode
        == 0
    )
    wrong = cli({**env, "LABVAULT_PKCS11_PIN": "9999", "LABVAULT_AS": ""}, "tenant", "list")
    assert wrong.returncode != 0 and "PIN" in wrong.stderr and "Traceback" not in wrong.stderr
