"""Training FLOPs, MFU and NVML energy: formulas checked by hand, NVML through a fake (and for real on a GPU)."""

from __future__ import annotations

import pytest

from harness.worker import compute


def test_peak_table_finds_the_most_specific_name_and_the_dtype():
    assert compute.peak_flops("NVIDIA H100 80GB HBM3", "torch.bfloat16") == pytest.approx(989.4e12)
    assert compute.peak_flops("NVIDIA H100 PCIe", "float16") == pytest.approx(756.5e12)
    assert compute.peak_flops("NVIDIA H200", "float32") == pytest.approx(66.9e12)
    assert compute.peak_flops("NVIDIA A100-SXM4-80GB", "torch.float32") == pytest.approx(19.5e12)
    assert compute.peak_flops("NVIDIA A10G", "bfloat16") == pytest.approx(70.0e12)  # not the A10's figure
    assert compute.peak_flops("Some Future GPU", "bfloat16") is None
    assert compute.peak_flops(None, "float32") is None and compute.peak_flops("NVIDIA H100", "int8") is None


def test_training_flops_is_six_n_t_for_full_fine_tuning_and_less_when_frozen():
    assert compute.training_flops(1_000, 1_000, 50) == 6 * 1_000 * 50
    assert compute.training_flops(1_000, 10, 50) == (4 * 1_000 + 2 * 10) * 50
    assert compute.mfu(6e12, 2.0, 1e13) == pytest.approx(0.3)
    assert compute.mfu(None, 2.0, 1e13) is None and compute.mfu(6e12, 2.0, None) is None


def test_matmul_parameters_of_a_tiny_bert_by_hand():
    torch = pytest.importorskip("torch")
    from transformers import BertConfig, BertForSequenceClassification

    h, i, layers, labels = 32, 64, 2, 3
    config = BertConfig(vocab_size=100, hidden_size=h, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=i, max_position_embeddings=64, num_labels=labels)
    model = BertForSequenceClassification(config)
    # per layer: Q, K, V, attention output (h×h each), intermediate (h×i), output (i×h); then pooler h×h, head h×3
    expected = layers * (4 * h * h + 2 * h * i) + h * h + h * labels
    n, trainable = compute.matmul_parameters(model)
    assert n == expected and trainable == sum(p.numel() for p in model.parameters())
    for name, parameter in model.named_parameters():  # BitFit-like: biases only
        parameter.requires_grad = name.endswith("bias")
    n_frozen, trainable = compute.matmul_parameters(model)
    assert n_frozen == expected
    assert trainable == sum(p.numel() for name, p in model.named_parameters() if name.endswith("bias"))
    assert isinstance(torch.nn.Linear(2, 2), torch.nn.Module)


class FakeNvml:
    def __init__(self, readings, fail_init=False):
        self.readings = list(readings)
        self.fail_init = fail_init
        self.uuids = []

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.uuids.append(uuid)
        return "handle"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        assert handle == "handle"
        return self.readings.pop(0)


def test_energy_is_the_counter_difference_in_joules():
    nvml = FakeNvml([1_000, 11_000, 261_000])  # probe, start, stop (millijoules)
    meter = compute.EnergyMeter(nvml, uuid="GPU-1234")
    assert meter.available and nvml.uuids == ["GPU-1234"]
    meter.start()
    assert meter.stop() == pytest.approx(250.0)


def test_no_nvml_means_no_energy_and_a_reason():
    meter = compute.EnergyMeter(FakeNvml([], fail_init=True), uuid="GPU-1")
    assert not meter.available and "NVML Shared Library Not Found" in meter.reason
    meter.start()
    assert meter.stop() is None


def test_a_counter_that_fails_mid_cell_gives_no_figure():
    nvml = FakeNvml([5, 10])  # probe, start; the stop read raises (popping an empty list)
    meter = compute.EnergyMeter(nvml, uuid="GPU-1")
    meter.start()
    assert meter.stop() is None and not meter.available and meter.reason


@pytest.mark.gpu
def test_real_nvml_energy_counter_on_a_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("pynvml")
    meter = compute.EnergyMeter()
    if not meter.available:
        pytest.skip(f"no NVML energy counter: {meter.reason}")
    meter.start()
    x = torch.randn(4096, 4096, device="cuda")
    for _ in range(50):
        x = x @ x
        x = x / x.norm()
    torch.cuda.synchronize()
    joules = meter.stop()
    assert joules is not None and joules > 0


def test_a_cell_records_its_training_flops(tmp_path):
    pytest.importorskip("torch")
    from harness.testing import run_cell, tiny_model

    record = run_cell(tmp_path, model=tiny_model())
    assert record.status == "ok", record.error
    c, tokens = record.compute, record.training.tokens
    assert c.matmul_params > 0 and tokens > 0
    # full fine-tuning: every weight trains, so (4N + 2·N_trainable)·T with N_trainable = all trainable weights
    assert c.train_flops == (4 * c.matmul_params + 2 * record.params.trainable) * tokens
    assert c.mfu is None and c.peak_flops is None and c.energy_j is None  # CPU: no peak, no NVML


class FakeMeter:
    available = True

    def __init__(self):
        self.readings = iter([12.5, 3.0])

    def start(self):
        pass

    def stop(self):
        return next(self.readings)


def test_energy_and_mfu_are_wired_into_the_cell_state(monkeypatch):
    from harness.worker import cell

    monkeypatch.setattr(compute, "energy_meter", FakeMeter)
    assert cell._energy_meter("cpu") is None  # no GPU, no counter
    meter = cell._energy_meter("cuda")
    assert isinstance(meter, FakeMeter)
    state = cell.CellState(cell=None, attempt="a", device="cpu")
    cell._note_training_compute(state, model=None, device="cpu", n=100, n_trainable=10, tokens=7, train_s=2.0,
                                energy=meter)
    assert state.compute == {"train_flops": (400 + 20) * 7.0, "peak_flops": None, "mfu": None, "train_energy_j": 12.5}


def test_the_matmul_dtype_is_the_frozen_weights_not_the_adapters():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(64, 64).to(torch.bfloat16), torch.nn.Linear(64, 2))  # fp32 "adapter"
    assert compute.matmul_dtype(model) == "torch.bfloat16"
    assert compute.peak_flops("NVIDIA H100 80GB HBM3", compute.matmul_dtype(model)) == pytest.approx(989.4e12)


def test_four_bit_weights_count_as_the_weights_they_pack():
    """bitsandbytes' Params4bit stores two 4-bit weights per byte: a 64x32 layer holds 1,024 uint8 values."""
    import torch

    from harness.worker.cell import count_params
    from harness.worker.compute import logical_numel, matmul_parameters

    class Params4bit(torch.nn.Parameter):  # the name is what identifies bitsandbytes' class
        pass

    layer = torch.nn.Linear(32, 64, bias=False)
    layer.weight = Params4bit(torch.zeros(1024, 1, dtype=torch.uint8), requires_grad=False)
    assert logical_numel(layer.weight) == 2048 and logical_numel(torch.nn.Parameter(torch.zeros(3, 4))) == 12
    model = torch.nn.Sequential(layer, torch.nn.Linear(64, 2))
    assert matmul_parameters(model) == (2048 + 128, 130)
    assert count_params(model, ()).total == 2048 + 130
