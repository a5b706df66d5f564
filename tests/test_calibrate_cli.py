"""`bench calibrate` on the command line: quiet by default with a one-line result; a miss exits 1
naming the nearest value found and its sparsity."""

from __future__ import annotations

from bench import cli


def test_a_miss_is_one_clear_message(tmp_path, capsys):
    argv = ["calibrate", "--pruner", "grda", "--target", "0.999", "--tolerance", "0.001", "--epochs", "1",
            "--search-fraction", "1", "--full-runs", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    (line,) = captured.out.splitlines()  # one line: the result
    assert line.startswith("grda c=") and "(target 0.999)" in line and "1 runs ->" in line
    (message,) = captured.err.splitlines()  # no epoch or trial lines: only why it exits 1
    assert message.startswith("bench calibrate: missed the target sparsity 0.999 +- 0.001: the nearest "
                              "value found, c=")
    assert "gives sparsity 0." in message


def test_verbose_shows_trials_and_epochs(tmp_path, capsys):
    argv = ["calibrate", "--pruner", "grda", "--target", "0.5", "--tolerance", "0.5", "--epochs", "1",
            "--search-fraction", "1", "--full-runs", "1", "--out", str(tmp_path), "-v"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "calibrate grda [full, 1 epochs] c=" in err and "epoch 1/1" in err
