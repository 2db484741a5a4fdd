"""The pieces of `scripts/benchmark.py`: a harness, and the sections that use it.

Harness (how to measure; nothing here knows what is measured):
  modes        the sizes of the full, --quick and --tiny runs
  timing       warm-up, interleaved repeats, medians, rates
  threads      NumPy/PyTorch thread counts inside a block, the usable cores
  machine      machine, versions, load average
  children     sections run in child processes (JSON on stdout)
  report       ratios, targets (met/missed), the JSON file
  table        the printed table

Sections (what is measured):
  matmul        the dense float32 matmul ceiling of the default device
  propagation   the weight-initialization figure's workload: initjax vs NumPy/jit/PyTorch loops
  propagation_baselines   those loops
  workload      the training workload shared by every contender (data, sizes, FLOPs, weights)
  torch_peers   what a PyTorch user runs instead: a loop over seeds, torch.func vmap
  training      MLP training throughput, initjax vs PyTorch, at two widths
  cnn           1-D CNN training throughput: vmapped vs a per-seed loop vs PyTorch (also with
                batchnorm: `training.run_cnn_batchnorm`)
                (`training.run_recurrent`: the rnn and lstm against nn.RNN / nn.LSTM loops)
  compile_time  compilation time of the propagation and training programs by depth
  memory        peak resident memory of a 10,000-seed propagation run
  sweep_start   cold vs warm start of `python -m experiments.sweep` (persistent compile cache)
"""
