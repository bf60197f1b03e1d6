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
