"""The run directory's files: config.json and metrics.csv."""




def test_metrics_log_is_rewritten_atomically_and_skips_bad_lines(tmp_path):
    from resnet_cifar.runfiles.run_files import MetricsLog

    log = MetricsLog(tmp_path / "metrics.csv")
    for epoch in (1, 2, 3):
        log.append({"epoch": epoch, "lr": 0.1, "train_loss": 1.0})
    with open(log.path, "a") as f:
        f.write("garbage,\n")  # e.g. a file edited by hand or written by another tool
    log.truncate_after(2)
    assert [row["epoch"] for row in log.rows()] == ["1", "2"]
