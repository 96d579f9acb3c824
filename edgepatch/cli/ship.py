"""Shipping commands: ``pack``, ``keygen``, ``sign-delta``, ``verify``, ``serve`` (registered on ``edgepatch.cli.main.main``).

Results go to stdout (JSON with ``--json``); errors are one line on stderr and
exit status 2, as everywhere in the CLI. None of these imports TensorFlow.
"""

from __future__ import annotations

import signal

import click

from edgepatch.cli.options import expected_errors, result_output


def _bundle_result(report) -> dict:
    manifest = report.manifest
    return {
        "bundle": report.path,
        "model_version": manifest.model_version,
        "key_id": report.key_id,
        "bases": {fmt: {"file": e.file, "bytes": e.bytes, "sha256": e.sha256} for fmt, e in manifest.bases.items()},
        "tasks": [{"name": t.name, "kinds": list(t.kinds), "file": (t.delta or t.int8_delta).file,
                   "bytes": (t.delta or t.int8_delta).bytes,
                   "int8_delta": t.int8_delta and {"file": t.int8_delta.file, "bytes": t.int8_delta.bytes}}
                  for t in manifest.tasks],
        "files": report.files,
        "bytes": report.bytes,
    }


def _render_bundle(result: dict, verb: str) -> str:
    signed = f"signed by key {result['key_id']}" if result["key_id"] else "unsigned"
    lines = [f"{verb} {result['bundle']}: model version {result['model_version']}, {signed}, "
             f"{result['files']} files, {result['bytes']:,} bytes"]
    lines += [f"  base.{fmt}: {b['bytes']:,} bytes, sha256 {b['sha256'][:16]}…" for fmt, b in result["bases"].items()]
    lines += [f"  task {t['name']}: {t['bytes']:,} bytes ({', '.join(t['kinds'])})"
              + (f", int8 {t['int8_delta']['bytes']:,} bytes" if t["int8_delta"] else "") for t in result["tasks"]]
    return "\n".join(lines)


@click.command()
@click.argument("ship_dir")
@click.option("--out", "out_dir", required=True, help="Bundle directory to write (replaced atomically).")
@click.option("--model-version", required=True,
              help="Integer or dotted-integer version, e.g. 2024.6.1; devices compare it numerically and refuse "
                   "a lower one.")
@click.option("--sign", "key_path", default=None, help="Ed25519 private key (from `edgepatch keygen`) to sign with.")
@result_output(lambda result: _render_bundle(result, "packed"))
def pack(ship_dir, out_dir, model_version, key_path):
    """Pack a `convert` output (base.tflite/base.onnx/base_int8.tflite + *.delta/*.int8.delta) into a signed bundle.

    Files are stored under their sha256 (cacheable forever), listed in
    manifest.json, and signed in manifest.sig with --sign. The bundle is
    world-readable: any static server can serve it.

    \b
    Example:
      edgepatch pack ship/ --out bundle/ --model-version 2024.6.1 --sign publisher.key
    """
    from edgepatch.ship.bundle import pack_bundle, ship_inputs

    bases, deltas = ship_inputs(ship_dir)
    report = pack_bundle(bases, deltas, out_dir, model_version, key_path)
    return _bundle_result(report)


@click.command()
@click.option("--out", "prefix", required=True, help="Writes PREFIX.key (private, mode 0600) and PREFIX.pub.")
@result_output(lambda r: f"key id {r['key_id']}\nwrote {r['private_key']} (secret)\nwrote {r['public_key']}")
def keygen(prefix):
    """Generate an Ed25519 signing key pair; prints its key id.

    Keep PREFIX.key secret; ship PREFIX.pub to devices. Missing directories
    are created (mode 0700); existing files are never overwritten.

    \b
    Example:
      edgepatch keygen --out keys/publisher-2024
    """
    from edgepatch.ship.signing import write_keypair

    private_path, public_path, key_id = write_keypair(prefix)
    return {"private_key": private_path, "public_key": public_path, "key_id": key_id}


def _render_signed(result: dict) -> str:
    return "\n".join(f"signed {s['delta']} -> {s['signature']} (key id {result['key_id']})" for s in result["signed"])


@click.command("sign-delta")
@click.argument("deltas", nargs=-1, required=True)
@click.option("--key", "key_path", required=True, help="Ed25519 private key (from `edgepatch keygen`) to sign with.")
@result_output(_render_signed)
def sign_delta(deltas, key_path):
    """Sign loose deltas: write DELTA.sig beside each (a detached Ed25519 signature over its exact bytes).

    Each delta is verified first (a file that is not a valid task delta is not
    signed). Devices then accept it only with the signature:
    `edgepatch run --pubkey`, `TaskSwitcher(trusted_keys=...)`.

    \b
    Example:
      edgepatch sign-delta ship/flowers.delta ship/cars.int8.delta --key publisher.key
    """
    from edgepatch.runtime.files import read_task_delta
    from edgepatch.ship.signing import load_private_key, write_detached_signature

    load_private_key(key_path)  # a bad key is one error before any file is written
    for path in deltas:
        read_task_delta(path)
    signed, key_id = [], None
    for path in deltas:
        signature, key_id = write_detached_signature(path, key_path)
        signed.append({"delta": path, "signature": signature})
    return {"key_id": key_id, "signed": signed}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@click.command()
@click.argument("bundle_dir")
@click.option("--pubkey", "pubkeys", multiple=True, help="Trusted public key (PEM); repeat for key rotation.")
@click.option("--allow-unsigned", is_flag=True, help="Check only hashes and fingerprints, not the signature.")
@result_output(lambda result: _render_bundle(result, "verified"))
def verify(bundle_dir, pubkeys, allow_unsigned):
    """Verify a bundle: signature, manifest, every file's sha256, every delta's base fingerprint.

    Exits 0 when everything holds; otherwise prints the first failure and exits 2.

    \b
    Example:
      edgepatch verify bundle/ --pubkey publisher-2024.pub --pubkey publisher-2025.pub
    """
    from edgepatch.ship.bundle import verify_bundle
    from edgepatch.errors import UsageError

    if bool(pubkeys) == allow_unsigned:
        raise UsageError("give --pubkey (one or more) to check the signature, or --allow-unsigned to check "
                         "integrity only; received " + ("both" if pubkeys else "neither"))
    report = verify_bundle(bundle_dir, list(pubkeys) or None)
    return _bundle_result(report)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@click.command()
@click.argument("bundle_dir")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback; use 0.0.0.0 only to serve a network on purpose).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--quiet", is_flag=True, help="Do not log requests to stderr.")
@expected_errors
def serve(bundle_dir, host, port, quiet):
    """Serve a bundle over HTTP (ETag, Range, no listing) until interrupted (Ctrl-C) or terminated (`kill PID`).

    Prints the bundle URL on stdout; logs requests to stderr.

    \b
    Example:
      edgepatch serve bundle/ --port 8000
    """
    from edgepatch.ship.serve import make_server

    server = make_server(bundle_dir, host, port, quiet)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops it cleanly, as Ctrl-C does
    bound_host, bound_port = server.server_address[:2]
    click.echo(f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
