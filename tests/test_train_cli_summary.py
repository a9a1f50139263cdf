"""train.py says when it resumed and ends with where everything went, as full paths (issue 9, item 6)."""

import json

from emoeditor.cli import train as train_cli
from emoeditor.models.tiny import TINY_ENCODER_HIDDEN


def test_stop_resume_and_the_final_summary(tmp_path, tiny_base_dir, toy_emopair, monkeypatch, capsys):
    root, json_path = toy_emopair
    monkeypatch.chdir(tmp_path)  # relative output folders, as a user types them; the report gives full paths
    argv = ["--base_model", str(tiny_base_dir), "--json_path", str(json_path), "--data_root", str(root),
            "--image_size", "64", "--encoder_hidden", *map(str, TINY_ENCODER_HIDDEN), "--batch_size", "4", "--cpu",
            "--num_workers", "0", "--mixed_precision", "no", "--max_steps", "3", "--checkpoint_every", "0",
            "--image_every", "0", "--save_model_dir", "run/models", "--train_save_dir", "run/logs", "--no_progress"]
    models, logs = (tmp_path / "run" / "models").resolve(), (tmp_path / "run" / "logs").resolve()

    assert train_cli.main(argv + ["--stop_at_step", "1"]) is None
    out = capsys.readouterr().out
    assert f"stopped at step 1 (--stop_at_step), not exported; checkpoint: {models}/checkpoints/step_00000001" in out
    assert "--resume latest" in out

    export = train_cli.main(argv + ["--resume", "latest"])
    captured = capsys.readouterr()
    assert "resumed from step 1 (" in captured.err and "2 of 3 steps to go" in captured.err, captured.err
    out = captured.out
    assert "training done: 3 steps (resumed from step 1)" in out, out
    assert f"exported model:   {models / 'model'}" in out
    assert f"run summary:      {models / 'model' / 'training_summary.json'}" in out
    assert f"last checkpoint:  {models / 'checkpoints' / 'step_00000003'}" in out
    assert f"logs and strips:  {logs}" in out and f"tensorboard --logdir {logs / 'tensorboard'}" in out
    assert "24 pairs; 0 of 24 entries dropped by validation, 0 pairs skipped mid-run" in out

    summary = json.loads((export / "training_summary.json").read_text())
    assert summary["resumed_from_step"] == 1 and summary["steps"] == 3
    assert summary["export_dir"] == str(models / "model") and summary["train_save_dir"] == str(logs)

    # --quiet keeps the report (the run's result, on stdout) and drops the log lines.
    export = train_cli.main(argv + ["--resume", "latest", "--max_steps", "4", "--quiet"])
    captured = capsys.readouterr()
    assert "training done: 4 steps (resumed from step 3)" in captured.out and "resumed from" not in captured.err
