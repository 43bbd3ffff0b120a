"""The same U-Net as plugins/unet (widths 32-48-64, 7 classes, weighted CE + soft Dice, Adam) in
PyTorch CPU: median training step times (batch 4 x 48^3, 2 x 32^3) and inference of 128^3 in 27
tiles of 64^3 with Gaussian blending, printed as JSON lines like unet_bench.
    python bench/unet_torch.py [STEPS] [DEVICE]     # DEVICE: cpu (default) or cuda"""
import json, sys, time
import torch, torch.nn as nn, torch.nn.functional as F

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
dev = torch.device(sys.argv[2] if len(sys.argv) > 2 else "cpu")
def sync():
    if dev.type == "cuda": torch.cuda.synchronize()
torch.manual_seed(1)

def dc(i, o):
    return nn.Sequential(nn.Conv3d(i, o, 3, padding=1), nn.ReLU(), nn.Conv3d(o, o, 3, padding=1), nn.ReLU())

class UNet(nn.Module):
    def __init__(self, w=(32, 48, 64), classes=7):
        super().__init__()
        self.down = nn.ModuleList()
        c = 1
        for x in w:
            self.down.append(dc(c, x)); c = x
        self.up = nn.ModuleList(); self.dec = nn.ModuleList()
        for l in reversed(range(len(w) - 1)):
            self.up.append(nn.ConvTranspose3d(w[l + 1], w[l], 2, stride=2))
            self.dec.append(dc(2 * w[l], w[l]))
        self.head = nn.Conv3d(w[0], classes, 1)
    def forward(self, x):
        skips = []
        for l, b in enumerate(self.down):
            if l > 0: x = F.max_pool3d(x, 2)
            x = b(x); skips.append(x)
        skips.pop()
        for u, d in zip(self.up, self.dec):
            x = d(torch.cat([skips.pop(), u(x)], 1))
        return self.head(x)

def loss(logits, target, weights):
    ce = F.cross_entropy(logits, target, weight=weights)
    p = logits.softmax(1)
    g = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3).float()
    inter = (p * g).sum((0, 2, 3, 4)); den = p.sum((0, 2, 3, 4)) + g.sum((0, 2, 3, 4))
    dice = (2 * inter + 1) / (den + 1)
    return ce + (1 - dice[1:].mean())

net = UNet().to(dev)
params = sum(p.numel() for p in net.parameters())
print(f"torch {torch.__version__} on {dev}, {torch.get_num_threads()} threads, {params} parameters", file=sys.stderr)
opt = torch.optim.Adam(net.parameters(), 1e-3)
w = torch.ones(7, device=dev)
for batch, edge in [(4, 48), (2, 32)]:
    n = batch * edge ** 3
    x = (torch.arange(n) * 7919 % 1000).float().div(1000).reshape(batch, 1, edge, edge, edge).to(dev)
    t = (torch.arange(n) // 97 % 7).reshape(batch, edge, edge, edge).to(dev)
    times = []
    for s in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(); l = loss(net(x), t, w); l.backward(); opt.step(); sync()
        if s > 0: times.append(time.perf_counter() - t0)
    m = sorted(times)[len(times) // 2]
    print(json.dumps({"what": "train", "batch": batch, "patch": edge, "s_per_step": round(m, 4), "voxels_per_s": round(n / m), "params": params}))

vol = (torch.arange(128 ** 3) * 7919 % 1000).float().div(1000).reshape(128, 128, 128).to(dev)
g = torch.exp(-0.5 * (((torch.arange(64, device=dev) + 0.5) / 64 - 0.5) / 0.125) ** 2)
win = g[:, None, None] * g[None, :, None] * g[None, None, :]
best = 1e9
with torch.no_grad():
    for _ in range(2):
        t0 = time.perf_counter()
        acc = torch.zeros(7, 128, 128, 128, device=dev); ws = torch.zeros(128, 128, 128, device=dev)
        for z in (0, 32, 64):
            for y in (0, 32, 64):
                for x0 in (0, 32, 64):
                    tile = vol[z:z + 64, y:y + 64, x0:x0 + 64][None, None]
                    p = net(tile).softmax(1)[0]
                    acc[:, z:z + 64, y:y + 64, x0:x0 + 64] += p * win
                    ws[z:z + 64, y:y + 64, x0:x0 + 64] += win
        _ = (acc / ws).cpu()
        best = min(best, time.perf_counter() - t0)
print(json.dumps({"what": "infer", "volume": 128, "tiles": 27, "tile": 64, "s": round(best, 3), "voxels_per_s": round(27 * 64 ** 3 / best)}))
