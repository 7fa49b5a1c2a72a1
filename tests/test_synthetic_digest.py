"""Pins the synthetic data bit for bit: SHA-256 digests of generated frames and of a tiny prepared dataset.

Why: refactoring the generator must not change one bit of the prepared shards (and so of dvc.lock), and the data
must not depend on the machine (docs/determinism.md). The same digests must come out when numpy, OpenBLAS, glibc and
torch are made to pick other CPU kernels, as they do on other x86-64 CPUs: subprocesses with those kernels
disabled recompute them, so the check does not depend on the CI machine's own CPU. A digest that changes means the
data changed: if that is intended, say so in the commit and paste the new values printed by
`python tests/test_synthetic_digest.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.preprocess import synthetic  # noqa: E402

SCATTERED = (0, 5, 11, 17, 23, 29)  # frames of several scenes, so many rooms are built
# name -> (domain, frame indices, height, width)
CASES = {
    **{f"{d}-32x48": (d, SCATTERED, 32, 48) for d in ("loft", "apartment", "studio", "office")},
    # params.yaml's resolution. Loft 114 and 121, apartment 89 and studio 2, 10, 57, 72 and 106 are frames whose pixels
    # came out differently without AVX-512 before docs/determinism.md's fix, so a CPU-dependent kernel shows here.
    "loft-48x64": ("loft", (0, 1, 2, 3, 4, 5, 114, 121), 48, 64),
    "apartment-48x64": ("apartment", (0, 89), 48, 64),
    "studio-48x64": ("studio", (2, 10, 57, 72, 106), 48, 64),
    "apartment-120x160": ("apartment", (0, 1), 120, 160),  # large enough for the optical blur to apply
}
PREPARED = "prepared-studio-32x48"  # a whole prepare() run: splits, depth range, manifest
DIGESTS = {
    "loft-32x48": "245a44c69c61942cc1207f33d7425672f8d6473579f259b1f31995632e03bc1a",
    "apartment-32x48": "21edd13fa774f8c160eb826330a82a796eab8d1865c3022425fc5890f24820f4",
    "studio-32x48": "42765d6c3d46a5c0a09f12b9c6a7d787023c4b16ab9687233553eb1f1f438720",
    "office-32x48": "0e17db80e07fd02c7c559a67b33ea214a57fa15810873ab0829b1001c7489972",
    "loft-48x64": "1b0fb372e84efc62867fc9d5c4e86d52e0297e77eb73d8b0856ee4e2dcbb9c46",
    "apartment-48x64": "0a903abbb5e0f6f370806fbf2a3ff4cb7693458dec0d3a1710f65f87cb7b02d6",
    "studio-48x64": "cba9ffaf67044c7a822404b79b8e851aededadee5c43cf562fe6f97c501f9f6a",
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
        "seed": 0, "height": 32, "width": 48, "train_size": 6, "val_size": 2, "test_size": 3,
        "min_depth": 0.5, "max_depth": 6.0, "chunk_frames": 1, "compression": "none", "sources": {}})
    runtime = params.runtime.model_copy(update={"host": params.runtime.host.model_copy(update={"render_batch": 4})})
    params = params.model_copy(update={"domains": ["studio"], "data": data, "runtime": runtime})
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        prepare(params, Path(tmp), "studio")
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


def _restricted_kernels() -> dict[str, dict[str, str]]:
    """Environments that make this machine pick the kernels of other x86-64 CPUs (only ever fewer features)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__  # numpy's run-time dispatched SIMD targets

    avx512 = [f for f in __cpu_dispatch__ if f.startswith("AVX512") or f == "X86_V4"]
    return {
        # An AMD EPYC without AVX-512 (where dvc.lock once failed to reproduce).
        "no-avx512": {"NPY_DISABLE_CPU_FEATURES": " ".join(avx512), "OPENCV_CPU_DISABLE": "AVX512F,AVX512-SKX",
                      "ATEN_CPU_CAPABILITY": "avx2"},
        # The oldest CPU numpy runs on: no numpy SIMD dispatch, OpenBLAS's SSE3 kernels, glibc's libm without FMA,
        # OpenCV's SSE4 kernels.
        "baseline": {"NPY_DISABLE_CPU_FEATURES": " ".join(__cpu_dispatch__), "OPENBLAS_CORETYPE": "Prescott",
                     "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX2,-FMA,-AVX",
                     "OPENCV_CPU_DISABLE": "AVX512F,AVX512-SKX,AVX2,FMA3,AVX,FP16", "ATEN_CPU_CAPABILITY": "default"},
    }


def test_digests_match_the_committed_values() -> None:
    assert all_digests() == DIGESTS


@pytest.mark.parametrize("kernels", ["no-avx512", "baseline"])
def test_digests_do_not_depend_on_the_cpu_kernels(kernels: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **_restricted_kernels()[kernels]}
    out = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == DIGESTS


if __name__ == "__main__":
    print(json.dumps(all_digests(), indent=4))
