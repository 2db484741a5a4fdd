#!/usr/bin/env bash
# Runs a sweep as NUM_TASKS tasks on this machine, one process per local accelerator, then merges
# the per-point files (python -m experiments.report).
#
#   scripts/run_local.sh NUM_TASKS [experiments.sweep flags...]
#   scripts/run_local.sh 4 --depths=10,30 --output_dir=out/sweep
#
# GPUs (found by nvidia-smi): task i runs with CUDA_VISIBLE_DEVICES=(i mod #GPUs), one process
# per GPU at a time. Otherwise plain CPU processes, at most one per core (nproc) at a time. Every
# task runs with --num_devices=1 and writes its log to OUTPUT_DIR/logs/task-I.log.
# Environment: PYTHON (default python), MAX_PARALLEL (processes at a time; default: the GPUs, or
# the CPU cores). Exit status: non-zero if a task or the report fails. Rerunning the same command
# resumes: finished grid points are skipped, damaged ones recomputed. The tasks share OUTPUT_DIR's
# lock (they are one split: initjax.lock); another sweep or report into it meanwhile is refused.
set -uo pipefail

if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_TASKS [experiments.sweep flags...]" >&2
  exit 2
fi
num_tasks=$1
shift
python=${PYTHON:-python}
cd "$(dirname "$0")/.." || exit 2

# The sweep's --output_dir (the report needs it); the sweep's default otherwise.
output_dir=out/sweep
args=("$@")
for ((j = 0; j < ${#args[@]}; j++)); do
  case ${args[j]} in
    --output_dir=*) output_dir=${args[j]#--output_dir=} ;;
    --output_dir) output_dir=${args[j + 1]:-} ;;
  esac
done

gpus=0
if command -v nvidia-smi > /dev/null 2>&1; then
  gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader 2> /dev/null | grep -c '^[0-9]')
fi
if ((gpus > 0)); then
  slots=${MAX_PARALLEL:-$gpus}
  echo "running $num_tasks tasks on $gpus GPU(s), $slots at a time"
else
  slots=${MAX_PARALLEL:-$(nproc 2> /dev/null || echo 1)}
  echo "running $num_tasks tasks as CPU processes, $slots at a time"
fi
((slots > num_tasks)) && slots=$num_tasks
mkdir -p "$output_dir/logs" || exit 2

run_task() {  # run_task I: one task, its output in its log; returns its exit status
  local i=$1 log="$output_dir/logs/task-$1.log"
  shift
  if ((gpus > 0)); then
    CUDA_VISIBLE_DEVICES=$((i % gpus)) "$python" -m experiments.sweep --task_index="$i" \
      --num_tasks="$num_tasks" --num_devices=1 "$@" > "$log" 2>&1
  else
    JAX_PLATFORMS=cpu "$python" -m experiments.sweep --task_index="$i" \
      --num_tasks="$num_tasks" --num_devices=1 "$@" > "$log" 2>&1
  fi
}

stop() {  # Ctrl-C or SIGTERM: pass SIGTERM on to the running tasks (they keep what is finished)
  for pid in "${pids[@]}"; do
    pkill -TERM -P "$pid" 2> /dev/null
    kill -TERM "$pid" 2> /dev/null
  done
  wait
  exit 130
}

# Slot s runs tasks s, s + slots, s + 2 slots, ... one after the other (on GPU s mod #GPUs).
pids=()
trap stop INT TERM
for ((s = 0; s < slots; s++)); do
  (
    failed=0
    for ((i = s; i < num_tasks; i += slots)); do
      if run_task "$i" "$@"; then
        echo "task $i of $num_tasks done (log: $output_dir/logs/task-$i.log)"
      else
        status=$?
        echo "task $i of $num_tasks FAILED (exit $status); end of $output_dir/logs/task-$i.log:" >&2
        tail -n 5 "$output_dir/logs/task-$i.log" | sed 's/^/    /' >&2
        failed=1
      fi
    done
    exit $failed
  ) &
  pids+=($!)
done

failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
if ((failed)); then
  echo "some tasks failed; rerun the same command to compute the missing grid points" >&2
  exit 1
fi
"$python" -m experiments.report --output_dir="$output_dir"
