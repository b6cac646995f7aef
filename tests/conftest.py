import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Tiny shapes: on a 2-core machine a second intra-op thread only adds waiting (and the test
    # processes that tests spawn get their own cores).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
