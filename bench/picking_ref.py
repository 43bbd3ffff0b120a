"""Reference picker for bench/picking.sh: scikit-image peak_local_max per class, then a greedy
spherical NMS across classes in Python, on the map written by the Rust example. Prints timings
and whether the picks equal the Rust picks exactly."""
import json, sys, time
import numpy as np
from skimage.feature import peak_local_max

out = sys.argv[1]
P = json.load(open(out + "/params.json"))
Z, Y, X = P["shape"]
radii = P["radii"]
K = len(radii)
vs = P["voxel"]
data = np.fromfile(out + "/probs.f32", dtype="<f4").reshape(K, Z, Y, X)
thr = np.nextafter(np.float32(P["threshold"]), np.float32(-1))  # skimage keeps image > thr

t0 = time.perf_counter()
cands = []
for k in range(K):
    half = int(np.floor(P["radius_fraction"] * radii[k] / vs))
    pk = peak_local_max(data[k], min_distance=half, threshold_abs=float(thr), exclude_border=False)
    for z, y, x in pk:
        cands.append((-float(data[k, z, y, x]), int(z), int(y), int(x), k))
t1 = time.perf_counter()
cands.sort()
f = P["nms_fraction"]
reach = 2 * f * max(radii)
grid = {}
kept = []
for s, z, y, x, k in cands:
    p = (z * vs, y * vs, x * vs)
    g = tuple(int(np.floor(c / reach)) for c in p)
    ok = True
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for (q, kk) in grid.get((g[0] + dz, g[1] + dy, g[2] + dx), ()):
                    lim = f * (radii[k] + radii[kk])
                    if (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 + (p[2] - q[2]) ** 2 < lim * lim:
                        ok = False
                        break
                if not ok: break
            if not ok: break
        if not ok: break
    if ok:
        grid.setdefault(g, []).append((p, k))
        kept.append((k, z, y, x))
t2 = time.perf_counter()
rust = [tuple(r[:4]) for r in json.load(open(out + "/rust_picks.json"))]
print(json.dumps({"python_seconds": t2 - t0, "peak_local_max_seconds": t1 - t0, "nms_seconds": t2 - t1,
                  "candidates": len(cands), "picks": len(kept), "identical": rust == kept,
                  "only_rust": len(set(rust) - set(kept)), "only_python": len(set(kept) - set(rust))}))
