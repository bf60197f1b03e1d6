import numpy as np
import pandas as pd
import pytest

from ruleeraser.inputs import to_tensor


def test_nullable_and_arrow_backed_numbers_feed_the_patch():
    frame = pd.DataFrame({"a": [1.5, 2.0], "b": [3, 4]}).astype(
        {"a": "float64[pyarrow]", "b": "Int64"}
    )
    np.testing.assert_array_equal(to_tensor(frame).numpy(), [[1.5, 3.0], [2.0, 4.0]])


def test_text_columns_are_refused_not_parsed():
    with pytest.raises(TypeError, match="encode categorical columns first"):
        to_tensor(pd.DataFrame({"a": ["1.5", "2"]}))


def test_a_csv_row_with_more_fields_than_the_header_is_named(tmp_path):
    from ruleeraser.tables import TableFileError, iter_table, read_table

    path = tmp_path / "rows.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6,7\n")
    with pytest.raises(TableFileError, match=r"rows.csv.*Expected 3 fields in line 3, saw 4"):
        read_table(path, ["a", "b"])
    with pytest.raises(TableFileError, match=r"rows.csv.*Expected 3 fields in line 3, saw 4"):
        list(iter_table(path, ["a", "b"], chunk_rows=10))
