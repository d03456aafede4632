"""History is never erased: DeleteImageSet is asynchronous and leaves each version's
status alone; a failed version read by a later copy stays failed. Over HTTP, through
boto3 and the AWS CLI's delete-image-set example.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kit.emukit import AwsCli, copy, error_of, seed, versions, wait_active

# Deletions take an hour (x0.01 = 36 s): only the emulated clock ends them.
pytestmark = pytest.mark.emulator_config(enforce_rates=False, delete_s=3600.0)

DELETE_EXAMPLE_KEYS = {"imageSetWorkflowStatus", "imageSetId", "imageSetState", "datastoreId"}


def test_delete_is_asynchronous_and_keeps_version_statuses(emulator: Any, boto3_client: Any,
                                                           control: Any) -> None:
    store = seed(control)
    ds = store["datastoreId"]
    a, b = store["imageSets"][0]["imageSetId"], store["imageSets"][1]["imageSetId"]
    copy(boto3_client, ds, a, dst=b)  # another study: b's version 2 ends COPY_FAILED
    failed = wait_active(boto3_client, ds, a, b)[b]
    assert failed["imageSetWorkflowStatus"] == "COPY_FAILED"

    out = boto3_client.delete_image_set(datastoreId=ds, imageSetId=b)
    assert (out["imageSetState"], out["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    during = boto3_client.get_image_set(datastoreId=ds, imageSetId=b)
    assert (during["imageSetState"], during["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    with pytest.raises(ClientError) as info:  # LOCKED: no other write
        copy(boto3_client, ds, a, dst=b, dst_version="2")
    assert error_of(info.value)[:2] == ("ConflictException", 409)
    assert emulator.stats()["deletes_in_flight"] == 1

    emulator.set_clock(advance_s=60)  # 36 s of modelled deletion
    gone = boto3_client.get_image_set(datastoreId=ds, imageSetId=b)
    assert gone["imageSetState"] == "DELETED" and "deletedAt" in gone
    assert (gone["versionId"], gone["imageSetWorkflowStatus"], gone["message"]) == \
        ("2", "COPY_FAILED", failed["message"])
    assert [(v["versionId"], v["ImageSetWorkflowStatus"], v["imageSetState"])
            for v in versions(boto3_client, ds, b)] == [("2", "COPY_FAILED", "DELETED"),
                                                          ("1", "CREATED", "DELETED")]
    with pytest.raises(ClientError) as info:
        boto3_client.get_image_set_metadata(datastoreId=ds, imageSetId=b)
    assert error_of(info.value)[:2] == ("ResourceNotFoundException", 404)
    assert emulator.stats()["deletes_in_flight"] == 0


def test_a_failed_source_version_stays_failed(boto3_client: Any, control: Any) -> None:
    store = seed(control)
    ds = store["datastoreId"]
    a, b = store["imageSets"][0]["imageSetId"], store["imageSets"][1]["imageSetId"]
    copy(boto3_client, ds, a, dst=b)
    failed = wait_active(boto3_client, ds, a, b)[b]
    out = copy(boto3_client, ds, b, src_version="2")
    assert out["sourceImageSetProperties"]["imageSetWorkflowStatus"] == "COPYING_WITH_READ_ONLY_ACCESS"
    new = out["destinationImageSetProperties"]["imageSetId"]
    wait_active(boto3_client, ds, b, new)
    after = boto3_client.get_image_set(datastoreId=ds, imageSetId=b, versionId="2")
    assert (after["imageSetWorkflowStatus"], after["message"]) == ("COPY_FAILED", failed["message"])


@pytest.mark.skipif(shutil.which("aws") is None, reason="AWS CLI not installed")
def test_delete_image_set_cli_example(emulator: Any, control: Any, client_env: Any) -> None:
    store = seed(control)
    ds, image_set = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    cli = AwsCli(emulator.endpoint, client_env["AWS_DEFAULT_REGION"])
    out = cli.json("delete-image-set", "--datastore-id", ds, "--image-set-id", image_set)
    assert set(out) == DELETE_EXAMPLE_KEYS  # the example's keys, no more
    assert (out["imageSetState"], out["imageSetWorkflowStatus"], out["imageSetId"], out["datastoreId"]) == \
        ("LOCKED", "DELETING", image_set, ds)
    emulator.set_clock(advance_s=60)
    got = cli.json("get-image-set", "--datastore-id", ds, "--image-set-id", image_set)
    assert (got["imageSetState"], got["imageSetWorkflowStatus"]) == ("DELETED", "CREATED")
    again = cli.run("delete-image-set", "--datastore-id", ds, "--image-set-id", image_set, ok=False)
    assert again.returncode != 0 and "ResourceNotFoundException" in again.stderr
