"""Hostile and malformed requests against the running service, byte for byte as a careless or hostile client
would send them. Each gets its documented 4xx with a message a person can act on, and afterwards the service
answers the same good requests exactly as it did before (a warm user and a cold one, compared field by field).

test_service.py covers the everyday mistakes (a string id, a float, a missing field, top_k 0...); this module
covers the extremes: huge numbers, non-finite literals, deep nesting, bad encodings, repeated keys, bodies at
and past the size limit, chunked bodies and content types.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from recsys.serving.schemas import MAX_BATCH_USERS
from recsys.serving.traffic import MAX_BODY_BYTES
from tests.helpers import warm_user

JSON = {"Content-Type": "application/json"}
COLD_USER = 10**15


def send(url: str, path: str, body: bytes, headers: dict[str, str], chunked: bool = False) -> tuple[int, dict]:
    """POST raw bytes (optionally chunked, optionally without Content-Type) and return the status and JSON."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        if chunked:
            connection.putrequest("POST", path)
            for name, value in {**headers, "Transfer-Encoding": "chunked"}.items():
                connection.putheader(name, value)
            connection.endheaders()
            for start in range(0, len(body), 1 << 16):
                piece = body[start:start + (1 << 16)]
                connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            connection.send(b"0\r\n\r\n")
        else:
            connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _batch(n: int, padding: int = 0) -> bytes:
    return b'{"requests": [' + b",".join([b'{"user_id": 1}'] * n) + b"]" + b" " * padding + b"}"


def _padded(total: int) -> bytes:
    """A valid request for user 1, padded with spaces to exactly ``total`` bytes."""
    head = b'{"user_id": 1'
    return head + b" " * (total - len(head) - 1) + b"}"


def bad(name: str, body: bytes, status: int, fragment: str, route: str = "/recommend",
        headers: dict[str, str] = JSON):
    """One hostile request: what is sent, and the status and message fragment it must get."""
    return pytest.param(body, headers, route, status, fragment, id=name)


BATCH = "/recommend/batch"
INTEGER = "Input should be a valid integer"
MAX_ID = "Input should be less than or equal to 9223372036854775807"
TOO_DEEP = "Invalid JSON: recursion limit exceeded"
# more keys, values or strings than the largest valid request: refused before any parser builds objects from it
TOO_MANY = "more JSON keys and values than any valid request has"
OVER_LIMIT = f"exceeds the limit of {MAX_BODY_BYTES} bytes"
ASK_JSON = "send JSON with 'Content-Type: application/json'"

CASES = [
    # wrong types
    bad("id-as-list", b'{"user_id": [1]}', 400, f"user_id: {INTEGER}"),
    bad("id-as-object", b'{"user_id": {"id": 1}}', 400, f"user_id: {INTEGER}"),
    bad("id-null", b'{"user_id": null}', 400, f"user_id: {INTEGER}"),
    bad("id-bool", b'{"user_id": true}', 400, f"user_id: {INTEGER}"),
    bad("id-fullwidth-digits", '{"user_id": "１２"}'.encode(), 400, f"user_id: {INTEGER}"),
    bad("top_k-as-text", b'{"user_id": 1, "top_k": "10"}', 400, f"top_k: {INTEGER}"),
    bad("exclude_seen-as-text", b'{"user_id": 1, "exclude_seen": "yes"}', 400, "exclude_seen: Input should be a valid boolean"),
    bad("features-as-text", b'{"user_id": 1, "user_features": "F"}', 400, "user_features: Input should be"),
    bad("age-as-number", b'{"user_id": 1, "user_features": {"age": 25}}', 400, "user_features.age: Input should be a valid str"),
    # ids and sizes out of range
    bad("id-minus-one", b'{"user_id": -1}', 400, "user_id: Input should be greater than or equal to 0"),
    bad("id-2**63", json.dumps({"user_id": 2**63}).encode(), 400, f"user_id: {MAX_ID}"),
    bad("id-10**30", json.dumps({"user_id": 10**30}).encode(), 400, f"user_id: {MAX_ID}"),
    bad("id-5000-digits", b'{"user_id": ' + b"9" * 5000 + b"}", 400, "Invalid JSON: number out of range"),
    bad("top_k-10**30", json.dumps({"user_id": 1, "top_k": 10**30}).encode(), 400, "top_k: Input should be less than or equal"),
    bad("top_k-negative", b'{"user_id": 1, "top_k": -5}', 400, "top_k: Input should be greater than or equal to 1"),
    bad("age-41-emoji", json.dumps({"user_id": 1, "user_features": {"age": "\U0001f4a5" * 41}}).encode(), 400,
        "user_features.age: String should have at most 40 characters"),
    # non-finite number literals (not JSON, but Python and many other writers produce them)
    bad("id-NaN", b'{"user_id": NaN}', 400, f"user_id: {INTEGER}"),
    bad("top_k-Infinity", b'{"user_id": 1, "top_k": Infinity}', 400, f"top_k: {INTEGER}"),
    bad("id-minus-Infinity", b'{"user_id": -Infinity}', 400, f"user_id: {INTEGER}"),
    bad("id-1e400", b'{"user_id": 1e400}', 400, f"user_id: {INTEGER}"),
    # deep nesting
    bad("10k-nested-lists", b"[" * 10_000 + b"]" * 10_000, 400, TOO_MANY),
    bad("10k-nested-objects", b'{"user_id": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001, 400, TOO_MANY),
    bad("1k-nested-in-a-batch", b'{"requests": [' + b"[" * 1_000 + b"]" * 1_000 + b"]}", 400, TOO_DEEP, route=BATCH),
    # encodings and unicode garbage
    bad("invalid-utf8-value", b'{"user_id": 1, "user_features": {"age": "\xff\xfe"}}', 400, "Invalid JSON: invalid unicode"),
    bad("invalid-utf8-key", b'{"\xc3\x28": 1}', 400, "Invalid JSON"),
    bad("lone-surrogate", b'{"user_id": 1, "user_features": {"age": "\\ud800"}}', 400, "Invalid JSON"),
    bad("utf16-body", '{"user_id": 1}'.encode("utf-16"), 400, "Invalid JSON"),
    bad("garbage-key", json.dumps({"user_id": 1, "\u202e\u0000\U0001f4a5": 1}).encode(), 400, "Extra inputs are not permitted"),
    bad("trailing-garbage", b'{"user_id": 1} {"user_id": 2}', 400, "Invalid JSON: trailing characters"),
    bad("only-whitespace", b"   \n", 400, "Invalid JSON: EOF while parsing"),
    # repeated keys: BentoML's parser would keep the last value without a word
    bad("repeated-key", b'{"user_id": 1, "user_id": 2}', 400, "key 'user_id' appears more than once"),
    # labels the served model has no segment for (the training data's users table defines them)
    bad("unknown-age-band", b'{"user_id": 1, "user_features": {"age": "age_25_99"}}', 400,
        "user_features.age: 'age_25_99' is not a label of the served model; use one of age_18_24, age_25_34"),
    bad("unknown-sex-in-batch", b'{"requests": [{"user_id": 1}, {"user_id": 2, "user_features": {"sex": "X"}}]}', 400,
        "requests.1.user_features.sex: 'X' is not a label of the served model; use one of F, M", route=BATCH),
    bad("repeated-nested-key", b'{"user_id": 1, "user_features": {"sex": "F", "sex": "M"}}', 400, "key 'sex' appears"),
    bad("repeated-key-in-batch", b'{"requests": [{"user_id": 1, "top_k": 5, "top_k": 6}]}', 400, "key 'top_k' appears",
        route=BATCH),
    # not an object
    bad("array-of-a-good-request", b'[{"user_id": 1}]', 400, "body: Input should be an object"),
    bad("null", b"null", 400, "body: Input should be an object"),
    bad("string", b'"user_id=1"', 400, "body: Input should be an object"),
    # batches
    bad("batch-empty-body", b"", 400, "requests: Field required", route=BATCH),
    bad("batch-not-a-list", b'{"requests": {"user_id": 1}}', 400, "requests: Input should be a valid array", route=BATCH),
    bad("batch-empty-list", b'{"requests": []}', 400, "requests: List should have at least 1 item", route=BATCH),
    bad("batch-one-bad-user", b'{"requests": [{"user_id": 1}, {"user_id": -1}]}', 400,
        "requests.1.user_id: Input should be greater than or equal to 0", route=BATCH),
    bad("batch-60k-users-under-1MB", _batch(60_000), 400, TOO_MANY, route=BATCH),
    bad("batch-of-101-users", _batch(MAX_BATCH_USERS + 1), 400, f"requests: List should have at most {MAX_BATCH_USERS} items",
        route=BATCH),
    # the size limit, one byte over
    bad("body-1-byte-over", _padded(MAX_BODY_BYTES + 1), 413, f"request body of {MAX_BODY_BYTES + 1} bytes {OVER_LIMIT}"),
    # content types
    bad("text-plain", b'{"user_id": 1}', 415, ASK_JSON, headers={"Content-Type": "text/plain"}),
    bad("multipart", b"--x\r\n\r\n--x--\r\n", 415, "unsupported Content-Type 'multipart/form-data'",
        headers={"Content-Type": "multipart/form-data; boundary=x"}),
    bad("xml", b"<user_id>1</user_id>", 415, "unsupported Content-Type 'application/xml'",
        headers={"Content-Type": "application/xml"}),
    bad("json-suffix-type", b'{"user_id": 1}', 415, ASK_JSON, headers={"Content-Type": "application/vnd.api+json"}),
]


@pytest.fixture(scope="module")
def good_requests(server, models) -> list[tuple[str, bytes, dict]]:
    """A warm and a cold request with the answers they get before any hostile request was sent."""
    requests = [("/recommend", json.dumps({"user_id": warm_user(models), "top_k": 7}).encode()),
                ("/recommend", json.dumps({"user_id": COLD_USER, "top_k": 3, "user_features": {"sex": "F"}}).encode())]
    baseline = []
    for path, body in requests:
        status, answer = send(server.url, path, body, JSON)
        assert status == 200 and answer["status"] == "success" and answer["recommendations"], answer
        baseline.append((path, body, answer))
    return baseline


def assert_unchanged(server, good_requests) -> None:
    for path, body, answer in good_requests:
        assert send(server.url, path, body, JSON) == (200, answer)


@pytest.mark.parametrize(("body", "headers", "path", "status", "fragment"), CASES)
def test_hostile_request_gets_its_4xx_and_changes_nothing(server, good_requests, body, headers, path, status, fragment):
    got, error = send(server.url, path, body, headers)
    assert (got, error["status"], error["recommendations"]) == (status, "error", []), error
    assert fragment in error["msg"], error["msg"]
    assert_unchanged(server, good_requests)


def test_chunked_body_over_the_limit_is_a_413(server, good_requests):
    """Regression: the limit was checked on Content-Length only, so a chunked 5 MB body was read and served."""
    status, error = send(server.url, "/recommend", _padded(5 * MAX_BODY_BYTES), JSON, chunked=True)
    assert status == 413 and OVER_LIMIT in error["msg"]
    assert_unchanged(server, good_requests)


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_body_of_exactly_the_limit_is_served(server, good_requests, chunked):
    """The limit is inclusive: a valid request padded to exactly MAX_BODY_BYTES gets the normal answer."""
    status, answer = send(server.url, "/recommend", _padded(MAX_BODY_BYTES), JSON, chunked=chunked)
    assert status == 200 and answer == send(server.url, "/recommend", b'{"user_id": 1}', JSON)[1]
    assert_unchanged(server, good_requests)


def test_missing_content_type_is_read_as_json(server, good_requests):
    """Raw clients that send no Content-Type at all get served; only a different type is refused."""
    path, body, answer = good_requests[0]
    assert send(server.url, path, body, {}) == (200, answer)
