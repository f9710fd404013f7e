import pytest
import torch

from polydiff.utils.devices import resolve_device


def test_no_device_is_the_gpu_where_there_is_one_else_the_cpu():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cpu:0") == torch.device("cpu")  # the one CPU: torch.load cannot map to "cpu:0"


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu0", "unknown device 'gpu0'"), ("meta", "polydiff runs on cpu, cuda or mps"), ("cuda:99", "not available")],
)
def test_a_device_this_machine_cannot_use_is_refused_by_name(device, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(device)
