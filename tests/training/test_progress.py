"""Progress of long work: a tqdm bar of rows on a terminal only, and the time left."""

import io
import logging

from mtlrec.training.progress import row_progress, time_left


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_bar_shows_rows_of_the_total_on_a_terminal_only(caplog):
    with caplog.at_level(logging.INFO, logger="mtlrec"):
        terminal = _Terminal()
        bar = row_progress(3_000_000, "day 2024-01-01", done=1_000_000, stream=terminal)
        bar.update(500_000)
        bar.refresh()
        shown = terminal.getvalue()
        bar.close()
        assert "day 2024-01-01:  50%" in shown and "1.50M/3.00M" in shown and " rows/s]" in shown

        log = io.StringIO()  # a file or a pipe: nothing drawn
        bar = row_progress(3_000_000, "day 2024-01-01", stream=log)
        bar.update(500_000)
        bar.close()
        assert log.getvalue() == ""
    with caplog.at_level(logging.WARNING, logger="mtlrec"):  # -q: no bar either
        terminal = _Terminal()
        row_progress(10, "predict", stream=terminal).close()
        assert terminal.getvalue() == ""


def test_time_left_at_the_rate_so_far():
    assert time_left(1_000, 4_000, 30.0) == "01:30 left"
    assert time_left(100, 100_000, 12.0) == "3:19:48 left"
    assert time_left(0, 10, 1.0) == time_left(5, None, 1.0) == time_left(10, 10, 1.0) == ""
