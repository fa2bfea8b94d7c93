"""Write a MovieLens-100k-shaped dataset (``u.data``, ``u.user``, ``u.item``) from the built-in generator.

No network here, so the real MovieLens files cannot be fetched; this gives data of the same shape to measure
`recsys tune` on what the issue's checker runs: 943 users, 1,682 items, ~100k ratings over about seven months,
about 106 ratings per user, in MovieLens' own file format (the synthetic watch share becomes 1-5 stars, see
``data/export.py``), loaded through the same loader as the real files:

    .venv/bin/python scripts/movielens_like.py var/ml100k-like
    .venv/bin/recsys tune --dataset movielens-100k --data-dir var/ml100k-like
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.data import synthetic  # noqa: E402
from recsys.data.export import write_movielens_100k  # noqa: E402

SHAPE = synthetic.SyntheticConfig(n_users=943, n_items=1_682, mean_interactions=106.0, days=215)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write u.data, u.user and u.item to")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    synthetic.SIZES["movielens-like"] = SHAPE  # a preset of this script only, not of the CLI
    dataset = synthetic.generate("movielens-like", seed=args.seed)
    write_movielens_100k(dataset, args.out)
    print(f"{args.out}: {dataset.summary()}")


if __name__ == "__main__":
    main()
