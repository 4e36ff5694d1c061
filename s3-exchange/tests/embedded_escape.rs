//! Attacks on the embedded store's confinement: alice, holding credentials for `users/alice/`,
//! tries to read, copy, overwrite, list or delete bob's object through every path trick a
//! client can send (raw `?`, `%3F`, `..`, `%2e%2e`, `//`, `%2F`, backslash, a leading `/`), with
//! real signed HTTP requests against a running store. Each must be refused (403) and bob's object
//! must stay his.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use s3_exchange::{EmbeddedConfig, EmbeddedS3, Exchange};

use common::{Scratch, grant_client};

const BOBS: &[u8] = b"bob's secret";

/// A client of the embedded store (region `dedl-lumi`) with the given keys.
fn client(endpoint: &str, id: &str, secret: &str, token: Option<&str>) -> aws_sdk_s3::Client {
    common::client("dedl-lumi", endpoint, id, secret, token)
}

type Raw = aws_sdk_s3::config::http::HttpResponse;

/// The HTTP status of a refusal; a success is the attack working.
fn status<E: std::fmt::Debug>(
    what: &str,
    r: Result<impl std::fmt::Debug, SdkError<E, Raw>>,
) -> u16 {
    match r {
        Ok(v) => panic!("{what}: the attack worked: {v:?}"),
        Err(SdkError::ServiceError(e)) => e.raw().status().as_u16(),
        Err(e) => panic!("{what}: expected the store's refusal, got {e:?}"),
    }
}

/// A running store where bob has `users/bob/x`, and alice's and the root's clients.
struct World {
    _dir: Scratch,
    s3: EmbeddedS3,
    alice: aws_sdk_s3::Client,
    root: aws_sdk_s3::Client,
}

async fn world(tag: &str) -> World {
    let dir = Scratch::new(tag);
    let s3 = EmbeddedS3::start(EmbeddedConfig {
        data_dir: dir.0.clone(),
        region: "dedl-lumi".into(),
        ..EmbeddedConfig::default()
    })
    .await
    .unwrap();
    let x = s3.exchange(3600);
    let alice = grant_client(&x.provision("alice").await.unwrap());
    let bob = grant_client(&x.provision("bob").await.unwrap());
    bob.put_object()
        .bucket("stackhub")
        .key("users/bob/x")
        .body(ByteStream::from_static(BOBS))
        .send()
        .await
        .unwrap();
    alice
        .put_object()
        .bucket("stackhub")
        .key("users/alice/own")
        .body(ByteStream::from_static(b"alice's"))
        .send()
        .await
        .unwrap();
    let root = client(
        s3.endpoint(),
        s3.root_access_key_id(),
        s3.root_secret().expose(),
        None,
    );
    World {
        _dir: dir,
        s3,
        alice,
        root,
    }
}

impl World {
    /// Every key in the bucket with its content, as the root key sees them.
    async fn contents(&self) -> Vec<(String, Vec<u8>)> {
        let listed = self
            .root
            .list_objects_v2()
            .bucket("stackhub")
            .send()
            .await
            .unwrap();
        let mut out = Vec::new();
        for key in listed.contents().iter().filter_map(|o| o.key()) {
            let got = self
                .root
                .get_object()
                .bucket("stackhub")
                .key(key)
                .send()
                .await
                .unwrap();
            let body = got.body.collect().await.unwrap().into_bytes().to_vec();
            out.push((key.to_owned(), body));
        }
        out.sort();
        out
    }

    /// Bob's object is his, unchanged, and nothing else holds its content.
    async fn assert_untouched(&self, what: &str) {
        let contents = self.contents().await;
        assert_eq!(
            contents,
            [
                ("users/alice/own".to_owned(), b"alice's".to_vec()),
                ("users/bob/x".to_owned(), BOBS.to_vec()),
            ],
            "{what}"
        );
    }
}

/// `x-amz-copy-source` values naming bob's object through a trick, each starting with alice's
/// own prefix as a naive check reads it.
const COPY_SOURCE_TRICKS: &[&str] = &[
    // Cut at the first `?`, this reads `stackhub/users/alice/`; s3s cuts only at `?versionId=`.
    "stackhub/users/alice/?/../../bob/x",
    "stackhub/users/alice/?x=1/../../bob/x",
    "stackhub/users/alice/%3F/../../bob/x",
    "stackhub/users/alice/%3FversionId=1/../../bob/x",
    "stackhub/users/alice/../bob/x",
    "stackhub/users/alice/%2e%2e/bob/x",
    "stackhub/users/alice/%2E%2E/bob/x",
    "stackhub/users/alice//../bob/x",
    "stackhub/users/alice/%2F..%2F..%2Fbob%2Fx",
    "stackhub/users/alice/./../bob/x",
    "stackhub/users/alice/..\\..\\bob\\x",
    "stackhub/users/alice/..%5C..%5Cbob%5Cx",
    "/stackhub/users/alice/?/../../bob/x",
    "stackhub//users/bob/x",
    "/stackhub/users/bob/x",
];

#[tokio::test]
async fn copy_source_with_question_mark_cannot_reach_another_users_object() {
    let w = world("copy-q").await;
    for source in COPY_SOURCE_TRICKS {
        let r = w
            .alice
            .copy_object()
            .bucket("stackhub")
            .key("users/alice/stolen")
            .copy_source(*source)
            .send()
            .await;
        assert_eq!(status(source, r), 403, "CopyObject from {source}");
        w.assert_untouched(source).await;
    }
    w.s3.shutdown().await;
}

#[tokio::test]
async fn upload_part_copy_with_path_tricks_cannot_reach_another_users_object() {
    let w = world("part-copy").await;
    let upload = w
        .alice
        .create_multipart_upload()
        .bucket("stackhub")
        .key("users/alice/stolen")
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    for source in COPY_SOURCE_TRICKS {
        let r = w
            .alice
            .upload_part_copy()
            .bucket("stackhub")
            .key("users/alice/stolen")
            .upload_id(upload_id)
            .part_number(1)
            .copy_source(*source)
            .send()
            .await;
        assert_eq!(status(source, r), 403, "UploadPartCopy from {source}");
    }
    // No part holds bob's bytes: completing the upload has nothing to complete.
    let parts = w
        .alice
        .list_parts()
        .bucket("stackhub")
        .key("users/alice/stolen")
        .upload_id(upload_id)
        .send()
        .await
        .unwrap();
    assert!(parts.parts().is_empty(), "{parts:?}");
    w.assert_untouched("after UploadPartCopy").await;
    w.s3.shutdown().await;
}

/// Request paths (as sent on the wire, after `/stackhub/`) naming bob's object, or beyond the
/// bucket, through a trick.
const PATH_TRICKS: &[&str] = &[
    "users/alice/%3F/../../bob/x",
    "users/alice/../bob/x",
    "users/alice/%2e%2e/bob/x",
    "users/alice/%2E%2E/bob/x",
    "users/alice/.%2e/bob/x",
    "users/alice//../bob/x",
    "users/alice/%2F..%2F..%2Fbob%2Fx",
    "users/alice/./../bob/x",
    "users/alice/..%5C..%5Cbob%5Cx",
    "users/alice/%5C..%5C..%5Cbob%5Cx",
    "/users/bob/x",
    "%2Fusers%2Fbob%2Fx",
    "users/alice/../../stackhub/users/bob/x",
];

/// `PLACEHOLDER` in the SDK's request path replaced by `raw`, before the request is signed: the
/// bytes on the wire are exactly the trick's.
fn raw_path(raw: &'static str) -> impl Fn(&mut aws_sdk_s3::config::http::HttpRequest) {
    move |req| {
        let uri = req
            .uri()
            .replace("/stackhub/PLACEHOLDER", &format!("/stackhub/{raw}"));
        req.set_uri(uri).unwrap();
    }
}

#[tokio::test]
async fn object_paths_with_dot_segments_cannot_reach_another_users_object() {
    let w = world("paths").await;
    for trick in PATH_TRICKS {
        let get = w
            .alice
            .get_object()
            .bucket("stackhub")
            .key("PLACEHOLDER")
            .customize()
            .mutate_request(raw_path(trick))
            .send()
            .await;
        assert_eq!(status(trick, get), 403, "GetObject {trick}");
        let head = w
            .alice
            .head_object()
            .bucket("stackhub")
            .key("PLACEHOLDER")
            .customize()
            .mutate_request(raw_path(trick))
            .send()
            .await;
        assert_eq!(status(trick, head), 403, "HeadObject {trick}");
        let put = w
            .alice
            .put_object()
            .bucket("stackhub")
            .key("PLACEHOLDER")
            .body(ByteStream::from_static(b"overwritten by alice"))
            .customize()
            .mutate_request(raw_path(trick))
            .send()
            .await;
        assert_eq!(status(trick, put), 403, "PutObject {trick}");
        let del = w
            .alice
            .delete_object()
            .bucket("stackhub")
            .key("PLACEHOLDER")
            .customize()
            .mutate_request(raw_path(trick))
            .send()
            .await;
        assert_eq!(status(trick, del), 403, "DeleteObject {trick}");
        let mpu = w
            .alice
            .create_multipart_upload()
            .bucket("stackhub")
            .key("PLACEHOLDER")
            .customize()
            .mutate_request(raw_path(trick))
            .send()
            .await;
        assert_eq!(status(trick, mpu), 403, "CreateMultipartUpload {trick}");
        w.assert_untouched(trick).await;
    }
    w.s3.shutdown().await;
}

#[tokio::test]
async fn listing_and_batch_delete_with_dot_segments_cannot_reach_another_users_objects() {
    let w = world("list").await;
    for prefix in [
        "users/alice/../bob/",
        "users/alice/..\\bob\\",
        "users/alice/./",
        "/users/bob/",
    ] {
        let r = w
            .alice
            .list_objects_v2()
            .bucket("stackhub")
            .prefix(prefix)
            .send()
            .await;
        assert_eq!(status(prefix, r), 403, "ListObjectsV2 {prefix}");
    }
    for key in [
        "users/alice/../bob/x",
        "users/alice/..\\..\\bob\\x",
        "/users/bob/x",
    ] {
        let r = w
            .alice
            .delete_objects()
            .bucket("stackhub")
            .delete(
                aws_sdk_s3::types::Delete::builder()
                    .objects(
                        aws_sdk_s3::types::ObjectIdentifier::builder()
                            .key(key)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await;
        assert_eq!(status(key, r), 403, "DeleteObjects {key}");
    }
    w.assert_untouched("after listing and batch delete").await;
    w.s3.shutdown().await;
}

/// Alice's own copies and reads still work: the checks refuse tricks, not her space.
#[tokio::test]
async fn copies_inside_the_own_prefix_still_work() {
    let w = world("own-copy").await;
    for source in [
        "stackhub/users/alice/own",
        "/stackhub/users/alice/own",
        "stackhub/users%2Falice%2Fown",
    ] {
        w.alice
            .copy_object()
            .bucket("stackhub")
            .key("users/alice/copy")
            .copy_source(source)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{source}: {e:?}"));
    }
    let got = w
        .alice
        .get_object()
        .bucket("stackhub")
        .key("users/alice/copy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        b"alice's"
    );
    w.s3.shutdown().await;
}

/// The embedded store confines to a literal prefix: a user named `a*` or `a?` is no wildcard.
#[tokio::test]
async fn user_named_with_a_wildcard_cannot_read_another_users_space_in_the_embedded_store() {
    let w = world("wildcard").await;
    let x = w.s3.exchange(3600);
    let ab = grant_client(&x.provision("ab").await.unwrap());
    ab.put_object()
        .bucket("stackhub")
        .key("users/ab/x")
        .body(ByteStream::from_static(b"ab's"))
        .send()
        .await
        .unwrap();
    for attacker in ["a*", "a?", "*", "a${*}"] {
        let a = grant_client(&x.provision(attacker).await.unwrap());
        let r = a
            .get_object()
            .bucket("stackhub")
            .key("users/ab/x")
            .send()
            .await;
        assert_eq!(status(attacker, r), 403, "{attacker} read users/ab/");
        let r = a
            .list_objects_v2()
            .bucket("stackhub")
            .prefix("users/ab/")
            .send()
            .await;
        assert_eq!(status(attacker, r), 403, "{attacker} listed users/ab/");
    }
    w.s3.shutdown().await;
}
