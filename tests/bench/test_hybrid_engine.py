
import pytest


@pytest.mark.slow
def test_rollout_benchmark_script_runs_and_agrees():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "rollout_zero3.py"
    spec = importlib.util.spec_from_file_location("rollout_zero3", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--layers", "2", "--hidden", "64", "--batch", "2", "--new_tokens", "4", "--repeats", "1"])
    assert res["greedy_equal_to_plain"] == {"hybrid_engine": True, "zero3_engine_generate": True}
    assert set(res["seconds"]) == {"hybrid_engine", "zero3_engine_generate", "plain_hf_generate"}
    assert all(v > 0 for v in res["seconds"].values())


@pytest.mark.slow
def test_step3_throughput_benchmark_measures_every_phase(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "step3_throughput.py"
    spec = importlib.util.spec_from_file_location("step3_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "bench.jsonl"
    res = mod.main(["--actor", "64,2,2,128", "--critic", "32,1,2,64", "--prompt_len", "8", "--answer_len", "4",
                    "--batch", "2", "--steps", "1", "--warmup", "0", "--json", str(out), "--offload_idle_models",
                    "--critic_zero_stage", "2"])
    assert json.loads(out.read_text()) == res
    assert res["greedy_equal_to_plain"] == {"hybrid_engine": True, "engine_generate": True}
    # phases are measured separately and must fit inside the measured step (JSON rounded to 1 ms)
    assert res["step_s"] >= res["generation_s"] + res["training_s"] - 2e-3
    assert all(v > 0 for v in res["tflops"].values()) and res["peak_memory_gb"] > 0
    assert res["offload_idle_models"] and set(res["phase_peak_memory_gb"]) == {"generation", "experience", "training"}
    # against this machine's limits: the decode reads the actor's weights at a fraction of the memory bandwidth
    assert res["machine"]["memory_gbps"] > 0 and res["machine"]["matmul_gflops"] > 0
    assert 0 < res["decode_bandwidth_fraction"] < 1 and 0 < res["training_matmul_fraction"] < 1
    assert all(0 < v <= res["peak_memory_gb"] + 1e-3 for v in res["phase_peak_memory_gb"].values())
    # reading every weight once at memory bandwidth is a floor that a measured decode step cannot beat
    assert 0 < res["decode_floor_ms"] < res["decode_ms_per_step"]
    assert set(res["rollout_s"]) == {"hybrid_engine", "plain_hf_generate", "engine_generate"}
