"""The keys of one run: a CURVE keypair per block and for the launcher, and a run secret.

    python -m dni_dist keys generate runs/keys --blocks 4     # for clusters (compose, k8s)
    keys = RunKeys.load("runs/keys", me="block1")              # what a worker loads

Layout of a keys directory (made with pyzmq's own certificate files):
- `block<k>.key` / `block<k>.key_secret`, `launcher.key` / `launcher.key_secret`: ZeroMQ CURVE
  certificates (the `.key` file holds the public key only; `.key_secret` both, mode 0600).
- `run.secret`: 32 random bytes (hex, mode 0600) that authenticate every rendezvous value.
Every `.key` file in the directory is allowed to connect (zmq.auth's allowlist by directory),
so a keys directory is one run's trust domain: never mix two runs' keys in one directory.
`dni-launch` writes a fresh directory (`<out>/keys`) for every run with no user action.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq.auth

from dni_dist.config import ConfigError

LAUNCHER = "launcher"
RUN_SECRET = "run.secret"


def block_name(k: int) -> str:
    return f"block{k}"


def generate(directory: str | Path, blocks: int) -> Path:
    """A fresh keys directory for a run of `blocks` blocks (an existing one is replaced)."""
    d = Path(directory)
    if blocks < 1:
        raise ConfigError(f"--blocks: must be >= 1, got {blocks}")
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True, mode=0o700)
    for name in [*(block_name(k) for k in range(blocks)), LAUNCHER]:
        _, secret_file = zmq.auth.create_certificates(str(d), name)
        os.chmod(secret_file, 0o600)
    secret = d / RUN_SECRET
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return d


@dataclass(frozen=True)
class RunKeys:
    directory: Path
    public: bytes  # this process's CURVE keypair (z85)
    secret: bytes
    run_secret: bytes  # authenticates rendezvous values

    @classmethod
    def load(cls, directory: str | Path, *, me: str) -> RunKeys:
        d = Path(directory)
        hint = f"make one with `python -m dni_dist keys generate {d} --blocks N`, or pass --keys DIR"
        path = d / f"{me}.key_secret"
        if not path.is_file():
            raise ConfigError(f"--keys {d}: no {path.name} ({hint})")
        public, secret = zmq.auth.load_certificate(str(path))
        if secret is None:
            raise ConfigError(f"--keys {d}: {path.name} holds no secret key ({hint})")
        run = d / RUN_SECRET
        if not run.is_file():
            raise ConfigError(f"--keys {d}: no {RUN_SECRET} ({hint})")
        return cls(d, public, secret, bytes.fromhex(run.read_text().strip()))

    def public_of(self, name: str) -> bytes:
        """The public key of a peer of this run (block<k> or launcher)."""
        path = self.directory / f"{name}.key"
        if not path.is_file():
            raise ConfigError(f"--keys {self.directory}: no public key {path.name} for {name}")
        return zmq.auth.load_certificate(str(path))[0]


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    h = host.strip().strip("[]")
    return h in ("localhost", "::1") or h.startswith("127.")


def check_insecure(*addresses: str) -> None:
    """--insecure runs plaintext, which is allowed only when nothing listens beyond loopback."""
    outside = [a for a in addresses if a and not is_loopback(a)]
    if outside:
        raise ConfigError(
            f"--insecure: refused, {', '.join(outside)} is not a loopback address; plaintext is only allowed "
            "when every bind address is 127.x or ::1. Drop --insecure (keys are made for you) or bind to 127.0.0.1."
        )
