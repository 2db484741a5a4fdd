"""Shared fixtures for the initjax tests."""
import jax
import pytest


@pytest.fixture
def x64():
  """Enables float64 for one test only (jax.enable_x64 is a context manager in jax 0.10).

  The flag is restored when the test ends, so other test files keep JAX's float32 default.
  """
  with jax.enable_x64(True):
    yield
