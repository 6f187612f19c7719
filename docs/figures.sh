#!/usr/bin/env bash
# Regenerate the figures and outputs the docs embed (docs/_static/figures), with the
# commands the tutorials show. About 10 minutes on 2 CPU cores. Extra arguments go to
# every `flowguide compare` run (e.g. `bash docs/figures.sh --device cuda`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
fig=docs/_static/figures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$fig"
for model in funnel banana two_modes; do
  .venv/bin/flowguide compare --model "$model" --out "$work" --no-progress --threads 2 "$@"
  cp "$work/compare_$model.md" "$work/pairs_$model.png" "$fig/"
done
cp "$work/elbo_funnel.png" "$fig/"
.venv/bin/python examples/vae.py --posterior gaussian nsf --epochs 60 --figures "$work" \
  | tee "$fig/vae_table.txt"
.venv/bin/python examples/vae.py --posterior gaussian --decoder gaussian flow --epochs 60 --figures "$work"
cp "$work/vae_digits_nsf_bernoulli.png" "$work/vae_digits_gaussian_flow.png" "$fig/"
.venv/bin/torchrun --nproc_per_node=2 examples/distributed_logistic.py --epochs 20 \
  2>/dev/null | tee "$fig/distributed_logistic.txt"
