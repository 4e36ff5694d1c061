//! The embedded S3 store against real clients: aws-sdk-s3 (Rust) and boto3 (Python).
//! Temporary credentials reach their own prefix only; unknown, expired, token-less, unsigned and
//! badly signed requests are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use s3_exchange::{EmbeddedConfig, EmbeddedS3, Exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Scratch, grant_client, python};

async fn start(dir: &Scratch) -> EmbeddedS3 {
    EmbeddedS3::start(EmbeddedConfig {
        data_dir: dir.0.clone(),
        region: "dedl-lumi".into(),
        ..EmbeddedConfig::default()
    })
    .await
    .unwrap()
}

/// A client of the embedded store (region `dedl-lumi`) with the given keys.
fn client(endpoint: &str, id: &str, secret: &str, token: Option<&str>) -> aws_sdk_s3::Client {
    common::client("dedl-lumi", endpoint, id, secret, token)
}

type Raw = aws_sdk_s3::config::http::HttpResponse;

fn status<E: std::fmt::Debug>(r: Result<impl std::fmt::Debug, SdkError<E, Raw>>) -> u16 {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(SdkError::ServiceError(e)) => e.raw().status().as_u16(),
        Err(e) => panic!("expected a service error, got {e:?}"),
    }
}

async fn put(c: &aws_sdk_s3::Client, key: &str, body: &str) -> Result<(), String> {
    c.put_object()
        .bucket("stackhub")
        .key(key)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn sdk_reaches_its_own_prefix_only() {
    let dir = Scratch::new("own");
    let s3 = start(&dir).await;
    let x = s3.exchange(3600);
    let alice = x.provision("alice").await.unwrap();
    let bob = x.provision("bob").await.unwrap();
    assert_eq!(alice.space.prefix, "users/alice/");
    let a = grant_client(&alice);
    let b = grant_client(&bob);

    put(&a, "users/alice/data/x.txt", "alice's").await.unwrap();
    put(&b, "users/bob/y.txt", "bob's").await.unwrap();
    let got = a
        .get_object()
        .bucket("stackhub")
        .key("users/alice/data/x.txt")
        .send()
        .await
        .unwrap();
    let bytes = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&bytes[..], b"alice's");
    let listed = a
        .list_objects_v2()
        .bucket("stackhub")
        .prefix("users/alice/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["users/alice/data/x.txt"]);
    // Listings name the storage class, as AWS's do (s3contents, the Lab's file browser, needs it).
    assert_eq!(
        listed.contents()[0].storage_class().map(|c| c.as_str()),
        Some("STANDARD")
    );
    // An empty delimiter (s3fs's recursive listings) is no delimiter, as on AWS.
    let recursive = a
        .list_objects_v2()
        .bucket("stackhub")
        .prefix("users/alice/")
        .delimiter("")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = recursive
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .collect();
    assert_eq!(keys, ["users/alice/data/x.txt"]);
    assert!(recursive.common_prefixes().is_empty());
    // A "directory" (a prefix of other keys, as a Zarr store is) is no object: 404, as on AWS.
    for key in ["users/alice/data", "users/alice/data/"] {
        let head = a.head_object().bucket("stackhub").key(key).send().await;
        assert_eq!(status(head), 404, "HEAD {key}");
        let get = a.get_object().bucket("stackhub").key(key).send().await;
        assert_eq!(status(get), 404, "GET {key}");
    }

    // Another user's prefix: read, write, list, copy, path tricks.
    let get_bob = a
        .get_object()
        .bucket("stackhub")
        .key("users/bob/y.txt")
        .send()
        .await;
    assert_eq!(status(get_bob), 403);
    assert!(put(&a, "users/bob/z.txt", "no").await.is_err());
    assert!(put(&a, "users/alice/../bob/z.txt", "no").await.is_err());
    let list_all = a.list_objects_v2().bucket("stackhub").send().await;
    assert_eq!(status(list_all), 403);
    let list_users = a
        .list_objects_v2()
        .bucket("stackhub")
        .prefix("users/")
        .send()
        .await;
    assert_eq!(status(list_users), 403);
    let copy = a
        .copy_object()
        .bucket("stackhub")
        .key("users/alice/stolen.txt")
        .copy_source("stackhub/users/bob/y.txt")
        .send()
        .await;
    assert_eq!(status(copy), 403);
    assert_eq!(status(a.list_buckets().send().await), 403);
    assert_eq!(status(a.create_bucket().bucket("mine").send().await), 403);
    let del = a
        .delete_objects()
        .bucket("stackhub")
        .delete(
            aws_sdk_s3::types::Delete::builder()
                .objects(
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key("users/bob/y.txt")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await;
    assert_eq!(status(del), 403);

    // Bob's object is untouched; the root key sees everything.
    let root = client(
        s3.endpoint(),
        s3.root_access_key_id(),
        s3.root_secret().expose(),
        None,
    );
    let all = root
        .list_objects_v2()
        .bucket("stackhub")
        .send()
        .await
        .unwrap();
    let mut keys: Vec<_> = all.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["users/alice/data/x.txt", "users/bob/y.txt"]);
    s3.shutdown().await;
}

#[tokio::test]
async fn unknown_expired_tokenless_and_unsigned_requests_are_refused() {
    let dir = Scratch::new("deny");
    let s3 = start(&dir).await;
    let short = s3.exchange(1).provision("alice").await.unwrap();
    let good = s3.exchange(3600).provision("alice").await.unwrap();
    put(&grant_client(&good), "users/alice/a.txt", "a")
        .await
        .unwrap();

    // Unknown key.
    let unknown = client(s3.endpoint(), "AKIDUNKNOWN", "whatever", None);
    assert_eq!(status(unknown.list_buckets().send().await), 403);
    // Right key id, wrong secret: the signature does not match.
    let forged = client(
        s3.endpoint(),
        &good.credentials.access_key_id,
        "not-the-secret",
        good.credentials.session_token.as_ref().map(|t| t.expose()),
    );
    assert!(put(&forged, "users/alice/b.txt", "b").await.is_err());
    // Temporary key without its session token.
    let tokenless = client(
        s3.endpoint(),
        &good.credentials.access_key_id,
        good.credentials.secret_access_key.expose(),
        None,
    );
    let e = put(&tokenless, "users/alice/b.txt", "b").await.unwrap_err();
    assert!(e.contains("InvalidToken"), "{e}");
    // Someone else's token with this key.
    let other = s3.exchange(3600).provision("alice").await.unwrap();
    let swapped = client(
        s3.endpoint(),
        &good.credentials.access_key_id,
        good.credentials.secret_access_key.expose(),
        other.credentials.session_token.as_ref().map(|t| t.expose()),
    );
    assert!(put(&swapped, "users/alice/b.txt", "b").await.is_err());
    // Expired.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = put(&grant_client(&short), "users/alice/c.txt", "c")
        .await
        .unwrap_err();
    assert!(e.contains("ExpiredToken"), "{e}");
    // Unsigned.
    let mut tcp = tokio::net::TcpStream::connect(s3.addr()).await.unwrap();
    tcp.write_all(
        format!(
            "GET /stackhub/users/alice/a.txt HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            s3.addr()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(!std::fs::exists(dir.0.join("objects/stackhub/users/alice/b.txt")).unwrap());
    s3.shutdown().await;
}

const BOTO3_SCRIPT: &str = r#"
import json, os, urllib.request, urllib.error, boto3, botocore
ep = os.environ["EP"]
sts = boto3.client("sts", endpoint_url=ep, region_name="dedl-lumi",
                   aws_access_key_id=os.environ["ROOT_ID"], aws_secret_access_key=os.environ["ROOT_SECRET"])
c = sts.assume_role(RoleArn="arn:aws:iam::000000000000:role/stackhub-user",
                    RoleSessionName="carol", DurationSeconds=900)["Credentials"]
out = {}
# A kernel's view: the standard variables only, boto3 with no arguments.
os.environ.update({"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
                   "AWS_SESSION_TOKEN": c["SessionToken"], "AWS_ENDPOINT_URL": ep,
                   "AWS_DEFAULT_REGION": "dedl-lumi"})
s3 = boto3.client("s3")
s3.put_object(Bucket="stackhub", Key="users/carol/hello.txt", Body=b"hi from boto3")
out["read"] = s3.get_object(Bucket="stackhub", Key="users/carol/hello.txt")["Body"].read().decode()
out["listed"] = [o["Key"] for o in s3.list_objects_v2(Bucket="stackhub", Prefix="users/carol/")["Contents"]]
s3.upload_file(os.environ["BIG"], "stackhub", "users/carol/big.bin",
               Config=boto3.s3.transfer.TransferConfig(multipart_threshold=5*1024*1024, multipart_chunksize=5*1024*1024))
out["big"] = s3.head_object(Bucket="stackhub", Key="users/carol/big.bin")["ContentLength"]
try:
    s3.put_object(Bucket="stackhub", Key="users/dave/x.txt", Body=b"no")
    out["other"] = "allowed"
except botocore.exceptions.ClientError as e:
    out["other"] = e.response["Error"]["Code"]
url = s3.generate_presigned_url("get_object", Params={"Bucket": "stackhub", "Key": "users/carol/hello.txt"}, ExpiresIn=60)
out["presigned"] = urllib.request.urlopen(url).read().decode()
try:
    urllib.request.urlopen(url.replace("users/carol/hello.txt", "users/carol/other.txt"))
    out["tampered"] = "allowed"
except urllib.error.HTTPError as e:
    out["tampered"] = e.code
temp_sts = boto3.client("sts")
try:
    temp_sts.assume_role(RoleArn="x" * 20, RoleSessionName="dave")
    out["escalate"] = "allowed"
except botocore.exceptions.ClientError as e:
    out["escalate"] = e.response["Error"]["Code"]
print(json.dumps(out))
"#;

#[tokio::test]
async fn boto3_assumes_a_role_and_stays_in_its_prefix() {
    let dir = Scratch::new("boto3");
    let s3 = start(&dir).await;
    let big = dir.0.join("big.bin");
    std::fs::write(&big, vec![7u8; 11 * 1024 * 1024]).unwrap();
    let endpoint = s3.endpoint().to_owned();
    let id = s3.root_access_key_id().to_owned();
    let secret = s3.root_secret().expose().to_owned();
    let big_path = big.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        python(
            BOTO3_SCRIPT,
            &[
                ("EP", &endpoint),
                ("ROOT_ID", &id),
                ("ROOT_SECRET", &secret),
                ("BIG", &big_path),
            ],
        )
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["read"], "hi from boto3");
    assert_eq!(v["listed"], serde_json::json!(["users/carol/hello.txt"]));
    assert_eq!(v["big"], 11 * 1024 * 1024);
    assert_eq!(v["other"], "AccessDenied");
    assert_eq!(v["presigned"], "hi from boto3");
    assert_eq!(v["tampered"], 403);
    assert_eq!(v["escalate"], "AccessDenied");
    s3.shutdown().await;
}

/// A hub restart keeps the store's endpoint (port 0 picks a port the first time only) and the
/// credentials it issued, so servers and kernels that outlive the hub keep their S3.
#[tokio::test]
async fn a_restarted_store_keeps_its_endpoint_and_issued_credentials() {
    let dir = Scratch::new("restart");
    let s3 = start(&dir).await;
    let endpoint = s3.endpoint().to_owned();
    let alice = s3.exchange(3600).provision("alice").await.unwrap();
    put(&grant_client(&alice), "users/alice/kept.txt", "still here")
        .await
        .unwrap();
    s3.shutdown().await;
    let s3 = start(&dir).await;
    assert_eq!(s3.endpoint(), endpoint);
    let got = grant_client(&alice)
        .get_object()
        .bucket("stackhub")
        .key("users/alice/kept.txt")
        .send()
        .await
        .unwrap();
    let bytes = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&bytes[..], b"still here");
    s3.shutdown().await;
}
