"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Tests run many small tensor operations on shared cores, where one thread is much faster than
    # oversubscribed ones; the library's own default (all cores) is for real workloads.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
