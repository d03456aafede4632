"""SigV4 verification and deny lists, over HTTP, through boto3 and the AWS CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from batchcopy.emulator.config import AuthConfig

GOOD = ("AKIDEMULATORGOOD", "good-secret-for-tests")
DENIED = ("AKIDEMULATORDENIED", "denied-secret-for-tests")
EXPIRED_TOKEN = "expired-session-token-for-tests"
AUTH = AuthConfig(
    keys={GOOD[0]: GOOD[1], DENIED[0]: DENIED[1]},
    expired_tokens=[EXPIRED_TOKEN],
    deny={DENIED[0]: ["CopyImageSet", "DeleteDatastore"]},
)

pytestmark = pytest.mark.emulator_config(auth=AUTH)


def client(emulator: Any, key: str, secret: str, token: str | None = None, **config: Any) -> Any:
    return boto3.session.Session().client(
        "medical-imaging", endpoint_url=emulator.endpoint, region_name="us-east-1",
        aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token,
        config=Config(inject_host_prefix=False, retries={"total_max_attempts": 1}, **config))


def error_of(call: Any, **kwargs: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_correct_keys_pass_for_every_kind_of_route(emulator: Any, client_env: Any, seeded: Any) -> None:
    c = client(emulator, *GOOD)
    ds = seeded["datastores"][0]["datastoreId"]
    image_set = seeded["datastores"][0]["imageSets"][0]["imageSetId"]
    assert c.list_datastores(maxResults=5)["datastoreSummaries"]  # query string signed
    assert c.get_image_set(datastoreId=ds, imageSetId=image_set)["imageSetState"] == "ACTIVE"
    arn = c.get_datastore(datastoreId=ds)["datastoreProperties"]["datastoreArn"]
    c.tag_resource(resourceArn=arn, tags={"team": "imaging", "cost-center": "a/b c:d"})  # encoded ARN path
    assert c.list_tags_for_resource(resourceArn=arn)["tags"]["cost-center"] == "a/b c:d"
    c.untag_resource(resourceArn=arn, tagKeys=["team", "cost-center"])
    assert c.list_tags_for_resource(resourceArn=arn)["tags"] == {}


def test_wrong_secret_is_invalid_signature(emulator: Any, client_env: Any) -> None:
    c = client(emulator, GOOD[0], "not-the-secret")
    assert error_of(c.list_datastores) == ("InvalidSignatureException", 403)


def test_unknown_key_is_unrecognized_client(emulator: Any, client_env: Any) -> None:
    c = client(emulator, "AKIDNOBODYKNOWS", "whatever")
    code, status = error_of(c.list_datastores)
    assert (code, status) == ("UnrecognizedClientException", 403)


def test_expired_session_token(emulator: Any, client_env: Any) -> None:
    c = client(emulator, GOOD[0], GOOD[1], token=EXPIRED_TOKEN)
    assert error_of(c.list_datastores) == ("ExpiredTokenException", 403)
    # a token not on the list passes
    assert "datastoreSummaries" in client(emulator, GOOD[0], GOOD[1], token="fresh-token").list_datastores()


def test_unsigned_request_is_missing_token(emulator: Any, client_env: Any) -> None:
    c = boto3.session.Session().client(
        "medical-imaging", endpoint_url=emulator.endpoint, region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, inject_host_prefix=False, retries={"total_max_attempts": 1}))
    assert error_of(c.list_datastores) == ("MissingAuthenticationTokenException", 403)


def test_deny_list(emulator: Any, client_env: Any, seeded: Any) -> None:
    ds = seeded["datastores"][0]["datastoreId"]
    source = seeded["datastores"][0]["imageSets"][0]["imageSetId"]
    denied = client(emulator, *DENIED)
    assert denied.list_datastores()["datastoreSummaries"]  # other operations are allowed
    code, status = error_of(denied.copy_image_set, datastoreId=ds, sourceImageSetId=source,
                            copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}})
    assert (code, status) == ("AccessDeniedException", 403)
    assert emulator.stats()["copies_requested"] == 0
    # the same call with allowed keys goes through
    good = client(emulator, *GOOD)
    out = good.copy_image_set(datastoreId=ds, sourceImageSetId=source,
                              copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}})
    assert out["sourceImageSetProperties"]["imageSetId"] == source


def test_deny_star_applies_to_every_key(emulator_factory: Any, client_env: Any) -> None:
    server = emulator_factory(auth=AuthConfig(keys=dict([GOOD]), deny={"*": ["ListDatastores"]}))
    c = client(server, *GOOD)
    assert error_of(c.list_datastores) == ("AccessDeniedException", 403)


def test_control_routes_need_no_auth_and_hide_secrets(emulator: Any, control: Any) -> None:
    status, stats = control("GET", "/_emulator/stats")
    assert status == 200 and "calls" in stats
    status, config = control("GET", "/_emulator/config")
    assert status == 200
    assert set(config["auth"]["keys"]) == {GOOD[0], DENIED[0]}
    assert GOOD[1] not in json.dumps(config) and DENIED[1] not in json.dumps(config)


def post_json(endpoint: str, path: str, body: Any) -> Any:
    import urllib.request

    req = urllib.request.Request(endpoint + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_auth_switched_on_and_off_at_runtime(emulator_factory: Any, client_env: Any) -> None:
    server = emulator_factory()  # no auth: any credentials pass
    dummy = client(server, "testing", "testing")
    assert "datastoreSummaries" in dummy.list_datastores()
    post_json(server.endpoint, "/_emulator/config",
              {"auth": {"keys": dict([GOOD]), "deny": {"*": ["CopyImageSet"]}}})
    assert error_of(dummy.list_datastores) == ("UnrecognizedClientException", 403)
    assert "datastoreSummaries" in client(server, *GOOD).list_datastores()
    post_json(server.endpoint, "/_emulator/config", {"auth": None})
    assert "datastoreSummaries" in dummy.list_datastores()


def test_messages_never_echo_secrets(emulator: Any, client_env: Any) -> None:
    c = client(emulator, GOOD[0], "super-secret-value-123")
    with pytest.raises(ClientError) as info:
        c.list_datastores()
    text = json.dumps(info.value.response, default=str)
    assert "super-secret-value-123" not in text
    assert GOOD[1] not in text


@pytest.mark.skipif(shutil.which("aws") is None, reason="AWS CLI not installed")
def test_aws_cli_signs_and_is_verified(emulator: Any, client_env: Any) -> None:
    aws = shutil.which("aws")
    assert aws is not None

    def run(key: str, secret: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
        return subprocess.run(
            [aws, "medical-imaging", "list-datastores", "--endpoint-url", emulator.endpoint,
             "--region", "us-east-1", "--output", "json"],
            env=env, capture_output=True, text=True, timeout=60)

    ok = run(*GOOD)
    assert ok.returncode == 0, ok.stderr
    assert "datastoreSummaries" in json.loads(ok.stdout)
    bad = run(GOOD[0], "wrong-secret")
    assert bad.returncode != 0
    assert "InvalidSignatureException" in bad.stderr
