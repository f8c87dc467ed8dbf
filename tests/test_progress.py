"""Progress output: plain lines when the output is a log, not a terminal."""


from resnet_cifar.utils import progress


def test_progress_in_a_log_is_plain_lines():
    import io

    stream = io.StringIO()
    bar = progress.LogLines(total=10, desc="epoch 1", interval=0.0, stream=stream)
    bar.update(4)
    bar.set_postfix_str("loss 1.234 acc 50.0%")
    bar.close()
    assert stream.getvalue() == "epoch 1: step 4/10  loss 1.234 acc 50.0%\n"
    assert progress.make_progress(quiet=True) is progress.NoProgress
