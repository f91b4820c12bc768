"""The operator's app-version index (issue 17 §4): checked at start, served on one line."""

import json

import pytest

from relay.notify import appversions, metadata, push
from relay.settings import load

GUID = "0123456789abcdef0123456789abcdef"
KEY = f"shared/{GUID}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/appversions"

GOOD = {"clients": [
    {"clientId": "deltachat", "sources": [
        {"sourceId": "gplay", "versionInteger": 754, "versionString": "2.57.0",
         "downloadUrl": "https://download.delta.chat/android/deltachat-gplay-release-2.57.0.apk"},
        {"sourceId": "fdroid", "versionInteger": 0, "versionString": "2.57.0",
         "downloadUrl": "https://f-droid.org/packages/com.b44t.messenger/"}]},
    {"clientId": "deltachat-desktop", "sources": [
        {"sourceId": "web", "versionInteger": 2**32 - 1, "versionString": "2.57.0 ü",
         "downloadUrl": "https://delta.chat/en/download"}]}]}


def write(tmp_path, value, raw=None):
    path = tmp_path / "appversions.json"
    path.write_text(raw if raw is not None else json.dumps(value, indent=2))
    return str(path)


def test_good_index_is_served_compact_on_one_line(tmp_path):
    line = appversions.load(write(tmp_path, GOOD))
    assert "\n" not in line and ": " not in line and ", " not in line
    assert json.loads(line) == GOOD


def bad(**changes):
    index = json.loads(json.dumps(GOOD))
    source = index["clients"][0]["sources"][0]
    for key, value in changes.items():
        if value is None:
            source.pop(key)
        else:
            source[key] = value
    return index


@pytest.mark.parametrize("index,why", [
    ([], "the top level must be an object"),
    ({"clients": []}, "clients must be a non-empty list"),
    ({"clients": [], "extra": 1}, "unknown extra"),
    ({"clients": [{"clientId": "x", "sources": []}]}, "sources must be a non-empty list"),
    ({"clients": [{"clientId": "", "sources": GOOD["clients"][0]["sources"]}]}, "clientId"),
    ({"clients": [GOOD["clients"][0], GOOD["clients"][0]]}, "appears twice"),
    (bad(versionInteger=True), "versionInteger"),
    (bad(versionInteger=-1), "versionInteger"),
    (bad(versionInteger=2**32), "versionInteger"),
    (bad(versionInteger="754"), "versionInteger"),
    (bad(versionInteger=7.5), "versionInteger"),
    (bad(versionString=""), "versionString"),
    (bad(downloadUrl="http://insecure.example/app.apk"), "https://"),
    (bad(downloadUrl="download.delta.chat"), "https://"),
    (bad(sourceId=None), "missing sourceId"),
    (bad(channel="beta"), "unknown channel"),
    ({"clients": [{"clientId": "x", "sources": [GOOD["clients"][0]["sources"][0]] * 2}]},
     "appears twice"),
])
def test_bad_index_is_one_clear_line(tmp_path, index, why):
    path = write(tmp_path, index)
    with pytest.raises(appversions.AppVersionsError) as exc:
        appversions.load(path)
    text = str(exc.value)
    assert why in text and f"APPVERSIONS_FILE={path}" in text and "\n" not in text


def test_not_json(tmp_path):
    with pytest.raises(appversions.AppVersionsError, match="is not JSON"):
        appversions.load(write(tmp_path, None, raw='{"clients": [}'))


def test_missing_file_is_none_only_at_the_default_path(tmp_path, monkeypatch):
    monkeypatch.setattr(appversions, "DEFAULT", str(tmp_path / "appversions.json"))
    assert appversions.load(appversions.DEFAULT) is None
    with pytest.raises(appversions.AppVersionsError, match="no such file"):
        appversions.load(str(tmp_path / "elsewhere.json"))


def test_served_through_metadata_and_nil_without(tmp_path, monkeypatch):
    served = tmp_path / "served.json"
    monkeypatch.setattr(appversions.paths, "APPVERSIONS_SERVED", served)
    settings = load({"MAIL_DOMAIN": "chat.example.org"})
    tokens = push.TokenStore(tmp_path)
    assert metadata.MetadataService(settings, tokens, None).lookup(KEY, "") is None
    assert appversions.install(appversions.load(write(tmp_path, GOOD))) is True
    value = metadata.MetadataService(settings, tokens, None).lookup(KEY, "")
    assert value is not None and json.loads(value) == GOOD and "\n" not in value
