"""Helpers for scripts/containerize.sh (stdlib only, apart from `user`, which reads the Bento's models).

  smoke.py probe URL                      exit 0 if GET URL answers 200
  smoke.py user BENTO_PATH                print a user id the Bento's candidate model knows
  smoke.py compare TOP_K USER URL [URL..] POST {"user_id": USER, "top_k": TOP_K} to each URL + /recommend, check
                                          200 + TOP_K recommendations, and that all answers carry the same item_ids
  smoke.py packages LOCK FREEZE           exit 0 if FREEZE (`pip freeze` of the image) pins exactly LOCK's versions
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def probe(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError, ValueError):
        return 1


def user(bento_path: str) -> int:
    """The first user of the candidate model packed into this Bento (the version its bento.yaml records)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from recsys.core import model_store as ms

    version = ms.bento_version(Path(bento_path) / "src") or ms.resolve_version()
    model = ms.load_candidates(ms.get_model(ms.CANDIDATES, version))
    print(int(model.user_ids[0]))
    return 0


def _post(url: str, body: dict) -> tuple[int, float, object]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    ms = (time.perf_counter() - t0) * 1000
    try:
        return status, ms, json.loads(raw)
    except ValueError:
        return status, ms, raw.decode(errors="replace")


def compare(top_k: int, user_id: int, *bases: str) -> int:
    body = {"user_id": user_id, "top_k": top_k}
    ok, answers = True, []
    for base in bases:
        url = base.rstrip("/") + "/recommend"
        status, ms, answer = _post(url, body)
        recs = answer.get("recommendations") if isinstance(answer, dict) else None
        ids = [r["item_id"] for r in recs] if isinstance(recs, list) else None
        print(f"  POST {url} {json.dumps(body)} -> {status} in {ms:.0f} ms")
        if status != 200 or ids is None or len(ids) != top_k:
            print(f"  FAIL: expected 200 with {top_k} recommendations, got {status}: {json.dumps(answer)[:600]}")
            ok = False
            continue
        print(f"    model_version={answer.get('model_version')} cold_start={answer.get('cold_start')} item_ids={ids}")
        print(f"    scores={[r['score'] for r in recs]}")
        answers.append((url, ids, answer.get("model_version")))
    if ok and len(answers) > 1:
        first_url, first_ids, first_version = answers[0]
        for url, ids, version in answers[1:]:
            if ids != first_ids or version != first_version:
                print(f"  FAIL: {url} answered item_ids={ids} (model {version}), "
                      f"{first_url} answered {first_ids} (model {first_version})")
                ok = False
        if ok:
            print(f"  identical item_ids from {len(answers)} servers")
    return 0 if ok else 1


def _pins(path: str) -> dict[str, str]:
    """name -> version of each `name==version` line (names normalised as pip does)."""
    found = {}
    for line in Path(path).read_text().splitlines():
        if match := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line):
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def packages(lock: str, freeze: str) -> int:
    want, have = _pins(lock), _pins(freeze)
    differ = {name: (have.get(name), want.get(name)) for name in want.keys() | have.keys() if have.get(name) != want.get(name)}
    for name, (installed, locked) in sorted(differ.items()):
        print(f"[containerize]     {name}: image {installed or '-'}, lock {locked or '-'}", file=sys.stderr)
    print(f"[containerize]     {len(have)} packages in the image, {len(want)} in {lock}: "
          f"{'the same versions' if not differ else f'{len(differ)} differ'}")
    return int(bool(differ))


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "probe":
        return probe(argv[1])
    if len(argv) == 2 and argv[0] == "user":
        return user(argv[1])
    if len(argv) == 3 and argv[0] == "packages":
        return packages(argv[1], argv[2])
    if len(argv) >= 4 and argv[0] == "compare":
        return compare(int(argv[1]), int(argv[2]), *argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
