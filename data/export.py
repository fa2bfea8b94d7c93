"""Write any dataset in the public Kion file format, so it can be reloaded with `--dataset kion`."""

from __future__ import annotations

from pathlib import Path

from data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, Dataset


def write_kion(dataset: Dataset, directory: Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    interactions = dataset.interactions[INTERACTION_COLUMNS].copy()
    interactions["last_watch_dt"] = interactions["last_watch_dt"].dt.strftime("%Y-%m-%d")
    interactions.to_csv(directory / "interactions.csv", index=False)
    dataset.users[USER_COLUMNS].to_csv(directory / "users.csv", index=False)
    dataset.items[ITEM_COLUMNS].to_csv(directory / "items.csv", index=False)
