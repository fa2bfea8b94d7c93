"""The web page at /ui of the real service: its JSON endpoints over HTTP, and the page itself in headless Chromium."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from recsys.data.synthetic import generate
from recsys.settings import Settings, get_settings
from tests.browser import chromium, wait_for
from tests.helpers import Server, get, post, project_env

COLD_FEATURES = {"age": "age_25_34", "sex": "F", "kids_flg": 1}


@pytest.fixture(scope="module")
def model(server):
    status, info = get(f"{server.url}/ui/api/model")
    assert status == 200, info
    return info


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chromium")
    with chromium(folder / "profile", folder / "chromedriver.log") as driver:
        yield driver


@pytest.fixture(scope="module")
def reports(trained_home) -> Path:
    """The reports folder of the server under test (its RECSYS_HOME)."""
    reports = Settings(home=Path(project_env(trained_home)["RECSYS_HOME"])).reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    return reports


def test_model_endpoint_describes_the_served_pair(server, model):
    version = post(f"{server.url}/recommend", {"user_id": 0, "top_k": 1})[1]["model_version"]
    assert model["version"] == version
    assert [m["tag"] for m in model["models"]] == [f"recsys_candidates:{version}", f"recsys_ranker:{version}"]
    assert model["dataset"] == "synthetic" and model["showcase_missing"] == ""
    rows = model["report"]["metrics"]["rows"]
    # EASE's row names the L2 weight chosen on the label window
    assert [r[0].split(" (λ=")[0] for r in rows] == ["Popularity", "LightFM alone", "EASE", "LightFM + CatBoost"]
    assert rows[2][0].startswith("EASE (λ=")
    assert model["plots"] == ["metrics.png", "importance.png"]
    assert model["report"]["demographics"]["kids_flg"] == [0, 1]
    assert model["report"]["history_items"] == get_settings().ui.history_items
    assert len(model["sample_users"]) > 5
    with urllib.request.urlopen(f"{server.url}/ui/api/plot?name=metrics.png", timeout=10) as response:
        assert response.headers["Content-Type"] == "image/png" and response.read()[:4] == b"\x89PNG"


def test_history_and_item_endpoints_answer_from_the_training_data(server, model):
    dataset = generate("tiny", seed=Settings().data.seed)
    user = model["sample_users"][0]
    status, answer = get(f"{server.url}/ui/api/history?user_id={user}")
    assert status == 200, answer
    mine = dataset.interactions[dataset.interactions["user_id"] == user]
    assert answer["watched"] == len(mine)
    assert len(answer["history"]) == min(len(mine), get_settings().ui.history_items)
    assert answer["history"][0]["watched_at"] == str(mine["last_watch_dt"].max().date())
    assert {h["item_id"] for h in answer["history"]} <= set(mine["item_id"])
    ids = [h["item_id"] for h in answer["history"][:3]]
    status, details = get(f"{server.url}/ui/api/items?ids={','.join(map(str, ids))},{10**15}")
    assert status == 200 and details["unknown"] == [10**15]
    titles = dataset.items.set_index("item_id")["title"]
    assert [(d["item_id"], d["title"]) for d in details["items"]] == [(i, titles[i]) for i in ids]


@pytest.mark.parametrize(("path", "status", "fragment"), [
    ("/ui/api/history", 400, "user_id must be an integer"),
    ("/ui/api/history?user_id=abc", 400, "user_id must be an integer"),
    ("/ui/api/history?user_id=-5", 400, "user_id must be an integer"),
    ("/ui/api/history?user_id=1e3", 400, "user_id must be an integer"),
    ("/ui/api/history?user_id=99999999999999999999", 400, "user_id must be an integer"),
    (f"/ui/api/history?user_id={10**15}", 404, "cold start"),
    ("/ui/api/items", 400, "ids: give 1 to 100"),
    ("/ui/api/items?ids=1,x", 400, "item id must be an integer"),
    ("/ui/api/items?ids=" + ",".join(map(str, range(101))), 400, "ids: give 1 to 100"),
    ("/ui/api/plot?name=nothing.png", 404, "no plot named"),
    ("/ui/api/whatever", 404, "no such endpoint"),
])
def test_bad_and_unknown_ids_are_json_errors(server, path, status, fragment):
    code, body = get(server.url + path)
    assert code == status and body["status"] == "error" and fragment in body["msg"]


def _ask(driver, url: str, user: int, features: dict[str, object] | None = None) -> list[dict]:
    """Load the page, type the user id (and demographics), press Recommend; the rendered recommendations."""
    driver.get(f"{url}/ui/")
    wait_for(driver, "document.body.dataset.state === 'ready' && document.querySelectorAll('#offline-metrics tr').length")
    field = driver.find_element(By.ID, "user-id")
    field.clear()
    field.send_keys(str(user))
    for name, value in (features or {}).items():
        Select(driver.find_element(By.ID, "kids" if name == "kids_flg" else name)).select_by_value(str(value))
    driver.find_element(By.ID, "recommend").click()
    wait_for(driver, f"document.body.dataset.state === 'ready' && "
                     f"document.querySelector('#recommendations').dataset.userId === '{user}'")
    return [{"item_id": int(row.get_attribute("data-item-id")),
             "title": row.find_element(By.CSS_SELECTOR, "td.title").text,
             "source": row.find_elements(By.TAG_NAME, "td")[-1].text}
            for row in driver.find_elements(By.CSS_SELECTOR, "#recommendations tbody tr")]


def _titles(url: str, ids: list[int]) -> list[str]:
    items = get(f"{url}/ui/api/items?ids={','.join(map(str, ids))}")[1]["items"]
    return [i["title"] for i in items]


def _screenshot(driver, path: Path, capsys) -> None:
    """The whole page as PNG; its path is printed past pytest's capture, so `make test` shows it."""
    driver.set_window_size(1400, driver.execute_script("return document.body.scrollHeight") + 120)
    driver.save_screenshot(str(path))
    with capsys.disabled():
        print(f"\nscreenshot of the page: {path}")


def test_page_shows_history_beside_the_recommendations_the_api_gives(server, model, browser, reports, capsys):
    user = model["sample_users"][1]
    shown = _ask(browser, server.url, user)
    status, api = post(f"{server.url}/recommend", {"user_id": user, "top_k": 10})
    assert status == 200 and api["cold_start"] is False
    ids = [r["item_id"] for r in api["recommendations"]]
    assert [r["item_id"] for r in shown] == ids
    assert [r["title"] for r in shown] == _titles(server.url, ids)
    assert [r["source"] for r in shown] == [" + ".join(r["retrieved_by"]) for r in api["recommendations"]]
    assert not browser.find_element(By.ID, "cold-start").is_displayed()

    history = get(f"{server.url}/ui/api/history?user_id={user}")[1]["history"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    assert [int(r.get_attribute("data-item-id")) for r in rows] == [h["item_id"] for h in history]
    assert rows[0].find_elements(By.TAG_NAME, "td")[0].text == history[0]["watched_at"]

    # the model panel: the report's table, both plots drawn, and live traffic that counts this request
    assert len(browser.find_elements(By.CSS_SELECTOR, "#offline-metrics tbody tr")) == 4
    assert wait_for(browser, "[...document.querySelectorAll('#plots img')].map(i => i.complete && i.naturalWidth)"
                             ".filter(Boolean).length") == 2
    wait_for(browser, "document.querySelector('#traffic tr[data-endpoint=\"/recommend\"]')")
    assert model["version"] in browser.find_element(By.ID, "version").text
    _screenshot(browser, reports / "ui-screenshot.png", capsys)


def test_page_says_when_a_new_user_gets_the_cold_start_fallback(server, model, browser, reports, capsys):
    user = 2**63 - 1  # the largest id the API accepts: beyond JavaScript's exact integers, sent as typed
    shown = _ask(browser, server.url, user, COLD_FEATURES)
    status, api = post(f"{server.url}/recommend", {"user_id": user, "top_k": 10, "user_features": COLD_FEATURES})
    assert status == 200 and api["cold_start"] is True
    assert [r["item_id"] for r in shown] == [r["item_id"] for r in api["recommendations"]]
    assert {r["source"] for r in shown} == {api["recommendations"][0]["source"]} == {"segment"}
    notice = browser.find_element(By.ID, "cold-start")
    assert notice.is_displayed() and "Cold start" in notice.text and "segment" in notice.text
    assert "has no history" in browser.find_element(By.ID, "profile").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    call = {name: browser.find_element(By.ID, name).get_attribute("textContent") for name in ("request", "response")}
    assert str(user) in notice.text and f'"user_id":{user}' in call["request"] and f'"user_id":{user}' in call["response"]
    _screenshot(browser, reports / "ui-screenshot-cold-start.png", capsys)
    browser.find_element(By.ID, "new-user").click()
    assert browser.find_element(By.ID, "user-id").get_attribute("value") == str(model["new_user_id"])


def test_a_pair_trained_before_the_page_still_serves_and_the_page_says_why_titles_are_missing(trained_home, tmp_path):
    shutil.copytree(trained_home / "bentoml", tmp_path / "bentoml")
    for showcase in (tmp_path / "bentoml" / "models" / "recsys_ranker").glob("*/showcase"):
        shutil.rmtree(showcase)
    with Server(project_env(tmp_path)) as old:
        status, body = post(f"{old.url}/recommend", {"user_id": 0, "top_k": 3})
        model, history = get(f"{old.url}/ui/api/model")[1], get(f"{old.url}/ui/api/history?user_id=0")
    assert status == 200, body
    assert "trained before the web page existed" in model["showcase_missing"] and "report" not in model
    assert history[0] == 404 and history[1]["msg"] == model["showcase_missing"]
