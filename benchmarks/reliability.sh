#!/usr/bin/env bash
# Reliability across data sets, budgets and class imbalance (docs/quality.md).
#   bash benchmarks/reliability.sh FEATURES.npz DIGITS.npz OUT_DIR PART GROUP [GROUP ...]
# PART: base (the baselines) or ralif (RALIF's default and named readings). Each (group, part) is one
# `ralif simulate` run with Random in it, so parts can run side by side; Random is identical in both
# (same seeds, same initial sets, deterministic head). DIGITS.npz: benchmarks/make_digits_features.py.
# Report seeds are 0..S-1; the choices in docs/quality.md were made on seeds 100 and up.
# The pixels groups read PIXELS=benchmarks/make_pixel_features.py's output (weak hand-made features).
set -euo pipefail
F=${1:?features .npz}; D=${2:?digits .npz}; OUT=${3:?output folder}; PART=${4:?base or ralif}; shift 4
BASE_SMALL=${BASE_SMALL:-random,uncertainty,margin,badge,gradnorm,typiclust}
BASE_TAIL=${BASE_TAIL:-random,uncertainty,margin,coreset,badge,typiclust}
BASE_LARGE=${BASE_LARGE:-random,margin,badge}
BASE_TAIL_LARGE=${BASE_TAIL_LARGE:-random,margin,badge,coreset}
BASE_DIGITS=${BASE_DIGITS:-random,uncertainty,margin,coreset,badge,gradnorm,typiclust}
PAPER="ralif(reading=paper,candidates=score,weighting=uniform,diversity=kmeanspp,space=raw,cold=0,gate=none)"
EARLIER="ralif(candidates=score,weighting=uniform,diversity=kmeans,space=standardized,cold=0,representative=nearest,gate=none)"
RALIF=${RALIF:-random,ralif,$EARLIER,$PAPER}
ANIMALS="bird,cat,deer,dog,frog,horse"
VEHICLES="airplane,automobile,ship,truck"
sim() { local name=$1; shift; python -m ralif simulate --quiet --out "$OUT/$name-$PART" "$@"; }
pick() { if [ "$PART" = base ]; then echo "$1"; else echo "$RALIF"; fi; }
for g in "$@"; do case $g in
  cifar-100) sim "$g" --features "$F" --initial 100 --budget 100 --cycles 9 --seeds 5 --strategies "$(pick "$BASE_SMALL")" ;;
  cifar-1000) sim "$g" --features "$F" --pool-size 20000 --initial 1000 --budget 1000 --cycles 5 --seeds 5 \
      --strategies "$(pick "$BASE_LARGE")" ;;
  cifar-1000-full) sim "$g" --features "$F" --initial 1000 --budget 1000 --cycles 9 --seeds 5 \
      --strategies "$(pick "$BASE_LARGE")" ;;
  tail-100) sim "$g" --features "$F" --imbalance 100 --class-order 0 --initial 100 --budget 100 --cycles 9 \
      --seeds 5 --strategies "$(pick "$BASE_TAIL")" ;;
  tail-10) sim "$g" --features "$F" --imbalance 10 --class-order 1 --initial 100 --budget 100 --cycles 9 \
      --seeds 5 --strategies "$(pick "$BASE_TAIL")" ;;
  tail-10-1000) sim "$g" --features "$F" --imbalance 10 --class-order 1 --initial 1000 --budget 1000 --cycles 5 \
      --seeds 5 --strategies "$(pick "$BASE_TAIL_LARGE")" ;;
  digits) sim "$g" --features "$D" --initial 20 --budget 20 --cycles 9 --seeds 10 --strategies "$(pick "$BASE_DIGITS")" ;;
  animals-100) sim "$g" --features "$F" --pool-classes "$ANIMALS" --initial 100 --budget 100 --cycles 9 --seeds 5 \
      --strategies "$(pick "$BASE_SMALL")" ;;
  animals-1000) sim "$g" --features "$F" --pool-classes "$ANIMALS" --pool-size 20000 --initial 1000 --budget 1000 \
      --cycles 5 --seeds 5 --strategies "$(pick "$BASE_LARGE")" ;;
  vehicles-100) sim "$g" --features "$F" --pool-classes "$VEHICLES" --initial 100 --budget 100 --cycles 9 --seeds 5 \
      --strategies "$(pick "$BASE_SMALL")" ;;
  vehicles-1000) sim "$g" --features "$F" --pool-classes "$VEHICLES" --initial 1000 --budget 1000 --cycles 5 \
      --seeds 5 --strategies "$(pick "$BASE_LARGE")" ;;
  pixels-100) sim "$g" --features "${PIXELS:?set PIXELS}" --initial 100 --budget 100 --cycles 9 --seeds 5 \
      --strategies "$(pick "$BASE_SMALL")" ;;
  pixels-1000) sim "$g" --features "${PIXELS:?set PIXELS}" --pool-size 20000 --initial 1000 --budget 1000 \
      --cycles 5 --seeds 5 --strategies "$(pick "$BASE_LARGE")" ;;
  *) echo "unknown group $g" >&2; exit 2 ;;
esac; done
