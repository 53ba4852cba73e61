"""Our DF-GAN train step and FID feature pass beside the official ones, in one sitting on one machine.

    python benchmarks/peer_dfgan.py --dfgan ~/src/DF-GAN --torch-python ~/venvs/torch/bin/python \
        [--pytorch-fid ~/src/pytorch-fid --fid-weights pt_inception-2015-12-05-6726825d.pth --images DIR]

The peer side runs in the given Python (which has torch) and imports the official modules from the checkouts the user
points at: NetG, NetD and NetC of tobran/DF-GAN with its train step (hinge losses, MA-GP k=2 p=6, Adam betas
(0.0, 0.9)), and pytorch-fid's InceptionV3 with its get_activations. Nothing of theirs is copied here. Our side runs
`t2ictl bench train` (the official architecture: d_gate_init 0, project_condition off) and `t2ictl score`'s feature
pass. The two sides alternate, window by window, so a drift of the machine affects both; every figure is a median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PEER_STEP = r'''
import json, sys, time, torch
sys.path.insert(0, ARGS["dfgan"] + "/code")
from models.GAN import NetG, NetD, NetC
torch.manual_seed(0)
torch.set_num_threads(ARGS["threads"])
nf, z_dim, cond, size, batch = ARGS["nf"], 100, 256, ARGS["size"], ARGS["batch"]
netG, netD, netC = NetG(nf, z_dim, cond, size, 3), NetD(nf, size, 3), NetC(nf, cond)
optG = torch.optim.Adam(netG.parameters(), lr=0.0001, betas=(0.0, 0.9))
optD = torch.optim.Adam(list(netD.parameters()) + list(netC.parameters()), lr=0.0004, betas=(0.0, 0.9))
images, sentences = torch.rand(batch, 3, size, size) * 2 - 1, torch.randn(batch, cond)
autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=ARGS["precision"] == "bfloat16")

def step():  # lib/modules.py train(), with MA-GP's grad_outputs on the CPU
    imgs, sent = images.clone().requires_grad_(), sentences.clone().requires_grad_()
    with autocast:
        real = netD(imgs)
        pred_real = netC(real, sent)
        err_real = torch.relu(1.0 - pred_real).mean()
        err_mis = torch.relu(1.0 + netC(torch.cat((real[1:], real[0:1]), dim=0), sent)).mean()
        fake = netG(torch.randn(batch, z_dim), sent)
        err_fake = torch.relu(1.0 + netC(netD(fake.detach()), sent)).mean()
    grads = torch.autograd.grad(pred_real, (imgs, sent), torch.ones_like(pred_real), retain_graph=True,
                                create_graph=True)
    norm = torch.sqrt(torch.sum(torch.cat([g.reshape(batch, -1) for g in grads], 1).float() ** 2, dim=1))
    err_d = err_real + (err_fake + err_mis) / 2.0 + 2.0 * torch.mean(norm ** 6)
    optD.zero_grad(); err_d.backward(); optD.step()
    with autocast:
        err_g = -netC(netD(fake), sent).mean()
    optG.zero_grad(); err_g.backward(); optG.step()

for _ in range(ARGS["warmup"]):
    step()
for line in sys.stdin:  # one timed window per line the driver sends
    started = time.perf_counter()
    for _ in range(ARGS["steps"]):
        step()
    print(json.dumps({"images_per_second": ARGS["steps"] * batch / (time.perf_counter() - started)}), flush=True)
'''

PEER_FID = r'''
import json, sys, time, torch
sys.path.insert(0, ARGS["pytorch_fid"] + "/src")
from pytorch_fid import inception, fid_score
torch.set_num_threads(ARGS["threads"])
weights = torch.load(ARGS["weights"], map_location="cpu")
inception.load_state_dict_from_url = lambda *a, **k: weights  # the user's file instead of the download
model = inception.InceptionV3([3]).eval()
files = sorted(str(p) for p in __import__("pathlib").Path(ARGS["images"]).rglob("*.png"))
for line in sys.stdin:
    started = time.perf_counter()
    fid_score.get_activations(files, model, ARGS["batch"], 2048, "cpu", 0)
    print(json.dumps({"images_per_second": len(files) / (time.perf_counter() - started)}), flush=True)
'''


class Peer:
    """The official side in its own Python: one timed window per request."""

    def __init__(self, python: str, program: str, args: dict):
        source = f"ARGS = {json.dumps(args)!r}\nARGS = __import__('json').loads(ARGS)\n" + program
        self.process = subprocess.Popen([python, "-c", source], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)

    def window(self) -> float:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the peer process ended (exit code {self.process.wait()})")
        return json.loads(line)["images_per_second"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def our_train_window(size: int, nf: int, batch: int, precision: str, steps: int, warmup: int):
    from t2ictl import recipes
    from t2ictl.bench import train_step

    recipe = recipes.load_recipe("shapes", [
        f"data.image_size={size}", f"model.nf={nf}", f"data.batch_size={batch}", "contrastive.enabled=false",
        "model.d_gate_init=0.0", "model.project_condition=false",
        f'runtime.precision="{"mixed_bfloat16" if precision == "bfloat16" else "float32"}"'])
    step = train_step(recipe)  # sets the recipe's precision
    step.run_steps(warmup)

    def window() -> float:
        started = time.perf_counter()
        step.run_steps(steps)
        return steps * step.images_per_step / (time.perf_counter() - started)

    return window


def our_fid_window(weights: Path, images: Path, batch: int):
    from t2ictl.evaluation import score as scoring
    from t2ictl.evaluation.inception import load_network

    network = load_network(str(weights))
    scoring.measure(network, scoring.from_folder(images, batch), "warm-up", keep_logits=True)

    def window() -> float:
        started = time.perf_counter()
        side = scoring.from_folder(images, batch)
        scoring.measure(network, side, "features", keep_logits=True)
        return side.count / (time.perf_counter() - started)

    return window


def side_by_side(label: str, peer: Peer, ours, repeats: int) -> dict:
    theirs, mine = [], []
    for _ in range(repeats):
        theirs.append(peer.window())
        mine.append(ours())
    peer.close()
    row = {"what": label, "official images/s": statistics.median(theirs), "t2ictl images/s": statistics.median(mine)}
    row["ratio"] = row["t2ictl images/s"] / row["official images/s"]
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dfgan", required=True, help="A checkout of tobran/DF-GAN.")
    parser.add_argument("--torch-python", required=True, help="A Python with torch (CPU build is enough).")
    parser.add_argument("--size", type=int, default=64, help="Image size of the train step.")
    parser.add_argument("--nf", type=int, default=32, help="DF-GAN's base width.")
    parser.add_argument("--batch", type=int, default=16, help="Images per train step.")
    parser.add_argument("--precisions", default="float32,bfloat16", help="Comma-separated: float32, bfloat16.")
    parser.add_argument("--steps", type=int, default=3, help="Train steps per timed window.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps first.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed windows per side (the median is reported).")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the peer.")
    parser.add_argument("--pytorch-fid", help="A checkout of mseitzer/pytorch-fid (for the FID pass).")
    parser.add_argument("--fid-weights", type=Path, help="pytorch-fid's FID Inception weights (.pth).")
    parser.add_argument("--images", type=Path, help="A folder of .png images for the FID pass.")
    args = parser.parse_args()
    rows = []
    for precision in args.precisions.split(","):
        peer = Peer(args.torch_python, PEER_STEP, {"dfgan": str(Path(args.dfgan).resolve()), "nf": args.nf,
                                                   "size": args.size, "batch": args.batch, "precision": precision,
                                                   "steps": args.steps, "warmup": args.warmup,
                                                   "threads": args.threads})
        ours = our_train_window(args.size, args.nf, args.batch, precision, args.steps, args.warmup)
        rows.append(side_by_side(f"DF-GAN train step, {args.size} px, nf {args.nf}, batch {args.batch}, {precision}",
                                 peer, ours, args.repeats))
    if args.pytorch_fid and args.fid_weights and args.images:
        peer = Peer(args.torch_python, PEER_FID, {"pytorch_fid": str(Path(args.pytorch_fid).resolve()),
                                                  "weights": str(args.fid_weights.resolve()),
                                                  "images": str(args.images.resolve()), "batch": 50,
                                                  "threads": args.threads})
        rows.append(side_by_side("FID Inception features (PyTorch FID), batch 50", peer,
                                 our_fid_window(args.fid_weights, args.images, 50), max(3, args.repeats // 2)))
    print("\n| what | official images/s | t2ictl images/s | ratio |\n| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['what']} | {row['official images/s']:.1f} | {row['t2ictl images/s']:.1f} | "
              f"{row['ratio']:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
