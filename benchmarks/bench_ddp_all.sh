#!/usr/bin/env bash
# The multi-GPU measurements in one go, each run a `bench_ddp.py` run (its docstring says what is timed):
#   loss curves: 1 device x batch 2B (the reference, to 2 HALF steps) against 2 devices x batch B (to HALF);
#   resume across device counts: the 2-device checkpoint at HALF continued on 1 device, the 1-device checkpoint
#   at HALF continued on 2 devices; throughput: 1 device x B, 1 x 2B, 2 x B, 2 x 2B; what AvatarDDP's buffer
#   choice is worth (broadcast_buffers=true); optionally the code of another checkout (OLD) and compiled runs.
# Then the throughput table and the curve comparison go to $OUTD/results.md, every run's output to $OUTD/runs.log
# (`bash benchmarks/bench_ddp_all.sh report` writes the tables again from what is there).
#
#   CFG="--config configs/nlfgs_base.yaml <overrides> trainer.max_steps=300 trainer.checkpoint_every=150 \
#        trainer.log_every=25" HALF=150 B=4 OUTD=out bash benchmarks/bench_ddp_all.sh
#
# Env: CFG (config and overrides of every run; trainer.max_steps = 2 HALF, trainer.checkpoint_every divides HALF),
# HALF, SKIP (untimed steps, default 30), B (batch per device of the 2-device runs, default 4), OLD (folder holding
# another avatar_nb package, optional), COMPILE (1: compiled runs too, while SECONDS < COMPILE_BEFORE),
# PROFILE (A:B steps to profile in one 2-device run, optional), OUTD, RUNS (run folders), TMO (seconds per run).
set -u
HALF=${HALF:-150}; SKIP=${SKIP:-30}; B=${B:-4}; B2=$((2 * B)); OUTD=${OUTD:-bench_ddp_out}; RUNS=${RUNS:-runs_ddp}
NEW=${NEW:-$PWD}; LOG="$OUTD/runs.log"; J="$OUTD/throughput.jsonl"
mkdir -p "$OUTD" "$RUNS"
one="trainer.devices=1 trainer.strategy=auto"
two="trainer.devices=2 trainer.strategy=ddp"

bench() {  # name package-folder bench_ddp.py-arguments...
  local name=$1 pkg=$2; shift 2
  echo "=== $name start $(date -u +%T) t=${SECONDS}s" >>"$LOG"
  PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}" timeout "${TMO:-240}" python benchmarks/bench_ddp.py --json "$J" \
    --name "$name" --skip "$SKIP" $CFG out="$RUNS/$name" "$@" >>"$LOG" 2>&1
  echo "=== $name end rc=$? t=${SECONDS}s" >>"$LOG"
}

run_all() {
  bench one_b$B2 "$NEW" --keep-at "$HALF" $one trainer.batch_size=$B2
  bench ddp_b$B "$NEW" --stop-at "$HALF" $two trainer.batch_size=$B
  [ -n "${OLD:-}" ] && bench before_ddp_b$B "$OLD" --stop-at "$HALF" $two trainer.batch_size=$B
  bench resume_ddp_on_one "$NEW" --skip $((HALF + SKIP)) $one trainer.batch_size=$B2 \
    trainer.resume="$RUNS/ddp_b$B/checkpoints/last.ckpt"
  bench resume_one_on_ddp "$NEW" --skip $((HALF + SKIP)) $two trainer.batch_size=$B \
    trainer.resume="$RUNS/one_b$B2/checkpoints/step$HALF.ckpt"
  bench one_b$B "$NEW" --stop-at "$HALF" $one trainer.batch_size=$B
  bench ddp_b${B}_buffers "$NEW" --stop-at "$HALF" --ddp broadcast_buffers=true $two trainer.batch_size=$B
  bench ddp_b$B2 "$NEW" --stop-at "$HALF" $two trainer.batch_size=$B2
  if [ -n "${PROFILE:-}" ]; then
    NCCL_DEBUG=INFO bench profile_ddp_b$B "$NEW" --stop-at "${PROFILE#*:}" --skip 1 --profile "$PROFILE" \
      --profile-out "$OUTD/profile.txt" $two trainer.batch_size=$B
  fi
  if [ "${COMPILE:-0}" = 1 ]; then
    for d in one_b$B ddp_b$B; do
      if [ "$SECONDS" -lt "${COMPILE_BEFORE:-400}" ]; then
        [ "$d" = "one_b$B" ] && dev="$one" || dev="$two"
        TMO=${CTMO:-${TMO:-240}} bench ${d}_compiled "$NEW" --stop-at "$HALF" $dev trainer.batch_size=$B trainer.compile=default
      else echo "=== ${d}_compiled skipped: t=${SECONDS}s" >>"$LOG"; fi
    done
  fi

}

report() {
  {
    echo "## throughput"; echo
    PYTHONPATH="$NEW${PYTHONPATH:+:$PYTHONPATH}" python benchmarks/bench_ddp.py --table "$J"; echo
    echo "## loss curves"; echo
    cmp=("$RUNS/one_b$B2" "$RUNS/ddp_b$B" "$RUNS/resume_ddp_on_one" "$RUNS/resume_one_on_ddp")
    [ -n "${OLD:-}" ] && cmp+=("$RUNS/before_ddp_b$B")
    PYTHONPATH="$NEW${PYTHONPATH:+:$PYTHONPATH}" python benchmarks/bench_ddp.py --compare "${cmp[@]}"; echo
    echo "## warnings per run"; echo
    awk '/^=== .* start/{n=$2} /Grad strides do not match/{g[n]++} /AccumulateGrad node/{a[n]++}
         /^=== .* end/{printf "%s: grad-strides %d, accumulate-grad-stream %d\n", n, g[n], a[n]}' "$LOG"
    echo; echo "## NCCL transport"; echo
    grep -E "NCCL INFO (Channel 00.*via|.*NVLS|.*P2P|.*SHM|Using network)" "$LOG" | sed 's/^.*NCCL INFO/NCCL INFO/' | sort | uniq -c | head -20
  } >"$OUTD/results.md" 2>&1
  tar czf "$OUTD/metrics.tgz" $(find "$RUNS" -name metrics.csv) 2>/dev/null
  cat "$OUTD/results.md"
}

[ "${1:-}" = report ] || run_all
report
