import pytest

from mtlrec.data_pipeline import DataValidationError, list_days, resolve_days, select_days
from mtlrec.data_pipeline.partitions import day_files


@pytest.fixture
def root(tmp_path):
    for day in ["2024-01-03", "2024-01-01", "2024-01-02", "2024-02-10"]:
        d = tmp_path / f"dt={day}"
        d.mkdir()
        (d / "part-00000.parquet").write_bytes(b"x")
    (tmp_path / "dt=2024-13-01").mkdir()  # not a date
    (tmp_path / "dt=2024-01-04").write_text("a file, not a partition")
    (tmp_path / "other").mkdir()
    return tmp_path


def test_list_days_sorted_and_filtered(root, tmp_path_factory):
    assert list_days(root) == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-02-10"]
    assert list_days(tmp_path_factory.mktemp("empty") / "missing") == []


def test_select_days(root):
    assert select_days(root) == list_days(root)
    assert select_days(root, day="2024-01-02") == ["2024-01-02"]
    assert select_days(root, days="2024-01-02:2024-01-03") == ["2024-01-02", "2024-01-03"]
    assert select_days(root, days="2024-01-03:") == ["2024-01-03", "2024-02-10"]
    assert select_days(root, days=":2024-01-01") == ["2024-01-01"]
    assert resolve_days(root, ["2024-02-10", "2024-01-01"]) == ["2024-02-10", "2024-01-01"]
    assert resolve_days(root, "2024-01-01:2024-01-02") == ["2024-01-01", "2024-01-02"]


def test_select_days_errors(root):
    with pytest.raises(DataValidationError, match=r"dt=2024-01-05: day 2024-01-05 missing \(days present: 2024-01-01"):
        select_days(root, day="2024-01-05")
    with pytest.raises(DataValidationError, match="no day partitions match 2025-01-01:"):
        select_days(root, days="2025-01-01:")
    with pytest.raises(ValueError, match=r"Expected day as YYYY-MM-DD. Received: day='2024/01/01'"):
        select_days(root, day="2024/01/01")
    with pytest.raises(ValueError, match=r'Expected days as "A:B"'):
        select_days(root, days="2024-01-01")
    with pytest.raises(ValueError, match="Give day or days, not both"):
        select_days(root, day="2024-01-01", days="2024-01-01:")


def test_day_files(root):
    d = root / "dt=2024-01-01"
    (d / "part-00001.parquet").write_bytes(b"x")
    (d / ".part-00002.parquet.tmp").write_bytes(b"x")
    (d / "_SUCCESS").write_bytes(b"")
    (d / "part-00000.tfrecord.gz").write_bytes(b"x")
    (d / "part-00001.tfrecord").write_bytes(b"x")
    assert [p.rsplit("/", 1)[1] for p in day_files(root, "2024-01-01", "parquet")] == ["part-00000.parquet", "part-00001.parquet"]
    assert [p.rsplit("/", 1)[1] for p in day_files(root, "2024-01-01", "tfrecord")] == ["part-00000.tfrecord.gz", "part-00001.tfrecord"]
    with pytest.raises(DataValidationError, match="day 2024-01-02 is empty: no tfrecord files") as err:
        day_files(root, "2024-01-02", "tfrecord")
    assert err.value.file.endswith("dt=2024-01-02")
    with pytest.raises(ValueError, match="Received: fmt='csv'"):
        day_files(root, "2024-01-02", "csv")


def test_tfrecords_names_are_read_and_an_empty_day_names_what_it_saw(tmp_path):
    d = tmp_path / "dt=2024-01-01"
    d.mkdir()
    for name in ("part-0.tfrecords", "part-1.tfrecords.gz", "part-2.tfrecord.gz", "notes.txt", "_SUCCESS"):
        (d / name).write_bytes(b"x")
    assert [p.rsplit("/", 1)[1] for p in day_files(tmp_path, "2024-01-01", "tfrecord")] == [
        "part-0.tfrecords", "part-1.tfrecords.gz", "part-2.tfrecord.gz"
    ]
    with pytest.raises(DataValidationError) as err:
        day_files(tmp_path, "2024-01-01", "parquet")
    assert str(err.value).endswith(
        "day 2024-01-01 is empty: no parquet files (reading names ending .parquet; files present: "
        "_SUCCESS, notes.txt, part-0.tfrecords, part-1.tfrecords.gz, part-2.tfrecord.gz)"
    )
