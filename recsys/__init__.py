"""Two-stage recommender: LightFM candidates reranked by CatBoost, served with BentoML.

Layers, each importing only those below it (tests/test_layout.py checks): settings, progress, stopping (this
folder) -> data -> features -> core -> training, serving -> tools.

The product's design keeps ``training/`` and ``features/`` as top-level folders of the repository, yet they are
modules of this package, ``recsys.training`` and ``recsys.features``, so an install registers one name. A wheel has
them inside the package (pyproject.toml maps them in); a source tree (the repository, a Bento's ``src/``) has them
beside it, so there the package also looks for its modules in its parent folder.
"""

from pathlib import Path

if not (Path(__file__).parent / "features").is_dir():
    __path__.append(str(Path(__file__).resolve().parent.parent))
