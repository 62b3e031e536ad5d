"""``labvault signer``: who may sign a lab's instructions (keys made and kept by the signer)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, console
from labvault.errors import ConfigError
from labvault.instructions import signers

app = typer.Typer(help="Instruction signers of a lab: keygen, add, revoke, list.", no_args_is_help=True)


@app.command("keygen")
def keygen(
    out: Path = typer.Option(..., "--out", help="Where to write the private key (mode 0600); never shared."),
) -> None:
    """Make a signer's Ed25519 key pair on the signer's own machine; prints the public key to register."""
    from labvault.crypto.signing import Signer

    if out.exists():
        raise ConfigError(f"{out} exists: refusing to overwrite a private key")
    private, public = Signer.generate()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the key file ({exc.strerror})") from None
    with os.fdopen(fd, "w") as f:
        f.write(private.hex() + "\n")
    console.print(f"private key written to {out} (keep it; the platform never sees it)")
    print(public.hex())


@app.command("add")
def add(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    email: str = typer.Option(..., "--email", help="The signer's own account in the lab."),
    public_key: str = typer.Option(..., "--public-key", help="From 'labvault signer keygen' (64 hex characters)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Register a signer (the lab's lab_admin)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        s = signers.add_signer(u, tenant, email=email, public_key=public_key)
    console.print(f"signer {s.signer_id} ({s.email}) may now sign instructions for {tenant}")


@app.command("revoke")
def revoke(
    signer_id: str = typer.Argument(..., help="The signer's id ('labvault signer list')."),
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Revoke a signer: instructions signed with its key are refused from now on."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        signers.revoke_signer(u, tenant, signer_id)
    console.print(f"signer {signer_id} revoked")


@app.command("list")
def list_(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The lab's instruction signers: id, e-mail, name, public key, when added or revoked."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        for s in signers.list_signers(u, tenant):
            print(
                json.dumps(
                    {
                        "signer_id": s.signer_id,
                        "email": s.email,
                        "name": s.name,
                        "public_key": s.public_key,
                        "added_at": s.added_at.isoformat(),
                        "revoked_at": s.revoked_at.isoformat() if s.revoked_at else None,
                    },
                    ensure_ascii=False,
                )
            )
