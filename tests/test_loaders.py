"""Loaders for real datasets, fed tiny files written in the exact published formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.files import read_table
from recsys.data.kion import load_kion
from recsys.data.movielens import age_band, load_movielens_1m, load_movielens_100k
from recsys.data.schema import DataError

# ---------------------------------------------------------------- Kion (comma-separated, header, utf-8)

KION_INTERACTIONS = """user_id,item_id,last_watch_dt,total_dur,watched_pct
176549,9506,2021-05-11,4250,72.0
176549,1659,2021-05-29,8317,100.0
699317,1659,2021-05-29,8317,
656683,7107,2021-05-09,10,0.0
"""
KION_USERS = """user_id,age,income,sex,kids_flg
176549,age_25_34,income_60_90,М,1
699317,age_18_24,income_20_40,Ж,0
656683,,,,0
"""
KION_ITEMS = """item_id,content_type,title,title_orig,release_year,genres,countries,for_kids,age_rating,studios,directors,actors,description,keywords
9506,film,Сказка,,2015.0,"мультфильм, сказки",Россия,1.0,6.0,,Иван Иванов,,"Сказка, о которой ""все"" говорят",
1659,series,Сериал,Series,,драмы,США,,16.0,HBO,,Actor One,,"драма, сериал"
7107,film,Фильм,Film,2001.0,,,0.0,,,,,,
"""


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def kion_dir(tmp_path: Path) -> Path:
    write(tmp_path / "interactions.csv", KION_INTERACTIONS)
    write(tmp_path / "users.csv", KION_USERS)
    write(tmp_path / "items.csv", KION_ITEMS)
    return tmp_path


def test_kion_loads_and_normalizes(kion_dir: Path) -> None:
    ds = load_kion(kion_dir)
    assert ds.name == "kion"
    inter = ds.interactions
    assert inter["last_watch_dt"].dtype == "datetime64[ns]"
    assert inter["last_watch_dt"].is_monotonic_increasing
    assert inter["user_id"].dtype == np.int64 and inter["item_id"].dtype == np.int64
    assert inter["watched_pct"].dtype == np.float32
    row = inter[(inter.user_id == 176549) & (inter.item_id == 9506)].iloc[0]
    assert row["total_dur"] == 4250 and row["watched_pct"] == pytest.approx(72.0)
    assert inter.loc[inter.user_id == 699317, "watched_pct"].item() == 0  # missing -> 0

    users = ds.users.set_index("user_id")
    assert users.loc[176549, "sex"] == "M" and users.loc[699317, "sex"] == "F"
    assert users.loc[656683, ["age", "income", "sex"]].tolist() == ["unknown", "unknown", "unknown"]
    assert users.loc[176549, "kids_flg"] == 1 and users["kids_flg"].dtype == np.int8

    items = ds.items.set_index("item_id")
    assert items.loc[9506, "age_rating"] == "6+"
    assert items.loc[1659, "age_rating"] == "16+"
    assert items.loc[7107, "age_rating"] == ""
    assert items["for_kids"].tolist() == [1, 0, 0]
    assert items.loc[9506, "genres"] == "мультфильм, сказки"
    assert np.isnan(items.loc[1659, "release_year"]) and items.loc[7107, "release_year"] == 2001
    # extra published columns are kept, quoted commas and doubled quotes survive
    assert items.loc[9506, "description"] == 'Сказка, о которой "все" говорят'
    assert items.loc[1659, "title_orig"] == "Series" and items.loc[7107, "keywords"] == ""


def test_kion_other_sex_values_are_kept(kion_dir: Path) -> None:
    write(kion_dir / "users.csv", "user_id,age,income,sex,kids_flg\n1,age_25_34,income_60_90,X,0\n")
    assert load_kion(kion_dir).users["sex"].tolist() == ["X"]


def test_kion_missing_file(kion_dir: Path) -> None:
    (kion_dir / "users.csv").unlink()
    with pytest.raises(DataError, match=r"users\.csv.*not found.*expected 'users\.csv' in folder"):
        load_kion(kion_dir)


def test_kion_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder does not exist"):
        load_kion(tmp_path / "nope")


def test_kion_missing_column(kion_dir: Path) -> None:
    write(kion_dir / "interactions.csv", "user_id,item_id,last_watch_dt,total_dur\n1,2,2021-05-11,10\n")
    with pytest.raises(DataError) as err:
        load_kion(kion_dir)
    message = str(err.value)
    assert "interactions.csv" in message and "['watched_pct']" in message and "total_dur" in message


def test_kion_wrong_separator(kion_dir: Path) -> None:
    write(kion_dir / "interactions.csv", KION_INTERACTIONS.replace(",", ";"))
    with pytest.raises(DataError, match=r"interactions\.csv.*separator is not ','.*';'"):
        load_kion(kion_dir)


def test_kion_non_numeric_id(kion_dir: Path) -> None:
    write(kion_dir / "interactions.csv", KION_INTERACTIONS.replace("656683,7107", "abc,7107"))
    with pytest.raises(DataError, match=r"interactions\.csv.*'user_id'.*'abc'"):
        load_kion(kion_dir)


def test_kion_header_only_table(kion_dir: Path) -> None:
    write(kion_dir / "items.csv", KION_ITEMS.splitlines()[0] + "\n")
    with pytest.raises(DataError, match=r"items\.csv.*no rows"):
        load_kion(kion_dir)


def test_kion_empty_file(kion_dir: Path) -> None:
    write(kion_dir / "users.csv", "")
    with pytest.raises(DataError, match=r"users\.csv.*empty"):
        load_kion(kion_dir)


def test_kion_not_utf8(kion_dir: Path) -> None:
    """Regression: the bad byte on line 2 was reported at 'position 3' (an offset in pandas' decoding chunk)."""
    header = KION_ITEMS.splitlines()[0]
    (kion_dir / "items.csv").write_bytes(header.encode() + "\n1,film,Сказка S".encode() + b"\xe9rie,,,,,,,,,,,\n")  # cp1252 'é'
    with pytest.raises(DataError, match=r"items\.csv: not valid utf-8 text \(bad byte at line 2, column 16\)"):
        load_kion(kion_dir)


# ---------------------------------------------------------------- MovieLens 100K (tab / pipe, no header, latin-1)

U_DATA = "\n".join([
    "196\t242\t3\t881250949",
    "186\t302\t3\t891717742",
    "196\t302\t4\t881250950",
    "22\t242\t5\t878887116",
    "22\t1682\t4.5\t878887117",
]) + "\n"
U_USER = "196|49|M|writer|55105\n186|39|F|executive|00000\n22|17|M|student|T8H1N\n"


def u_item_line(item_id: int, title: str, date: str, on: list[int]) -> str:
    flags = "|".join("1" if i in on else "0" for i in range(19))
    return f"{item_id}|{title}|{date}||http://us.imdb.com/M/title-exact?x|{flags}"


U_ITEM = "\n".join([
    u_item_line(242, "Kolya (1996)", "24-Jan-1997", [5]),
    u_item_line(302, "L.A. Confidential (1997)", "01-Jan-1997", [6, 10, 13, 16]),
    u_item_line(1682, "Amélie (2001)", "", [3, 4, 5]),  # blank date: year comes from the title
    u_item_line(267, "unknown", "", [0]),
]) + "\n"


@pytest.fixture
def ml100k_dir(tmp_path: Path) -> Path:
    write(tmp_path / "u.data", U_DATA, "latin-1")
    write(tmp_path / "u.user", U_USER, "latin-1")
    write(tmp_path / "u.item", U_ITEM, "latin-1")
    return tmp_path


def test_movielens_100k(ml100k_dir: Path) -> None:
    ds = load_movielens_100k(ml100k_dir)
    inter = ds.interactions
    assert ds.name == "movielens-100k" and ds.meta["rating_threshold"] == 4.0
    # 3-star ratings are dropped; the rest are sorted by time
    assert list(zip(inter.user_id, inter.item_id, strict=True)) == [(22, 242), (22, 1682), (196, 302)]
    assert inter["rating"].dtype == np.float32 and inter["rating"].tolist() == [5.0, 4.5, 4.0]
    assert inter["watched_pct"].tolist() == [100.0, 90.0, 80.0]
    assert (inter["total_dur"] == 0).all()
    assert inter["last_watch_dt"].dtype == "datetime64[ns]"
    assert inter["last_watch_dt"].iloc[2] == pd.Timestamp("1997-12-04 15:55:50")  # 881250950 UTC

    users = ds.users.set_index("user_id")
    assert users.loc[196, "age"] == "age_45_54" and users.loc[186, "age"] == "age_35_44"
    assert users.loc[22, "age"] == "age_0_17"
    assert users["sex"].tolist() == ["M", "F", "M"] and (users["income"] == "unknown").all()
    assert (users["kids_flg"] == 0).all() and users.loc[186, "occupation"] == "executive"

    items = ds.items.set_index("item_id")
    assert items.loc[1682, "title"] == "Amélie (2001)"
    assert items.loc[242, "genres"] == "Comedy"
    assert items.loc[302, "genres"] == "Crime, Film-Noir, Mystery, Thriller"
    assert items.loc[1682, "genres"] == "Animation, Children's, Comedy"
    assert items.loc[267, "genres"] == ""
    assert items["for_kids"].tolist() == [0, 0, 1, 0]
    assert items.loc[242, "release_year"] == 1997 and items.loc[1682, "release_year"] == 2001
    assert np.isnan(items.loc[267, "release_year"])
    assert (items["content_type"] == "film").all() and (items["age_rating"] == "").all()


def test_movielens_100k_keeps_the_titles_rated_below_the_threshold_as_dismissed(ml100k_dir: Path) -> None:
    """Not positives, but seen: the models never recommend them to that user."""
    dismissed = load_movielens_100k(ml100k_dir).dismissed
    assert list(zip(dismissed.user_id, dismissed.item_id, strict=True)) == [(196, 242), (186, 302)]
    assert dismissed["last_watch_dt"].iloc[0] == pd.Timestamp("1997-12-04 15:55:49")
    assert load_movielens_100k(ml100k_dir).summary()["dismissed"] == 2
    assert len(load_movielens_100k(ml100k_dir, rating_threshold=3.0).dismissed) == 0


def test_movielens_100k_threshold_is_configurable(ml100k_dir: Path) -> None:
    assert len(load_movielens_100k(ml100k_dir, rating_threshold=3.0).interactions) == 5
    assert len(load_movielens_100k(ml100k_dir, rating_threshold=5.0).interactions) == 1


def test_movielens_100k_no_positive_ratings(ml100k_dir: Path) -> None:
    write(ml100k_dir / "u.data", U_DATA.replace("\t5\t", "\t3\t").replace("\t4.5\t", "\t3\t"), "latin-1")
    with pytest.raises(DataError, match=r"u\.data.*none of the 5 ratings is >= the rating threshold 4\.5 "
                                        r"\(highest is 4\).*--rating-threshold.*RECSYS_DATA__RATING_THRESHOLD"):
        load_movielens_100k(ml100k_dir, rating_threshold=4.5)


def test_movielens_100k_comma_separated_u_data(ml100k_dir: Path) -> None:
    write(ml100k_dir / "u.data", U_DATA.replace("\t", ","), "latin-1")
    with pytest.raises(DataError, match=r"u\.data.*1 field.*expected 4.*separator is not '\\t'.*','"):
        load_movielens_100k(ml100k_dir)


def test_movielens_100k_non_numeric_rating(ml100k_dir: Path) -> None:
    write(ml100k_dir / "u.data", U_DATA.replace("\t3\t881250949", "\tgood\t881250949"), "latin-1")
    with pytest.raises(DataError, match=r"u\.data.*'rating'.*'good'.*row 1"):
        load_movielens_100k(ml100k_dir)


def test_movielens_100k_non_numeric_item_id(ml100k_dir: Path) -> None:
    write(ml100k_dir / "u.item", U_ITEM.replace("242|Kolya", "x242|Kolya"), "latin-1")
    with pytest.raises(DataError, match=r"u\.item.*'item_id'.*'x242'"):
        load_movielens_100k(ml100k_dir)


def test_movielens_100k_line_with_extra_field(ml100k_dir: Path) -> None:
    write(ml100k_dir / "u.user", U_USER + "7|57|M|administrator|91344|extra\n", "latin-1")
    with pytest.raises(DataError, match=r"u\.user.*line 4.*separator is not '\|'"):
        load_movielens_100k(ml100k_dir)


def test_movielens_100k_truncated_line(ml100k_dir: Path) -> None:
    write(ml100k_dir / "u.data", U_DATA + "5\t6\t4\n", "latin-1")
    with pytest.raises(DataError, match=r"u\.data.*'timestamp'.*1 empty.*row 6"):
        load_movielens_100k(ml100k_dir)


# ---------------------------------------------------------------- MovieLens 1M ('::', no header, latin-1)

RATINGS_DAT = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n2::2324::5::978299000\n"
USERS_DAT = "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n"
MOVIES_DAT = (
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    "2324::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance\n"
    "260::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi\n"
    "9999::\"Untitled\" project::Documentary\n"
)


@pytest.fixture
def ml1m_dir(tmp_path: Path) -> Path:
    write(tmp_path / "ratings.dat", RATINGS_DAT, "latin-1")
    write(tmp_path / "users.dat", USERS_DAT, "latin-1")
    write(tmp_path / "movies.dat", MOVIES_DAT, "latin-1")
    return tmp_path


def test_movielens_1m(ml1m_dir: Path) -> None:
    ds = load_movielens_1m(ml1m_dir)
    inter = ds.interactions
    assert ds.name == "movielens-1m"
    assert list(zip(inter.user_id, inter.item_id, strict=True)) == [(2, 1193), (2, 2324), (1, 1193)]
    assert inter["rating"].dtype == np.float32 and inter["rating"].tolist() == [4.0, 5.0, 5.0]
    assert inter["watched_pct"].tolist() == [80.0, 100.0, 100.0]
    assert inter["last_watch_dt"].iloc[2] == pd.Timestamp("2000-12-31 22:12:40")  # 978300760 UTC

    users = ds.users.set_index("user_id")
    assert users["age"].tolist() == ["age_0_17", "age_55_64", "age_25_34"]
    assert users["sex"].tolist() == ["F", "M", "M"]
    assert users["occupation"].tolist() == ["10", "16", "15"]
    assert users["occupation"].map(type).eq(str).all()

    items = ds.items.set_index("item_id")
    assert items.loc[2324, "title"] == "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
    assert items.loc[2324, "release_year"] == 2001 and items.loc[260, "release_year"] == 1977
    assert np.isnan(items.loc[9999, "release_year"]) and items.loc[9999, "title"] == '"Untitled" project'
    assert items.loc[260, "title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert items.loc[661, "genres"] == "Animation, Children's, Musical"
    assert items["for_kids"].tolist() == [0, 1, 0, 0, 0]


def test_movielens_1m_missing_file(ml1m_dir: Path) -> None:
    (ml1m_dir / "ratings.dat").unlink()
    with pytest.raises(DataError, match=rf"expected 'ratings\.dat' in folder {ml1m_dir}"):
        load_movielens_1m(ml1m_dir)


def test_movielens_1m_wrong_separator(ml1m_dir: Path) -> None:
    write(ml1m_dir / "ratings.dat", RATINGS_DAT.replace("::", "\t"), "latin-1")
    with pytest.raises(DataError, match=r"ratings\.dat.*separator is not '::'.*'\\t'"):
        load_movielens_1m(ml1m_dir)


def test_movielens_1m_empty_ratings(ml1m_dir: Path) -> None:
    write(ml1m_dir / "ratings.dat", "\n\n", "latin-1")
    with pytest.raises(DataError, match=r"ratings\.dat.*empty"):
        load_movielens_1m(ml1m_dir)


# ---------------------------------------------------------------- helpers

def test_age_band_edges() -> None:
    ages = pd.Series([1, 17, 18, 24, 25, 34, 35, 44, 45, 50, 54, 55, 56, 64, 65, 90, np.nan])
    assert age_band(ages).tolist() == [
        "age_0_17", "age_0_17", "age_18_24", "age_18_24", "age_25_34", "age_25_34", "age_35_44", "age_35_44",
        "age_45_54", "age_45_54", "age_45_54", "age_55_64", "age_55_64", "age_55_64", "age_65_inf",
        "age_65_inf", "unknown",
    ]


def test_read_table_headed_single_column_is_a_separator_problem(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a|b|c\n1|2|3\n")
    with pytest.raises(DataError, match=r"t\.csv.*single column.*separator is not ','.*'\|'"):
        read_table(path, sep=",", required=["a", "b"])


def test_read_table_only_empty_fields_are_missing(tmp_path: Path) -> None:
    path = write(tmp_path / "u.user", "1|NA|None\n2||null\n")
    frame = read_table(path, sep="|", header=False, names=["id", "a", "b"])
    assert frame["a"].tolist()[0] == "NA" and pd.isna(frame["a"].tolist()[1])
    assert frame["b"].tolist() == ["None", "null"]
