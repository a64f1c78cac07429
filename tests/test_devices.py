"""Device discovery without torch: --devices, CUDA_VISIBLE_DEVICES, nvidia-smi (faked)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.errors import HarnessError
from harness.run import devices
from harness.run.devices import Device, discover_devices, parse_nvidia_smi, visible_gpus

SMI = "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\n2, Tesla T4, 15360\n"


def smi(text: str | None = SMI):
    calls = []

    def run() -> str | None:
        calls.append(1)
        return text

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_parse_nvidia_smi_reads_index_name_and_memory():
    gpus = parse_nvidia_smi(SMI + "garbage line\n\n")
    assert [g.index for g in gpus] == [0, 1, 2]
    assert gpus[2] == Device("cuda", 2, "Tesla T4", 15360 * 2**20)
    assert gpus[0].label == "cuda:0" and gpus[0].cuda_visible_devices == "0"
    assert gpus[0].describe() == "cuda:0 (NVIDIA H100 80GB HBM3, 80 GiB)"


def test_default_uses_every_gpu_nvidia_smi_lists():
    assert [d.index for d in discover_devices(None, env={}, nvidia_smi=smi())] == [0, 1, 2]


def test_no_gpu_falls_back_to_cpu():
    found = discover_devices(None, env={}, nvidia_smi=smi(None))
    assert len(found) == 1 and found[0].kind == "cpu" and found[0].index is None
    assert found[0].cuda_visible_devices == ""


def test_cuda_visible_devices_is_respected():
    found = discover_devices(None, env={"CUDA_VISIBLE_DEVICES": "2,0"}, nvidia_smi=smi())
    assert [(d.index, d.name) for d in found] == [(2, "Tesla T4"), (0, "NVIDIA H100 80GB HBM3")]
    # an index nvidia-smi does not list still counts (the user said so); named generically
    assert discover_devices(None, env={"CUDA_VISIBLE_DEVICES": "5"}, nvidia_smi=smi())[0].name == "GPU 5"


@pytest.mark.parametrize("value", ["", "-1", " "])
def test_empty_cuda_visible_devices_means_cpu_without_asking_nvidia_smi(value):
    fake = smi()
    found = discover_devices(None, env={"CUDA_VISIBLE_DEVICES": value}, nvidia_smi=fake)
    assert [d.kind for d in found] == ["cpu"]
    assert fake.calls == []


def test_uuid_entries_are_passed_through_to_the_child():
    found = visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-abc,GPU-def"}, nvidia_smi=smi(None))
    assert [(d.index, d.cuda_visible_devices) for d in found] == [(0, "GPU-abc"), (1, "GPU-def")]


def test_minus_one_hides_the_entries_after_it():
    assert [d.index for d in visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, nvidia_smi=smi())] == [1]


def test_devices_option_selects_gpus_in_the_given_order():
    found = discover_devices("2, 0,2", env={}, nvidia_smi=smi())
    assert [d.index for d in found] == [2, 0]


def test_devices_cpu_ignores_gpus():
    assert [d.kind for d in discover_devices("cpu", env={}, nvidia_smi=smi())] == ["cpu"]
    assert [d.kind for d in discover_devices("CPU", env={}, nvidia_smi=smi())] == ["cpu"]


def test_unknown_index_is_one_line_naming_what_is_available():
    with pytest.raises(HarnessError) as err:
        discover_devices("0,7", env={}, nvidia_smi=smi())
    assert str(err.value) == "--devices: unknown GPU index 7; available: 0, 1, 2"
    assert err.value.exit_code == 2
    with pytest.raises(HarnessError, match="no GPU visible; use --devices cpu"):
        discover_devices("0", env={}, nvidia_smi=smi(None))
    with pytest.raises(HarnessError, match="expected 'cpu' or comma-separated GPU indices"):
        discover_devices("gpu0", env={}, nvidia_smi=smi())
    # indices refer to CUDA_VISIBLE_DEVICES entries when it is set
    with pytest.raises(HarnessError, match="available: 1"):
        discover_devices("0", env={"CUDA_VISIBLE_DEVICES": "1"}, nvidia_smi=smi())


def test_nvidia_smi_missing_or_failing_means_no_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)
    assert devices.query_nvidia_smi() is None
    broken = tmp_path / "nvidia-smi"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    broken.chmod(0o755)
    monkeypatch.setattr(devices.shutil, "which", lambda name: str(broken))
    assert devices.query_nvidia_smi() is None


def test_nvidia_smi_is_called_with_the_documented_query_and_a_timeout(monkeypatch, tmp_path):
    seen = {}

    def fake_run(argv, **kwargs):
        seen.update(argv=argv, **kwargs)
        return subprocess.CompletedProcess(argv, 0, stdout=SMI, stderr="")

    monkeypatch.setattr(devices.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(devices.subprocess, "run", fake_run)
    assert devices.query_nvidia_smi() == SMI
    assert seen["argv"][1:] == ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
    assert seen["timeout"] == 10

    def hanging(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    monkeypatch.setattr(devices.subprocess, "run", hanging)
    assert devices.query_nvidia_smi() is None


def test_discovery_imports_no_torch():
    code = "import sys, harness.run.devices as d; d.discover_devices(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
