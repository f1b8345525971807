"""The `p2pvalue-node` command: keygen, serve, check-config, add-account, show-key."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from .config import ConfigError, load_config

EXIT_USAGE = 2


def _fail(message: str) -> int:
    print(f"p2pvalue-node: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_keygen(args: argparse.Namespace) -> int:
    from .keys import KeyError_, generate, load_key, write_key

    path = Path(args.out)
    if path.exists():
        if not args.force:
            try:
                key = load_key(path)
            except KeyError_ as exc:
                return _fail(f"{exc} (keygen --force replaces it; the peers must then learn the new key)")
            print(key.public_b64)
            return 0
        path.unlink()
    key = generate()
    write_key(key, path)
    print(key.public_b64)
    return 0


def cmd_pubkey(args: argparse.Namespace) -> int:
    from .keys import KeyError_, load_key

    try:
        print(load_key(Path(args.key)).public_b64)
    except KeyError_ as exc:
        return _fail(str(exc))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        return _fail(str(exc))
    for warning in cfg.loose_permissions():
        print(f"p2pvalue-node: warning: {warning}", file=sys.stderr)
    if args.json:
        print(cfg.dump_json())
    else:
        print(f"{args.file}: ok ({cfg.domain}, {len(cfg.trusted_peers)} trusted peers)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .errors import StartupError
    from .keys import KeyError_
    from .server import serve_forever

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(args.config)
        cfg.read_admin_token()
    except ConfigError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{args.config}: admin_token_file: cannot read ({exc.strerror})")
    for warning in cfg.loose_permissions():
        logging.getLogger("p2pvalue").warning("%s", warning)
    try:
        asyncio.run(serve_forever(cfg))
    except (KeyError_, StartupError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot listen: {exc.strerror or exc}")
    return 0


def cmd_add_account(args: argparse.Namespace) -> int:
    """Create an account directly in the node's database (the node may be running: WAL allows it)."""
    from .keys import generate
    from .node import Invalid, Node

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc))

    async def run() -> str:
        node = Node(cfg, generate())  # the signing key is not needed to write an account
        try:
            return await node.create_account(args.username)
        finally:
            node.close()

    import sqlite3

    try:
        token = asyncio.run(run())
    except Invalid as exc:
        return _fail(str(exc))
    except (OSError, sqlite3.Error) as exc:
        return _fail(f"data_dir {cfg.data_dir}: cannot use it ({exc})")
    print(json.dumps({"user": f"{args.username}@{cfg.domain}", "token": token}))
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    """Take an object out of service (or back in with --release), or list quarantined objects.

    Works on the data dir directly (WAL lets a running node keep serving); a running node honours a
    new quarantine when it next loads the object, so restart it to be sure, and after --release."""
    import sqlite3

    from .storage import SCHEMA, now_ms

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    path = cfg.data_dir / "node.sqlite3"
    if not path.is_file():
        return _fail(f"{path}: no node database here (data_dir of {args.config})")
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.executescript(SCHEMA)
        if args.list:
            rows = conn.execute("SELECT object_id, reason, since_ms FROM quarantine ORDER BY since_ms").fetchall()
            print(json.dumps([{"object_id": o, "reason": r, "since_ms": t} for o, r, t in rows]))
            return 0
        if not args.object_id:
            return _fail("name an OBJECT_ID (or use --list)")
        if args.release:
            conn.execute("DELETE FROM quarantine WHERE object_id = ?", (args.object_id,))
            print(json.dumps({"object_id": args.object_id, "quarantined": False}))
            return 0
        if not conn.execute("SELECT 1 FROM objects WHERE id = ?", (args.object_id,)).fetchone():
            return _fail(f"no object {args.object_id} in {path}")
        conn.execute(
            "INSERT OR REPLACE INTO quarantine (object_id, reason, since_ms) VALUES (?, ?, ?)",
            (args.object_id, args.reason, now_ms()),
        )
        print(json.dumps({"object_id": args.object_id, "quarantined": True, "reason": args.reason}))
        return 0
    except sqlite3.Error as exc:
        return _fail(f"{path}: {exc}")
    finally:
        if "conn" in locals():
            conn.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="p2pvalue-node", description="P2Pvalue federated collaboration node")
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="create the node's ed25519 signing key; print the public key (base64)")
    k.add_argument("--out", "-o", required=True, help="key file to write (mode 0600)")
    k.add_argument("--force", action="store_true", help="replace an existing key")
    k.set_defaults(func=cmd_keygen)
    pk = sub.add_parser("pubkey", help="print the public key of a key file")
    pk.add_argument("key")
    pk.set_defaults(func=cmd_pubkey)
    c = sub.add_parser("check-config", help="validate a config file (exit 2 and name the field if bad)")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="print the validated config with defaults as JSON")
    c.set_defaults(func=cmd_check)
    s = sub.add_parser("serve", help="run the node")
    s.add_argument("--config", "-c", required=True)
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=cmd_serve)
    a = sub.add_parser("add-account", help="create a local account and print its token as JSON")
    a.add_argument("--config", "-c", required=True)
    a.add_argument("username")
    a.set_defaults(func=cmd_add_account)
    q = sub.add_parser("quarantine", help="stop serving an object that fails to load (--release, --list)")
    q.add_argument("--config", "-c", required=True)
    q.add_argument("object_id", nargs="?")
    q.add_argument("--reason", default="quarantined by the operator")
    q.add_argument("--release", action="store_true", help="serve the object again")
    q.add_argument("--list", action="store_true", help="print the quarantined objects as JSON")
    q.set_defaults(func=cmd_quarantine)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
