"""Named experiment configurations (ml_collections config files, as the flax examples keep them).

    python -m experiments.sweep --config=experiments/configs/sweep.py
    python -m experiments.sweep --config=experiments/configs/he2015_fig3.py:quick --config.steps=200

Each file's `get_config(variant)` returns the flags of one experiment (`EXPERIMENT` names it);
the variant "quick" is a small version for CI and a first look. A flag given on the command
line wins over the file; `--config.NAME=VALUE` changes one setting of the file. The named
reproductions (`python -m experiments.reproduce --list`) run these files.
"""
