#!/usr/bin/env python3
"""Writes the reference values that tests/metrics.rs checks ganforge's metrics against.

The fixture is committed, so CI needs neither numpy nor scipy. To regenerate it:

    pip install numpy scipy safetensors      # (torch is not needed)
    python3 scripts/make_metric_fixtures.py  # from the repository root

Writes tests/fixtures/metrics_reference.safetensors (about 150 KB). Feature sets are stored as
float32 tensors (both sides convert them to float64 before computing); index tensors as float32
holding exact integers; reference values as strings in the safetensors metadata (`repr` of a
float64, so they parse back exactly). Everything is computed in float64 with a fixed seed.

Fréchet distance (the pytorch-fid formula, scipy.linalg.sqrtm of the product S1 S2):
    fd.{case}.x, fd.{case}.y               [n, d] feature sets
    meta fd.{case}.sqrtm                   |mu1-mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)), S unbiased (np.cov)
    meta fd.{case}.eigh                    the same with tr(sqrt(S1^1/2 S2 S1^1/2)) from numpy.linalg.eigh
    cases: full (d 16, n 300/250, different means and covariances), wide (d 48, n 110/100),
           lowrank (d 32, n 20/24: singular covariances), same (x against itself: 0)
KID (Binkowski et al., polynomial kernel (x.y/d + 1)^3, unbiased MMD^2 with the -2/m^2 cross term):
    kid.x [200, 16], kid.y [180, 16], kid.sx [5, 100], kid.sy [5, 100] subset indices
    meta kid.values (JSON list per subset), kid.mean, kid.std (population), kid.stderr (std_{n-1}/sqrt(5))
Precision/recall/density/coverage (Kynkaanniemi et al. 2019; Naeem et al. 2020), k = 3:
    prdc.real [200, 8], prdc.fake [180, 8];  meta prdc.precision, prdc.recall, prdc.density, prdc.coverage
Laplacian pyramid (ProGAN metrics/sliced_wasserstein.py, scipy.ndimage.convolve mode="mirror"):
    swd.images [1, 3, 32, 32];  swd.level{0,1,2} the three pyramid levels (32, 16, 8)
"""

import json
import os

import numpy as np
import scipy.linalg
import scipy.ndimage
from safetensors.numpy import save_file

rng = np.random.default_rng(20240611)
tensors = {}
meta = {}


def put(name, arr):
    tensors[name] = np.ascontiguousarray(arr, dtype=np.float32)


def f64(name):
    return tensors[name].astype(np.float64)


# ---- Fréchet distance -----------------------------------------------------------------------


def fd_sqrtm(x, y):
    """pytorch-fid's calculate_frechet_distance (without its eps retry)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1.dot(s2))
    if isinstance(covmean, tuple):  # older scipy with disp=False
        covmean = covmean[0]
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def psd_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fd_eigh(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    r = psd_sqrt(s1)
    m = r @ s2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(w, 0, None)).sum())


def correlated(n, d, scale, shift):
    a = rng.normal(size=(d, d)) * scale / np.sqrt(d)
    return rng.normal(size=(n, d)) @ a + shift


cases = {
    "full": (correlated(300, 16, 1.0, 0.0), correlated(250, 16, 1.5, 0.3)),
    "wide": (correlated(110, 48, 2.0, 0.1), correlated(100, 48, 1.0, -0.2)),
    "lowrank": (correlated(20, 32, 1.0, 0.0), correlated(24, 32, 1.2, 0.5)),
}
x_same = correlated(100, 8, 1.0, 0.0)
cases["same"] = (x_same, x_same)
for name, (x, y) in cases.items():
    put(f"fd.{name}.x", x)
    put(f"fd.{name}.y", y)
    xs, ys = f64(f"fd.{name}.x"), f64(f"fd.{name}.y")
    meta[f"fd.{name}.sqrtm"] = repr(fd_sqrtm(xs, ys))
    meta[f"fd.{name}.eigh"] = repr(fd_eigh(xs, ys))
    print(f"fd {name}: sqrtm {meta[f'fd.{name}.sqrtm']}, eigh {meta[f'fd.{name}.eigh']}")

# ---- KID ------------------------------------------------------------------------------------


def poly_mmd2(x, y):
    d = x.shape[1]
    m = x.shape[0]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    sxx = kxx.sum() - np.trace(kxx)
    syy = kyy.sum() - np.trace(kyy)
    return float((sxx + syy) / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


put("kid.x", correlated(200, 16, 1.0, 0.0))
put("kid.y", correlated(180, 16, 1.1, 0.2))
sx = np.stack([rng.choice(200, 100, replace=False) for _ in range(5)])
sy = np.stack([rng.choice(180, 100, replace=False) for _ in range(5)])
put("kid.sx", sx)
put("kid.sy", sy)
kx, ky = f64("kid.x"), f64("kid.y")
vals = [poly_mmd2(kx[a], ky[b]) for a, b in zip(sx, sy)]
meta["kid.values"] = json.dumps([repr(v) for v in vals])
meta["kid.mean"] = repr(float(np.mean(vals)))
meta["kid.std"] = repr(float(np.std(vals)))
meta["kid.stderr"] = repr(float(np.std(vals, ddof=1) / np.sqrt(len(vals))))
print("kid", meta["kid.mean"], meta["kid.std"], meta["kid.stderr"])

# ---- precision / recall / density / coverage ------------------------------------------------


def kth(dist, k):
    # The authors' code: the (k+1)-th smallest of each row, the point itself included.
    return np.partition(dist, k, axis=1)[:, k]


def pdist(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


put("prdc.real", rng.normal(size=(200, 8)))
put("prdc.fake", rng.normal(size=(180, 8)) * 1.3 + 0.4)
real, fake, k = f64("prdc.real"), f64("prdc.fake"), 3
r_real = kth(pdist(real, real), k)
r_fake = kth(pdist(fake, fake), k)
d_rf = pdist(real, fake)  # [real, fake]
meta["prdc.precision"] = repr(float((d_rf <= r_real[:, None]).any(axis=0).mean()))
meta["prdc.recall"] = repr(float((d_rf <= r_fake[None, :]).any(axis=1).mean()))
meta["prdc.density"] = repr(float((1.0 / k) * (d_rf <= r_real[:, None]).sum(axis=0).mean()))
meta["prdc.coverage"] = repr(float((d_rf.min(axis=1) <= r_real).mean()))
print("prdc", [meta[f"prdc.{m}"] for m in ("precision", "recall", "density", "coverage")])

# ---- Laplacian pyramid (ProGAN) ---------------------------------------------------------------

gaussian_filter = np.float64([
    [1, 4, 6, 4, 1],
    [4, 16, 24, 16, 4],
    [6, 24, 36, 24, 6],
    [4, 16, 24, 16, 4],
    [1, 4, 6, 4, 1]]) / 256.0


def pyr_down(minibatch):  # matches cv2.pyrDown()
    assert minibatch.ndim == 4
    return scipy.ndimage.convolve(minibatch, gaussian_filter[np.newaxis, np.newaxis, :, :], mode="mirror")[:, :, ::2, ::2]


def pyr_up(minibatch):  # matches cv2.pyrUp()
    assert minibatch.ndim == 4
    s = minibatch.shape
    res = np.zeros((s[0], s[1], s[2] * 2, s[3] * 2), minibatch.dtype)
    res[:, :, ::2, ::2] = minibatch
    return scipy.ndimage.convolve(res, gaussian_filter[np.newaxis, np.newaxis, :, :] * 4.0, mode="mirror")


def generate_laplacian_pyramid(minibatch, num_levels):
    pyramid = [np.float64(minibatch)]
    for _ in range(1, num_levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] -= pyr_up(pyramid[-1])
    return pyramid


put("swd.images", rng.uniform(-1, 1, size=(1, 3, 32, 32)))
for i, level in enumerate(generate_laplacian_pyramid(f64("swd.images"), 3)):
    put(f"swd.level{i}", level)

out = os.path.join("tests", "fixtures", "metrics_reference.safetensors")
save_file(tensors, out, metadata=meta)
print(f"wrote {out} ({os.path.getsize(out)} bytes)")
