"""initjax.core: the ground floor that every other part of initjax may use.

Modules:
  errors          `ConfigError` (names the setting) and the registries' unknown-name error
  results         atomic CSV/JSON/figure writers (a temporary name, then a rename), and the
                  clean-up of what a killed writer left
  output_kind     which command's results an output directory holds, so that another refuses it
  progress        long work says so: a progress line with an ETA, at most once a minute
  parallel        the one way to spread networks or seeds over local devices (a worker per
                  device, or per CPU core), memory -> chunk size
  distributed     past one process: `jax.distributed` start-up, batch-task splits, SIGTERM/SIGINT
  lock            the advisory lock on an output directory
  _jax_internals  the only use of private JAX internals (a faster Threefry lowering on CPU)

Core imports no other part of initjax (README, "Layout").
"""
