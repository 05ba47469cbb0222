"""What only the GCS backend does: object layout, sha256 object metadata, bucket errors."""

from __future__ import annotations

import pytest
from helpers import record_cartpole

from collector import storage
from collector.errors import RemoteError
from curation.remotes import list_remote_datasets, push_dataset
from remotes.conftest import Backend


def test_objects_mirror_the_local_layout_with_their_sha256(gcs_backend: Backend) -> None:
    from google.cloud import storage as storage_

    record_cartpole("cart/deep/a-v0", 3)
    push_dataset("cart/deep/a-v0", gcs_backend.uri)
    bucket_name = gcs_backend.uri.split("://")[1].split("/")[0]
    blobs = {b.name: b for b in storage_.Client().list_blobs(bucket_name)}
    meta = storage.read_metadata(storage.dataset_path("cart/deep/a-v0"))
    expected = {
        f"team/cart/deep/a-v0/{rel}": sha
        for rel, sha, _ in storage.dataset_files(meta, "") + storage.index_files(meta, "")
    }
    assert set(blobs) == {*expected, "team/cart/deep/a-v0/metadata.json"}
    for name, sha in expected.items():
        assert blobs[name].metadata == {"sha256": sha}
    assert list(list_remote_datasets(gcs_backend.uri)) == ["cart/deep/a-v0"]
    # another prefix in the same bucket sees nothing
    assert list_remote_datasets(f"gcp://{bucket_name}/elsewhere") == {}


def test_a_missing_bucket_is_named(gcs_backend: Backend) -> None:
    record_cartpole("cart/a-v0", 2)
    with pytest.raises(RemoteError, match="bucket 'no-such-bucket-x' not found"):
        push_dataset("cart/a-v0", "gcp://no-such-bucket-x")
