"""`bentoml build` packs code and the model pair; the built Bento serves exactly like the source tree."""

from __future__ import annotations

import re
import subprocess
import tomllib
import urllib.request

from tests.helpers import BIN, ROOT, Server, expected, get, load_pair, post, project_env, train, warm_user
from tests.test_lock import SERVING_LOCK, pins


def test_built_bento_serves_its_own_model_pair(tmp_path):
    env = project_env(tmp_path)
    assert train(env, "--size", "tiny").returncode == 0
    build = subprocess.run([str(BIN / "bentoml"), "build"], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    tag = re.search(r"(recsys:[a-z0-9]+)", build.stdout).group(1)
    # the image will install the serving lock, hashes and all
    bento_path = tmp_path / "bentoml" / "bentos" / tag.replace(":", "/")
    assert pins(bento_path / "env" / "python" / "requirements.txt") == pins(SERVING_LOCK)
    # only what serving imports: not the training code, the tools (CLI, benchmark, load test) nor the tests
    src = bento_path / "src"
    assert (src / "service.py").is_file() and (src / "features" / "store.py").is_file()
    assert (src / "recsys" / "core" / "model_store.py").is_file() and (src / "recsys" / "serving").is_dir()
    assert not any((src / folder).exists() for folder in ("training", "recsys/tools", "tests", "scripts", "var"))
    models = sorted((tmp_path / "bentoml" / "models" / "recsys_ranker").iterdir())
    version = next(p.name for p in models if p.name != "latest")
    pair = load_pair(tmp_path, version)

    # A newer pair lands in the store after the build: the Bento must keep serving the pair it was built with.
    assert train(env, "--size", "tiny", "--seed", "8").returncode == 0
    user = warm_user(pair)
    with Server(env, target=tag) as bento:
        status, body = post(f"{bento.url}/recommend", {"user_id": user, "top_k": 10})
        page = get(f"{bento.url}/ui/api/model")[1], get(f"{bento.url}/ui/api/history?user_id={user}")
        info = get(f"{bento.url}/docs.json")[1]["info"]
        static = [urllib.request.urlopen(f"{bento.url}/ui/{path}", timeout=10).status
                  for path in ("", "static/app.js", "static/style.css")]
    assert status == 200, body
    assert body["model_version"] == version
    want_items, _ = expected(pair, user, 10)
    assert [r["item_id"] for r in body["recommendations"]] == want_items
    # the web page's data travels inside the packed ranker model, not in var/
    model, (history_status, history) = page
    assert model["version"] == version and model["showcase_missing"] == "" and model["plots"]
    assert history_status == 200 and history["history"][0]["title"]
    assert static == [200, 200, 200]
    # /docs.json's title and version come from pyproject.toml, packed into the Bento (the package is not installed)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (info["title"], info["version"]) == (project["name"], project["version"])

    # the topology is chosen when serving: the same Bento, fused into one process, answers the same
    with Server(project_env(tmp_path, RECSYS_SERVING__TOPOLOGY="fused"), target=tag) as fused:
        assert set(fused.service_pids()) == {"recommender"}
        assert post(f"{fused.url}/recommend", {"user_id": user, "top_k": 10})[1] == body
