"""``auto`` precision: bf16 where the device reports bf16 matrix units, fp32 elsewhere, said in one
log line; an explicit fp32 always wins. (The choice logic, not the speed: the bench measures that.)"""

import logging

import pytest
import torch

from phenaki_core import preset
from phenaki_core.pipeline import resolve_dtype
from phenaki_core.precision import CPU_BF16_PROBES, auto_dtype, cpu_bf16_units, fast_bf16_reason
from phenaki_core.training import TrainConfig, Trainer


def report_cpu(monkeypatch, **flags):
    """Make torch report these CPU feature flags (by unit name: AMX, AVX512-BF16; others False)."""
    for name, probe in CPU_BF16_PROBES:
        monkeypatch.setattr(torch.cpu, probe, lambda value=flags.get(name, False): value, raising=False)


@pytest.mark.parametrize(("flags", "units"), [({"AVX512-BF16": True}, "AVX512-BF16"),
                                              ({"AMX": True, "AVX512-BF16": True}, "AMX"), ({}, None)])
def test_the_cpu_units_are_what_torch_reports(monkeypatch, flags, units):
    report_cpu(monkeypatch, **flags)
    assert cpu_bf16_units() == units
    assert auto_dtype(torch.device("cpu")) == (torch.bfloat16 if units else torch.float32)


def test_a_cpu_that_cannot_be_asked_gets_fp32(monkeypatch):
    def broken():
        raise RuntimeError("cpuinfo failed to initialize")

    for _, probe in CPU_BF16_PROBES:
        monkeypatch.setattr(torch.cpu, probe, broken, raising=False)
    assert cpu_bf16_units() is None
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_auto_dtype_says_what_it_chose_and_how_to_override_it_in_one_line(monkeypatch, caplog):
    report_cpu(monkeypatch, **{"AVX512-BF16": True})
    with caplog.at_level(logging.INFO, logger="phenaki_core.precision"):
        assert resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16
    (record,) = caplog.records
    assert "bf16" in record.message and "AVX512-BF16" in record.message and "fp32" in record.message
    caplog.clear()
    report_cpu(monkeypatch)
    with caplog.at_level(logging.INFO, logger="phenaki_core.precision"):
        assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    (record,) = caplog.records
    assert "fp32" in record.message


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16"])
def test_an_explicit_dtype_is_never_overridden(monkeypatch, name):
    report_cpu(monkeypatch, AMX=True)
    assert resolve_dtype(name, torch.device("cpu")) == {"fp32": torch.float32, "bf16": torch.bfloat16,
                                                        "fp16": torch.float16}[name]


@pytest.mark.parametrize(("capability", "fast"), [((8, 0), True), ((9, 0), True), ((7, 5), False)])
def test_cuda_is_bf16_from_ampere_on(monkeypatch, capability, fast):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    assert (fast_bf16_reason(torch.device("cuda")) is not None) == fast
    assert auto_dtype(torch.device("cuda:0")) == (torch.bfloat16 if fast else torch.float32)


def test_other_devices_get_fp32(monkeypatch):
    report_cpu(monkeypatch, AMX=True)
    assert auto_dtype(torch.device("mps")) == torch.float32


@pytest.mark.parametrize(("precision", "flags", "expected"), [
    ("auto", {"AVX512-BF16": True}, torch.bfloat16), ("auto", {}, None),
    ("fp32", {"AMX": True}, None), ("bf16", {}, torch.bfloat16)])
def test_the_trainer_autocasts_as_the_precision_setting_resolves(monkeypatch, tmp_path, caplog, precision, flags,
                                                                 expected):
    report_cpu(monkeypatch, **flags)
    cfg = TrainConfig(stage="tokenizer", steps=1, batch_size=2, warmup_steps=1, precision=precision)
    with caplog.at_level(logging.INFO, logger="phenaki_core.precision"):
        trainer = Trainer(tmp_path, preset("tiny-shapes"), cfg, progress=False)
    assert trainer.autocast_dtype == expected
    assert len(caplog.records) == (1 if precision == "auto" else 0)
    if expected is not None:  # the step really runs in bf16
        with trainer.autocast():
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
