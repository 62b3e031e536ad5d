"""``labvault instruction``: a lab's signed instruction, written and signed on the lab's side,
verified and received on the platform's. Nothing leaves Labvault without one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, console
from labvault.errors import ConfigError, InvalidInput
from labvault.instructions import document, signers

app = typer.Typer(help="Signed controller instructions: new, sign, verify, receive, show, list.", no_args_is_help=True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


def _signed(path: Path) -> dict:
    try:
        doc = json.loads(_read(path))
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(f"{path}: not a signed instruction (JSON from 'labvault instruction sign')") from None
    return doc


@app.command("new")
def new(
    kind: str = typer.Option(..., "--kind", help=", ".join(document.KINDS)),
    tenant: str = typer.Option(..., "--tenant", help="The lab the instruction is from."),
) -> None:
    """Print a commented YAML template to fill in (every null must be replaced)."""
    if kind not in document.KINDS:
        raise InvalidInput(f"--kind must be one of: {', '.join(document.KINDS)}")
    print(document.template(kind, tenant), end="")


@app.command("sign")
def sign(
    file: Path = typer.Argument(..., help="The filled-in instruction (YAML or JSON)."),
    key: Path = typer.Option(..., "--key", help="The signer's private key file ('labvault signer keygen')."),
    out: Path = typer.Option(None, "--out", help="Default: FILE with the suffix .signed.json."),
) -> None:
    """Sign an instruction with the signer's own key (on the signer's machine; no store needed)."""
    from labvault.crypto.signing import Signer

    instr = document.parse(_read(file))
    try:
        signer = Signer(bytes.fromhex(_read(key).decode().strip()))
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{key}: not a signer's private key (64 hexadecimal characters)") from None
    doc = document.sign(instr, signer)
    target = out or file.with_suffix(".signed.json")
    target.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", "utf-8")
    console.print(f"signed instruction {instr.id} ({instr.kind}) for {instr.tenant}: {target}")


def _check(u, tenant: str, path: Path) -> document.Verified:
    return document.check_signed(
        _signed(path), public_keys=signers.active_keys(u, tenant), tenant=tenant, now=datetime.now(UTC)
    )


@app.command("verify")
def verify(
    file: Path = typer.Argument(..., help="A signed instruction."),
    tenant: str = typer.Option(..., "--tenant", help="The lab it must come from."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Check signature, signer (registered, not revoked), lab, validity window and deadline."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        v = _check(u, tenant, file)
    i = v.instruction
    console.print(
        f"valid: instruction {i.id} ({i.kind}) of {i.tenant}, signed by {v.signer_id}, "
        f"valid until {i.valid_until.isoformat()}"
    )


@app.command("receive")
def receive(
    file: Path = typer.Argument(..., help="A signed instruction."),
    tenant: str = typer.Option(..., "--tenant", help="The lab the instruction is from."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Verify a signed instruction and keep it (the processor's record of documented instructions)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        r = signers.receive(u, tenant, _signed(file), datetime.now(UTC))
    console.print(f"received instruction {r.instruction_id} ({r.kind}) for {tenant}")


@app.command("list")
def list_(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The lab's received instructions: id, kind, signer, received, valid until."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        for r in signers.list_instructions(u, tenant):
            print(
                json.dumps(
                    {
                        "id": r.instruction_id,
                        "kind": r.kind,
                        "signer_id": r.signer_id,
                        "received_at": r.received_at.isoformat(),
                        "valid_until": r.valid_until.isoformat(),
                    }
                )
            )


@app.command("show")
def show(
    instruction_id: str = typer.Argument(..., help="The instruction's id."),
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """One received instruction, with its signature and signer (JSON)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        r = signers.get_instruction(u, tenant, instruction_id)
    print(
        json.dumps(
            {
                "instruction": r.body,
                "signature": r.signature,
                "signer_id": r.signer_id,
                "received_at": r.received_at.isoformat(),
            },
            indent=2,
            ensure_ascii=False,
        )
    )
