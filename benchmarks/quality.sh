#!/usr/bin/env bash
# Quality benchmark: the paper's Tables 1-4 re-measured on CIFAR-10 with ImageNet-pretrained embeddings.
#   bash benchmarks/quality.sh FEATURES.npz OUT_DIR [GROUP ...]
# Groups: main readings nodiv tau diversity large-a large-b (default: all). Each group is one `ralif simulate`
# run; the init-1000 comparison is split in two groups (each with Random) so they can run side by side.
set -euo pipefail
F=${1:?features .npz}; OUT=${2:?output folder}; shift 2
GROUPS_TO_RUN=${*:-main readings nodiv tau diversity large-a large-b}
PAPER="diversity=kmeanspp,space=raw,gate=none"   # the paper's diversity step (k-means++ over raw features), no gate
sim() { local name=$1; shift; python -m ralif simulate --features "$F" --out "$OUT/$name" --quiet "$@"; }
specs() { local IFS=,; echo "$*"; }
small=(--initial 100 --budget 100 --cycles 9 --seeds 3)
for g in $GROUPS_TO_RUN; do case $g in
  main) sim main "${small[@]}" --strategies random,uncertainty,coreset,badge,gradnorm,ralif ;;
  readings)
    s=(random); for r in single expectation truncated; do for x in influence paper reference; do
      s+=("ralif(rule=$r,reading=$x,$PAPER)"); done; done
    sim readings "${small[@]}" --strategies "$(specs "${s[@]}")" ;;
  nodiv)
    s=(random); for r in single expectation truncated; do for x in influence paper reference; do
      s+=("ralif(rule=$r,reading=$x,diversity=none)"); done; done
    sim nodiv "${small[@]}" --strategies "$(specs "${s[@]}")" ;;
  tau)
    s=(random); for t in 0 0.2 0.4 0.6 0.8; do s+=("ralif(tau=$t)" "ralif(reading=paper,tau=$t,$PAPER)"); done
    sim tau "${small[@]}" --strategies "$(specs "${s[@]}")" ;;
  diversity)
    sim diversity "${small[@]}" --strategies "random,ralif,ralif(space=raw),ralif(diversity=kmeanspp),ralif($PAPER),ralif(diversity=meanshift),ralif(diversity=none),ralif(fraction=1)" ;;
  large-a) sim large-a --initial 1000 --budget 1000 --cycles 9 --seeds 3 --strategies "random,uncertainty,coreset,badge" ;;
  large-b) sim large-b --initial 1000 --budget 1000 --cycles 9 --seeds 3 \
      --strategies "random,gradnorm,ralif,ralif($PAPER)" ;;
  *) echo "unknown group $g" >&2; exit 2 ;;
esac; done
