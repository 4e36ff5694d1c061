//! [`StsExchange`] against a real S3-compatible server with IAM enforced (moto server with
//! `INITIAL_NO_AUTH_ACTION_COUNT`): per-user roles confine the issued credentials to the user's
//! prefix. [`StaticExchange`] health checks against the same server and a dead port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use s3_exchange::{
    Exchange, ExchangeError, Grant, Secret, StaticConfig, StaticExchange, StsConfig, StsExchange,
};

use common::{python, venv_bin};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto with IAM enforced after the 3 set-up calls that create the hub's admin user and key.
async fn moto() -> (Moto, String, String) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(venv_bin("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let moto = Moto { child, endpoint };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ep = moto.endpoint.clone();
    let out = tokio::task::spawn_blocking(move || {
        python(
            r#"
import json, os, boto3
iam = boto3.client("iam", endpoint_url=os.environ["EP"], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="stackhub-hub")
iam.put_user_policy(UserName="stackhub-hub", PolicyName="admin", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="stackhub-hub")["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
"#,
            &[("EP", &ep)],
        )
    })
    .await
    .unwrap();
    let mut parts = out.split_whitespace();
    let id = parts.next().unwrap().to_owned();
    let secret = parts.next().unwrap().to_owned();
    (moto, id, secret)
}

fn client(g: &Grant) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(g.space.region.clone()))
        .endpoint_url(&g.space.endpoint)
        .credentials_provider(Credentials::new(
            &g.credentials.access_key_id,
            g.credentials.secret_access_key.expose(),
            g.credentials
                .session_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
            None,
            "test",
        ))
        .force_path_style(true)
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<(), String> {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn sts_per_user_roles_confine_credentials_to_the_prefix() {
    let (moto, id, secret) = moto().await;
    let x = StsExchange::new(StsConfig {
        endpoint: moto.endpoint.clone(),
        sts_endpoint: None,
        region: "us-east-1".into(),
        bucket: "lumi-exchange".into(),
        access_key_id: id.clone(),
        secret_access_key: Secret::new(secret.clone()),
        role_arn: None,
        role_prefix: "stackhub-user-".into(),
        duration_secs: 900,
    })
    .unwrap();
    x.check().await.unwrap();
    let alice = x.provision("alice").await.unwrap();
    let bob = x.provision("bob").await.unwrap();
    // Provisioning again (role exists already) works too.
    let alice2 = x.provision("alice").await.unwrap();
    assert_ne!(alice.credentials.access_key_id, id);
    assert!(alice.credentials.session_token.is_some());
    assert!(alice.credentials.expires_at.is_some());
    assert_eq!(alice.space.prefix, "users/alice/");

    let a = client(&alice);
    put(&a, "lumi-exchange", "users/alice/result.nc")
        .await
        .unwrap();
    put(&client(&alice2), "lumi-exchange", "users/alice/again.nc")
        .await
        .unwrap();
    put(&client(&bob), "lumi-exchange", "users/bob/own.nc")
        .await
        .unwrap();
    let got = a
        .get_object()
        .bucket("lumi-exchange")
        .key("users/alice/result.nc")
        .send()
        .await
        .unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"data");
    let e = put(&a, "lumi-exchange", "users/bob/x.nc")
        .await
        .unwrap_err();
    assert!(e.contains("AccessDenied"), "{e}");
    let read_other = a
        .get_object()
        .bucket("lumi-exchange")
        .key("users/bob/own.nc")
        .send()
        .await;
    assert!(read_other.is_err());

    // Nothing secret in Debug output or error messages.
    let dbg = format!("{alice:?}");
    assert!(!dbg.contains(alice.credentials.secret_access_key.expose()));
    assert!(!dbg.contains(&secret));
    let bad = StsExchange::new(StsConfig {
        endpoint: moto.endpoint.clone(),
        sts_endpoint: None,
        region: "us-east-1".into(),
        bucket: "lumi-exchange".into(),
        access_key_id: id.clone(),
        secret_access_key: Secret::new("wrong-secret-value"),
        role_arn: None,
        role_prefix: "stackhub-user-".into(),
        duration_secs: 900,
    })
    .unwrap();
    let e = bad.provision("carol").await.unwrap_err().to_string();
    assert!(!e.contains("wrong-secret-value"), "{e}");
    assert!(e.contains(&moto.endpoint), "{e}");
}

#[tokio::test]
async fn static_exchange_reports_reachability() {
    let (moto, id, secret) = moto().await;
    let x = StaticExchange::new(StaticConfig {
        endpoint: moto.endpoint.clone(),
        region: "us-east-1".into(),
        bucket: "missing-bucket".into(),
        access_key_id: id.clone(),
        secret_access_key: Secret::new(secret.clone()),
    });
    let e = x.check().await.unwrap_err();
    assert!(e.to_string().contains("missing-bucket"), "{e}");
    let g = x.provision("alice").await.unwrap();
    assert_eq!(g.kernel_env()["STACKHUB_S3_PREFIX"], "users/alice/");
    assert_eq!(g.kernel_env()["AWS_ACCESS_KEY_ID"], id);

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let x = StaticExchange::new(StaticConfig {
        endpoint: format!("http://127.0.0.1:{dead}"),
        region: "us-east-1".into(),
        bucket: "b".into(),
        access_key_id: id,
        secret_access_key: Secret::new(secret.clone()),
    });
    match x.check().await {
        Err(ExchangeError::Unreachable { endpoint, reason }) => {
            assert!(endpoint.contains(&dead.to_string()));
            assert!(!reason.contains(&secret), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}
