"""scripts/bench_infer.py runs at tiny size on CPU and reports every mode."""

import json

from repo_scripts import load_script


def test_bench_infer_tiny_cpu(tmp_path):
    bench = load_script("scripts/bench_infer.py")
    out = tmp_path / "bench.json"
    bench.main(["--tiny", "--device", "cpu", "--batch_sizes", "1", "3", "--iterations", "2", "--rounds", "1",
                "--num_inference_steps", "2", "--out", str(out)])
    report = json.loads(out.read_text())
    assert (report["tiny"] and report["image_size"] == 64
            and set(report["modes"]) == {"official", "ours_b1", "ours_batched"})
    official, b1, batched = (report["modes"][k] for k in ("official", "ours_b1", "ours_batched"))
    assert official["settings"]["ssim_backend"] == "skimage" and official["settings"]["attention_slicing"]
    assert b1["settings"]["ssim_backend"] == "torch" and not b1["settings"]["compile"]  # no compile on CPU
    assert not official["settings"]["fast_cuda"] and not b1["settings"]["fast_cuda"]  # CPU: no CUDA-only settings
    assert [r["batch_size"] for r in batched["batches"]] == [1, 3]
    for mode in (official, b1, batched):
        for row in mode["batches"]:
            assert row["image_iterations"] == row["batch_size"] * 2  # rounds=1 job per slot, 2 iterations each
            assert row["image_iterations_per_s"] > 0
            assert abs(row["s_per_image_iteration"] * row["image_iterations_per_s"] - 1) < 1e-9
        assert mode["best_batch_size"] in [r["batch_size"] for r in mode["batches"]]
    assert b1["speedup_vs_official"] > 0 and batched["speedup_vs_official"] > 0
