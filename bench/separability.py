"""How well can the particle classes be told apart, and how well does a model tell them apart?

Reads DIR/rep=*/{tomogram.mrc, signal.mrc, particles.csv[, probabilities.<class>.mrc]} as
written by bench/separability.yaml (and bench/separability-model.yaml) and prints:

1. The information in the voxels: each particle's spherically averaged profile (shells of one
   voxel, radius 0-15, around its true centre, tomogram standardised) classified by linear
   discriminant analysis, leave-one-out. Rotation-invariant and given the true centre: an
   upper-bound flavour of what a picker can do, without any training budget question.
2. With probability maps: at each true centre, the mean probability of every class over the 5^3
   voxels around it; the confusion of its argmax, and for every pair of classes the AUC of
   p_a / (p_a + p_b) between particles of class a and class b (0.5: the model cannot tell them
   apart; 1: always right).

python3 bench/separability.py DIR    (numpy)
"""
import csv
import glob
import os
import sys

import numpy as np

R = 15


def read_mrc(path):
    b = open(path, "rb").read()
    nx, ny, nz, mode = np.frombuffer(b[:16], dtype="<i4")
    assert mode == 2, f"{path}: mode {mode}, expected 2 (float32)"
    ext = int(np.frombuffer(b[92:96], dtype="<i4")[0])
    return np.frombuffer(b[1024 + ext :], dtype="<f4", count=nx * ny * nz).reshape(nz, ny, nx)


zz, yy, xx = np.mgrid[-R : R + 1, -R : R + 1, -R : R + 1]
SHELL = np.minimum(np.sqrt(zz**2 + yy**2 + xx**2).round().astype(int), R + 1).ravel()
COUNT = np.bincount(SHELL)


def particles(d):
    for row in csv.DictReader(open(os.path.join(d, "particles.csv"))):
        yield row["class"], [int(round(float(row[k]))) for k in ("z_px", "y_px", "x_px")]


def profiles(dirs, name):
    X, Y = [], []
    for d in dirs:
        v = read_mrc(os.path.join(d, name)).astype(np.float64)
        v = np.pad((v - v.mean()) / v.std(), R)
        for cls, (z, y, x) in particles(d):
            box = v[z : z + 2 * R + 1, y : y + 2 * R + 1, x : x + 2 * R + 1].ravel()
            X.append((np.bincount(SHELL, weights=box) / COUNT)[: R + 1])
            Y.append(cls)
    return np.array(X), np.array(Y)


def lda_loo(X, Y, classes):
    """Leave-one-out predictions of a linear discriminant (pooled covariance, small ridge)."""
    pred = []
    for i in range(len(Y)):
        m = np.ones(len(Y), bool)
        m[i] = False
        mus = {c: X[m & (Y == c)].mean(0) for c in classes}
        resid = np.concatenate([X[m & (Y == c)] - mus[c] for c in classes])
        S = resid.T @ resid / max(len(resid) - len(classes), 1) + 1e-3 * np.eye(X.shape[1])
        Si = np.linalg.inv(S)
        pred.append(min(classes, key=lambda c: (X[i] - mus[c]) @ Si @ (X[i] - mus[c])))
    return np.array(pred)


def table(Y, P, classes, title):
    print(f"\n{title}: accuracy {np.mean(Y == P):.3f} ({len(Y)} particles); rows true, columns called")
    w = max(len(c) for c in classes)
    print(" " * w + "  " + "  ".join(f"{c[:6]:>6}" for c in classes))
    for a in classes:
        print(f"{a:>{w}}  " + "  ".join(f"{np.sum((Y == a) & (P == b)):>6}" for b in classes))


def main(root):
    dirs = sorted(glob.glob(os.path.join(root, "rep=*")))
    if not dirs:
        sys.exit(f"no {root}/rep=*/: run bench/separability.sh first")
    for name, what in (("signal.mrc", "noiseless signal"), ("tomogram.mrc", "tomogram (SNR as exported)")):
        X, Y = profiles(dirs, name)
        classes = sorted(set(Y))
        table(Y, lda_loo(X, Y, classes), classes, f"radial profiles, LDA leave-one-out, {what}")
        for a in classes:
            for b in classes:
                if a < b:
                    m = (Y == a) | (Y == b)
                    acc = np.mean(lda_loo(X[m], Y[m], [a, b]) == Y[m])
                    print(f"  {a} vs {b}: {acc:.3f}")
    probs = sorted(glob.glob(os.path.join(dirs[0], "probabilities.*.mrc")))
    if not probs:
        return
    classes = [os.path.basename(p)[len("probabilities.") : -len(".mrc")] for p in probs]
    Y, Pm = [], []
    for d in dirs:
        maps = [read_mrc(os.path.join(d, f"probabilities.{c}.mrc")) for c in classes]
        for cls, (z, y, x) in particles(d):
            sl = (slice(max(z - 2, 0), z + 3), slice(max(y - 2, 0), y + 3), slice(max(x - 2, 0), x + 3))
            Y.append(cls)
            Pm.append([m[sl].mean() for m in maps])
    Y, Pm = np.array(Y), np.array(Pm)
    table(Y, np.array(classes)[Pm.argmax(1)], classes, "model: argmax of the mean probability at the true centres")
    print("\nmodel: AUC of p_a / (p_a + p_b) between the particles of a and of b")
    for i, a in enumerate(classes):
        for j, b in enumerate(classes):
            if i < j:
                r = Pm[:, i] / (Pm[:, i] + Pm[:, j] + 1e-12)
                ra, rb = r[Y == a], r[Y == b]
                auc = np.mean((ra[:, None] > rb[None, :]) + 0.5 * (ra[:, None] == rb[None, :]))
                print(f"  {a} vs {b}: {auc:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/out/separability")
