"""Pins the synthetic data bit for bit: SHA-256 digests of generated frames and of a tiny prepared dataset.

Why: refactoring the generator must not change one bit of the prepared shards (and so of dvc.lock), and the data
must not depend on the machine. A digest that changes means the data changed: if that is intended, say so in the
commit and paste the new values printed by `python tests/test_synthetic_digest.py`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.preprocess import synthetic  # noqa: E402

SCATTERED = (0, 5, 11, 17, 23, 29)  # frames of several scenes, so many rooms are built
# name -> (domain, frame indices, height, width)
CASES = {
    **{f"{d}-32x48": (d, SCATTERED, 32, 48) for d in ("loft", "apartment", "studio", "office")},
    "loft-48x64": ("loft", tuple(range(6)), 48, 64),  # params.yaml's resolution
    "apartment-120x160": ("apartment", (0, 1), 120, 160),  # large enough for the optical blur to apply
}
PREPARED = "prepared-studio-32x48"  # a whole prepare() run: splits, depth range, manifest
DIGESTS = {
    "loft-32x48": "245a44c69c61942cc1207f33d7425672f8d6473579f259b1f31995632e03bc1a",
    "apartment-32x48": "21edd13fa774f8c160eb826330a82a796eab8d1865c3022425fc5890f24820f4",
    "studio-32x48": "42765d6c3d46a5c0a09f12b9c6a7d787023c4b16ab9687233553eb1f1f438720",
    "office-32x48": "0e17db80e07fd02c7c559a67b33ea214a57fa15810873ab0829b1001c7489972",
    "loft-48x64": "3695adb5c0180c176ec80a7abee11a614f5c655bbb469dedcbf625a0a8c76987",
    "apartment-120x160": "06da66eed85519251199b75c487f3a6b246ea8e4b1cde05b1c6fe3c580c4d5a0",
    PREPARED: "b278686e288d87596b8773d09a54a3c7fe116d8c9264f669eed91e63d39559c4",
}


def _update(h: hashlib._Hash, name: str, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    h.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
    h.update(array.tobytes())


def frames_digest(batch: dict[str, np.ndarray]) -> str:
    """Digest of everything a frame puts into a shard: rgb, depth, intrinsics and its scene id."""
    h = hashlib.sha256()
    for key in ("rgb", "depth", "intrinsics", "scene"):
        _update(h, key, batch[key])
    return h.hexdigest()


def prepared_digest() -> str:
    """Digest of a tiny prepared dataset's contents: every shard array and attribute, and the manifest.

    The params hash attribute is left out: it changes with the params schema, not with the data.
    """
    from tasks.params import load_params
    from tasks.preprocess.prepare import prepare

    params = load_params(ROOT / "params.yaml")
    data = params.data.model_copy(update={
        "domains": ["studio"], "height": 32, "width": 48, "train_size": 6, "val_size": 2, "test_size": 3,
        "min_depth": 0.5, "max_depth": 6.0, "chunk_frames": 1, "compression": "none", "render_batch": 4,
        "sources": {}})
    params = params.model_copy(update={"seed": 0, "data": data})
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        prepare(params, "studio", Path(tmp))
        out = Path(tmp) / "data" / "prepared" / "studio"
        for split in ("train", "val", "test"):
            with h5py.File(out / f"{split}.h5", "r") as f:
                attrs = {k: str(v) for k, v in f.attrs.items() if k != "params_hash"}
                h.update(json.dumps(attrs, sort_keys=True).encode())
                for key in sorted(f):
                    _update(h, f"{split}/{key}", f[key][()])
        h.update((out / "manifest.csv").read_bytes())
    return h.hexdigest()


def all_digests() -> dict[str, str]:
    out = {name: frames_digest(synthetic.render_batch(domain, np.array(indices), 0, height, width))
           for name, (domain, indices, height, width) in CASES.items()}
    out[PREPARED] = prepared_digest()
    return out


def test_digests_match_the_committed_values() -> None:
    assert all_digests() == DIGESTS


if __name__ == "__main__":
    print(json.dumps(all_digests(), indent=4))
