#!/usr/bin/env python3
"""Times azure-storage-blob client-side encryption v2 file -> file, in process, no network.

The comparison point for `cmkvault bench envelope`: the same sizes, the same kind of key (a local
AES-256 key-encryption key, A256KW via the `cryptography` package) and the same phases (plain
copy, encrypt, decrypt), each phase after `os.sync()` so it does not pay for the previous phase's
dirty pages. It calls the SDK's own v2 code (azure.storage.blob._encryption) the way its upload and
download paths do, with the SDK's default sizes, minus HTTP:

- encrypt: `encrypt_blob` for an object whose encrypted size is <= max_single_put_size (64 MiB),
  else `generate_blob_encryption_data` + `GCMBlobEncryptionStream` read in max_block_size (4 MiB)
  chunks (upload_blob's two paths). The encryptiondata JSON stays in memory (the SDK sends it as
  blob metadata), the body goes to a file.
- decrypt: the downloader's ranges (a first max_single_get_size = 32 MiB range, then
  max_chunk_get_size = 4 MiB ranges, each widened to whole regions by
  `get_adjusted_download_range_and_offset`), each read from the encrypted file and passed to
  `decrypt_blob` with a Content-Range header and one `_GCMRegionNonceValidator` per object, as
  StorageStreamDownloader.readinto does; the plaintext goes to a file.

One object is one sequential stream (the SDK's default max_concurrency=1); several files run
--workers threads (default: the cores). Like `cmkvault bench envelope`, an untimed warm-up round
runs first, then --rounds rounds (default 3) of copy, encrypt and decrypt in rotated order;
each line is the median round with the range. MB is 10^6 bytes.

With --cmkvault PATH it first runs `PATH bench envelope` with the same --size/--files/--dir and
prints cmkvault/python ratios, so one command compares both in one session:

    .venv/bin/python benches/python_cse.py --size 1GiB --cmkvault target/release/cmkvault
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

import azure.storage.blob
from azure.storage.blob._encryption import (
    _GCMRegionNonceValidator,
    _dict_to_encryption_data,
    adjust_blob_size_for_encryption,
    decrypt_blob,
    encrypt_blob,
    generate_blob_encryption_data,
    get_adjusted_download_range_and_offset,
    get_adjusted_upload_size,
    GCMBlobEncryptionStream,
)
from azure.storage.blob._shared.models import StorageConfiguration

V2 = "2.0"
IO_BUF = 1 << 20


class LocalKek:
    """A local A256KW key-encryption key (the SDK's KeyEncryptionKey protocol)."""

    def __init__(self, kid):
        self._key = os.urandom(32)
        self._kid = kid

    def wrap_key(self, key):
        return aes_key_wrap(self._key, key)

    def unwrap_key(self, key, algorithm):
        if algorithm != "A256KW":
            raise ValueError(f"unexpected key wrap algorithm {algorithm}")
        return aes_key_unwrap(self._key, key)

    def get_kid(self):
        return self._kid

    def get_key_wrap_algorithm(self):
        return "A256KW"


def parse_size(text):
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size: use a number with KiB, MiB or GiB")
    units = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}
    unit = m.group(2).lower()
    if unit not in units:
        raise argparse.ArgumentTypeError(f"unknown size unit '{m.group(2)}': use KiB, MiB or GiB")
    return int(m.group(1)) * units[unit]


def size_label(n):
    for unit, m in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= m and n % m == 0:
            return f"{n // m}{unit}"
    return f"{n}B"


def make_input(path, size):
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, IO_BUF)
            f.write(os.urandom(n))
            left -= n


def copy_file(src, dst):
    with open(src, "rb") as r, open(dst, "wb") as w:
        shutil.copyfileobj(r, w, IO_BUF)
    return os.path.getsize(src)


def encrypt_file(cfg, kek, src, dst):
    """upload_blob's encryption, body to `dst`; returns the encryptiondata JSON."""
    size = os.path.getsize(src)
    with open(src, "rb") as r, open(dst, "wb") as w:
        if get_adjusted_upload_size(size, V2) <= cfg.max_single_put_size:
            meta, body = encrypt_blob(r.read(), kek, V2)
            w.write(body)
            return meta
        cek, _iv, meta = generate_blob_encryption_data(kek, V2)
        stream = GCMBlobEncryptionStream(cek, r)
        while True:
            chunk = stream.read(cfg.max_block_size)
            if not chunk:
                break
            w.write(chunk)
        return meta


def decrypt_file(cfg, kek, meta, src, dst):
    """StorageStreamDownloader.readinto's decryption, ranges read from `src`; returns bytes."""
    total = os.path.getsize(src)
    data = _dict_to_encryption_data(json.loads(meta))
    plain = adjust_blob_size_for_encryption(total, data)
    validator = _GCMRegionNonceValidator()
    done = 0
    with open(src, "rb") as r, open(dst, "wb") as w:
        step = cfg.max_single_get_size
        while done < plain:
            end = min(done + step, plain) - 1
            (s, e), (so, eo) = get_adjusted_download_range_and_offset(done, end, None, data)
            e = min(e, total - 1)
            r.seek(s)
            content = r.read(e - s + 1)
            headers = {"x-ms-meta-encryptiondata": meta, "content-range": f"bytes {s}-{e}/{total}"}
            out = decrypt_blob(True, kek, None, content, so, eo, headers, data, validator)
            w.write(out)
            done += len(out)
            step = cfg.max_chunk_get_size
    return done


def phase(files, workers, work):
    os.sync()  # earlier phases' dirty pages are written back before the clock starts
    start = time.perf_counter()
    if workers == 1:
        results = [work(i) for i in range(files)]
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            results = list(ex.map(work, range(files)))
    return time.perf_counter() - start, results


def median(v):
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def report(label, nbytes, files, times):
    rates = [nbytes / 1e6 / t for t in times]
    rate = median(rates)
    secs = nbytes / 1e6 / rate
    spread = f"; {len(rates)} rounds {min(rates):.1f}–{max(rates):.1f} MB/s" if len(rates) > 1 else ""
    print(f"{label}: {rate:.1f} MB/s, {files / secs:.1f} files/s ({secs:.3f} s{spread})", flush=True)
    return rate


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(IO_BUF), b""):
            h.update(b)
    return h.hexdigest()


def run_cmkvault(exe, args):
    cmd = [exe, "bench", "envelope", "--size", size_label(args.size), "--files", str(args.files)]
    cmd += ["--rounds", str(args.rounds)]
    if args.dir:
        cmd += ["--dir", args.dir]
    print("$ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rates = {}
    for line in out.splitlines():
        print("  " + line)
        m = re.match(r"(copy|encrypt|decrypt): ([0-9.]+) MB/s", line)
        if m:
            rates[m.group(1)] = float(m.group(2))
    return rates


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=parse_size, default=parse_size("1GiB"), help="bytes per file (default 1GiB)")
    p.add_argument("--files", type=int, default=1, help="number of files (default 1)")
    p.add_argument("--workers", type=int, default=None, help="threads over the files (default: cores; 1 for one file)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after a warm-up (default 3)")
    p.add_argument("--dir", default=None, help="parent of the temporary directory (default: system temp)")
    p.add_argument("--cmkvault", default=None, metavar="PATH", help="also run PATH bench envelope and print ratios")
    args = p.parse_args()
    if args.size <= 0 or args.files <= 0 or args.rounds <= 0:
        p.error("--size, --files and --rounds must be positive")

    cmk = run_cmkvault(args.cmkvault, args) if args.cmkvault else None

    workers = args.workers or (1 if args.files == 1 else min(os.cpu_count() or 1, args.files))
    cfg = StorageConfiguration()
    kek = LocalKek("local:python-bench-kek")
    total = args.size * args.files
    with tempfile.TemporaryDirectory(prefix="cmkvault-pybench-", dir=args.dir) as tmp:
        print(
            f"python-sdk: azure-storage-blob {azure.storage.blob.__version__} v2 key=local A256KW "
            f"size={size_label(args.size)} files={args.files} bytes={total} workers={workers} dir={tmp}",
            flush=True,
        )
        dirs = {"in": os.path.join(tmp, "in")}
        os.mkdir(dirs["in"])
        name = lambda i: f"f{i:07d}"  # noqa: E731
        src = lambda i: os.path.join(dirs["in"], name(i))  # noqa: E731
        print(f"python-sdk: writing {args.files} input file(s) of {size_label(args.size)}", file=sys.stderr)
        for i in range(args.files):
            make_input(src(i), args.size)

        enc = lambda r, i: os.path.join(tmp, f"enc{r}", name(i))  # noqa: E731
        times = {"copy": [], "encrypt": [], "decrypt": []}
        metas, enc_round, checked = None, None, False
        for r in range(args.rounds + 1):  # round 0: untimed warm-up
            for k in range(3):
                kind = ("copy", "encrypt", "decrypt")[(k + r) % 3]
                if kind == "copy":
                    out = os.path.join(tmp, f"copy{r}")
                    os.mkdir(out)
                    secs, _ = phase(args.files, workers, lambda i: copy_file(src(i), os.path.join(out, name(i))))
                    shutil.rmtree(out)
                elif kind == "encrypt":
                    os.mkdir(os.path.join(tmp, f"enc{r}"))
                    secs, new_metas = phase(
                        args.files, workers, lambda i: encrypt_file(cfg, kek, src(i), enc(r, i))
                    )
                    if enc_round is not None:
                        shutil.rmtree(os.path.join(tmp, f"enc{enc_round}"))
                    metas, enc_round = new_metas, r
                else:
                    out = os.path.join(tmp, f"dec{r}")
                    os.mkdir(out)
                    er, m = enc_round, metas
                    secs, sizes = phase(
                        args.files,
                        workers,
                        lambda i: decrypt_file(cfg, kek, m[i], enc(er, i), os.path.join(out, name(i))),
                    )
                    if sum(sizes) != total or (not checked and sha256(src(0)) != sha256(os.path.join(out, name(0)))):
                        sys.exit("python-sdk: the decrypted output differs from the input")
                    checked = True
                    shutil.rmtree(out)
                which = "warm-up" if r == 0 else f"round {r}"
                print(f"python-sdk: {which} {kind}: {total / 1e6 / secs:.1f} MB/s ({secs:.3f} s)", file=sys.stderr)
                if r > 0:
                    times[kind].append(secs)
        copy_rate = report("python copy", total, args.files, times["copy"])
        enc_rate = report("python-sdk encrypt", total, args.files, times["encrypt"])
        dec_rate = report("python-sdk decrypt", total, args.files, times["decrypt"])
        print("python-sdk check: the first decrypted file matches its input (sha-256)")
        print(f"ratio python-sdk encrypt/copy: {100 * enc_rate / copy_rate:.1f}%")
        print(f"ratio python-sdk decrypt/copy: {100 * dec_rate / copy_rate:.1f}%")

    if cmk:
        for op, rate in (("encrypt", enc_rate), ("decrypt", dec_rate)):
            if op in cmk:
                print(f"ratio cmkvault/python-sdk {op}: {cmk[op] / rate:.1f}x ({cmk[op]:.1f} / {rate:.1f} MB/s)")


if __name__ == "__main__":
    main()
