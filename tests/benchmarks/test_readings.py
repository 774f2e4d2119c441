"""The readings of benchmarks/RESULTS.md, the CHANGELOG, the README and the preset catalogue quote figures
computed from RESULTS.md's tables (benchmarks/quotes.py): a figure that drifts from its table, or a table
re-run under an old reading, fails here."""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import quotes  # noqa: E402 - benchmarks/ is a folder of scripts, not a package
import readings  # noqa: E402

# Figures of the issue-26 reading that are settings, not results (a learning rate, a step, a commit): every
# other number in it must stand inside a phrase computed from the table.
SETTINGS_26 = {"26", "200", "2e-4", "0.99", "1e-4", "4e-4", "0.9", "0.999", "0", "400", "1000", "0.16", "50001", "4.5e-6", "0.1", "64", "128"}
_FIGURE = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e-?\d+)?")


@pytest.mark.parametrize("quote", quotes.QUOTES, ids=lambda q: f"{q.document.name}:{q.phrase[:40]}")
def test_every_quoted_figure_is_the_tables(quote):
    rendered = readings.flat(quote.render())
    found = rendered in readings.flat(quote.document.read_text())
    assert found, f"{quote.document.name} should say: {rendered}"


def test_the_issue_26_reading_quotes_no_figure_the_table_does_not_give():
    text = readings.RESULTS.read_text()
    reading = readings.flat(text[text.index("**Reading (issue 26).**") :])
    for quote in quotes.QUOTES:
        if quote.section == quotes.RACE_26 and quote.document == readings.RESULTS:
            reading = reading.replace(readings.flat(quote.render()), " ")
    unexplained = set(_FIGURE.findall(reading)) - SETTINGS_26
    assert not unexplained, f"figures of the issue-26 reading no phrase computes: {sorted(unexplained)}"


def test_a_figure_that_drifts_from_its_table_fails():
    """Prose that quotes the old range, and a table whose numbers change under the prose: neither matches."""
    text = readings.RESULTS.read_text()
    quote = next(q for q in quotes.QUOTES if q.phrase.startswith("lr 2e-4 beats"))
    old_prose = text.replace("1e-4 by 0.47-0.84 dB", "1e-4 by 0.5-0.7 dB")
    assert readings.flat(quote.render(old_prose)) not in readings.flat(old_prose)
    table = readings.section_text(quotes.RACE_26, text)
    rerun = text.replace(table, table.replace("| 14.45 / 0.4117 |", "| 14.95 / 0.4117 |"))  # ms_ssim_l1 on Tiny-ImageNet
    quote = next(q for q in quotes.QUOTES if q.phrase.startswith("but {} dB less PSNR"))
    assert readings.flat(quote.render(rerun)) not in readings.flat(rerun)


def test_a_claim_in_words_the_table_no_longer_supports_fails():
    text = readings.RESULTS.read_text()
    table = readings.section_text(quotes.RACE_26, text)
    overtaken = text.replace(table, table.replace("| 19.39 / 0.4859 |", "| 19.45 / 0.4859 |"))  # gan_start=0 ahead on clothing_64
    quote = next(q for q in quotes.QUOTES if q.phrase.startswith("the highest PSNR on the 64 / 128 px"))
    with pytest.raises(readings.Contradicted):
        quote.render(overtaken)


def test_tables_parse_each_cells_numbers():
    rows = readings.tables(quotes.RACE_26)[0]
    assert len(rows) == 14 and readings.cell(rows, "ms_ssim_l1", "clothing_native", 1) == 0.6109
    assert rows["ms_ssim_l1"][next(h for h in rows["tiny"] if h.startswith("ΔE00"))] == [13.47, -20.9, -13.5, -14.1]
    families = readings.tables("families")[0]
    assert set(families) == {"kl", "dc", "taesd"} and readings.cell(families, "dc", "steps") == 2802
