#!/usr/bin/env bash
# The figures of BENCHMARKS.md: run from the repository root after `pip install -e .` and `t2ictl prepare shapes`.
# Each line prints a table; images/s is the median of --repeats timed windows after --warmup untimed ones.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
peer64=(--set data.image_size=64 --set model.nf=32 --set data.batch_size=16 --set contrastive.enabled=false)
peer256=(--set data.image_size=256 --set model.nf=32 --set data.batch_size=8 --set contrastive.enabled=false)

# DF-GAN train step (D + G, hinge + MA-GP) at the peer's settings, contrastive off: float32, then bfloat16
t2ictl bench train --recipe shapes "${peer64[@]}" --precision float32
t2ictl bench train --recipe shapes "${peer64[@]}" --precision mixed_bfloat16
t2ictl bench train --recipe shapes "${peer64[@]}" --precision float32 --xla
t2ictl bench train --recipe shapes "${peer64[@]}" --precision mixed_bfloat16 --xla
# the framework's cost: contrastive on (two branches of 8 = the same 16 images per step)
t2ictl bench train --recipe shapes --set data.image_size=64 --set model.nf=32 --set data.batch_size=8 --precision float32
t2ictl bench train --recipe shapes "${peer256[@]}" --precision float32 --steps 1 --repeats 3 --warmup 1
t2ictl bench train --recipe shapes "${peer256[@]}" --precision mixed_bfloat16 --steps 1 --repeats 3 --warmup 1
TF_CPU_ALLOCATOR_USE_BFC=true \
    t2ictl bench train --recipe shapes "${peer256[@]}" --precision mixed_bfloat16 --steps 1 --repeats 3 --warmup 1

# every backbone's CUB recipe at 256 px, batch 4 + 4 (contrastive on, auto precision)
for recipe in cub cub-attngan cub-dmgan cub-ssagan; do
    t2ictl bench train --recipe "$recipe" --set data.batch_size=4 --steps 1 --repeats 3 --warmup 1
done

# input pipeline (decode, crop, resize, tokenize, pairs) at 64 and 256 px
t2ictl bench data --recipe shapes --set data.image_size=64 --set data.batch_size=16 --steps 20
t2ictl bench data --recipe shapes --set data.image_size=256 --set data.batch_size=16 --steps 20

# scoring: Inception-v3 at 299 px, compiled vs a plain eager loop over the same model
t2ictl bench score --batch 25 --steps 2 --repeats 3 --warmup 1

# what limits the step: op self-time by op type and by part of the step (needs `pip install xprof`)
python benchmarks/profile_step.py --set data.image_size=64 --set model.nf=32 --set data.batch_size=16 \
    --set contrastive.enabled=false --set runtime.precision=float32
python benchmarks/profile_step.py --set data.image_size=256 --set model.nf=32 --set data.batch_size=8 \
    --set contrastive.enabled=false --set runtime.precision=mixed_bfloat16

# bfloat16 against float32 over a short run of the embedded job (the same encoders; compare losses and consistency)
t2ictl pretrain --recipe shapes --run-dir runs/enc
for precision in float32 mixed_bfloat16; do
    t2ictl train --recipe shapes --run-dir "runs/$precision" --precision "$precision" \
        --set train.encoders=runs/enc --set train.epochs=12
done

# beside the official DF-GAN and pytorch-fid, in one sitting (needs checkouts and a Python with torch; see the script)
# python benchmarks/peer_dfgan.py --dfgan ../DF-GAN --torch-python ../torch-venv/bin/python \
#     --pytorch-fid ../pytorch-fid --fid-weights pt_inception-2015-12-05-6726825d.pth --images DIR
# python benchmarks/peer_dfgan.py --dfgan ../DF-GAN --torch-python ../torch-venv/bin/python --size 256 --batch 8 \
#     --repeats 3 --steps 1 --warmup 1
