"""Column names of the three tables every dataset becomes (Kion's schema), in one place.

Code refers to ``Columns.User`` rather than the string, so a misspelt column fails on import instead of at a
KeyError deep in a pipeline, and every use of a column can be found. The public API's JSON field names are the
pydantic models' (recsys/serving/schemas.py), a contract of their own.
"""

from __future__ import annotations

from typing import Final


class Columns:
    """Names of the interactions, users and items tables' columns."""

    # interactions
    User: Final = "user_id"
    Item: Final = "item_id"
    Datetime: Final = "last_watch_dt"  # when the user last watched the item
    Duration: Final = "total_dur"      # seconds watched in total
    WatchedPct: Final = "watched_pct"  # share of the item watched, 0..100
    # users
    Age: Final = "age"
    Income: Final = "income"
    Sex: Final = "sex"
    KidsFlg: Final = "kids_flg"
    # items
    ContentType: Final = "content_type"
    Title: Final = "title"
    ReleaseYear: Final = "release_year"
    Genres: Final = "genres"
    Countries: Final = "countries"
    ForKids: Final = "for_kids"
    AgeRating: Final = "age_rating"
    Studios: Final = "studios"
    Directors: Final = "directors"

    Interactions: Final = (User, Item, Datetime, Duration, WatchedPct)
    Users: Final = (User, Age, Income, Sex, KidsFlg)
    Items: Final = (Item, ContentType, Title, ReleaseYear, Genres, Countries, ForKids, AgeRating, Studios, Directors)
